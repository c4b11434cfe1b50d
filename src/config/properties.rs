//! librdkafka properties given by the user (`-X`, `NPS_KAFKA_PROPERTIES`):
//! parsed, the ones nps-stream sets itself refused, secrets told apart so
//! that they are never printed.

use std::collections::BTreeMap;

use super::{ConfigError, invalid};

/// `KEY=VALUE` librdkafka properties (`-X`, `NPS_KAFKA_PROPERTIES`), for
/// `run` and `send` alike. Each value given is a list separated by `;`,
/// in which `\;` is a `;` and `\\` a backslash (any other backslash is
/// kept as it is). A malformed entry is named by its place, never by its
/// text: it may hold a secret.
pub fn parse_properties(list: &[String]) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    let entries = list.iter().flat_map(|l| split_escaped(l));
    for (n, kv) in entries.enumerate() {
        if kv.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = kv.split_once('=') else {
            return Err(invalid(
                "-X",
                format!(
                    "property {} of the list is not KEY=VALUE (a `;` inside a value is written `\\;`)",
                    n + 1
                ),
            ));
        };
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// `text` split at each `;` not escaped as `\;`, with `\;` and `\\`
/// unescaped.
fn split_escaped(text: &str) -> Vec<String> {
    let (mut parts, mut part) = (Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&next @ (';' | '\\'))) => {
                part.push(next);
                chars.next();
            }
            (';', _) => parts.push(std::mem::take(&mut part)),
            _ => part.push(c),
        }
    }
    parts.push(part);
    parts
}

/// librdkafka properties nps-stream sets itself: refused from the user.
pub(super) const RESERVED_PROPERTIES: [&str; 4] = [
    "enable.auto.offset.store",
    "enable.auto.commit",
    "group.id",
    "bootstrap.servers",
];

/// Whether a librdkafka property holds a secret (passwords, keys, tokens):
/// such values are never printed.
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", ".pem", "key"]
        .iter()
        .any(|w| k.contains(w))
        && !k.ends_with(".location")
}
