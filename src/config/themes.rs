//! Settings of comment themes: `--themes on|off` (`NPS_THEMES`) and, in
//! the settings file, `themes = "on"|"off"` or the `[[themes]]` taxonomy.

use clap::Args;
use serde::de::value::SeqAccessDeserializer;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::{ConfigError, invalid, on_off};
use crate::themes::{Taxonomy, ThemeSpec, default_specs};

/// Flags of `run` for themes (flattened into its flags).
#[derive(Debug, Clone, Default, Args)]
pub struct ThemesArgs {
    /// Comment themes: `on` (each comment matched against the taxonomy:
    /// `[[themes]]` in --config, else the one shipped) or `off`
    /// [default: on].
    #[arg(long, env = "NPS_THEMES")]
    pub themes: Option<String>,
}

/// Whether comments are matched, and against which themes.
#[derive(Debug, Clone, PartialEq)]
pub struct ThemesSettings {
    pub enabled: bool,
    /// The file's `[[themes]]`; empty until validated means the shipped
    /// taxonomy, which validation puts here.
    pub taxonomy: Vec<ThemeSpec>,
}

impl Default for ThemesSettings {
    fn default() -> Self {
        ThemesSettings {
            enabled: true,
            taxonomy: Vec::new(),
        }
    }
}

impl<'de> Deserialize<'de> for ThemesSettings {
    /// `themes = "on"` / `"off"`, or `[[themes]]` entries (on). A visitor
    /// rather than an untagged enum, so that an entry's error (an unknown
    /// key, a missing name) reaches the user as it is.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Switch;
        impl<'de> Visitor<'de> for Switch {
            type Value = ThemesSettings;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"on\", \"off\" or [[themes]] entries")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "on" => Ok(ThemesSettings::default()),
                    "off" => Ok(ThemesSettings {
                        enabled: false,
                        taxonomy: Vec::new(),
                    }),
                    other => Err(E::custom(format!(
                        "themes = `{other}`: \"on\", \"off\" or [[themes]] entries"
                    ))),
                }
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let taxonomy = Vec::deserialize(SeqAccessDeserializer::new(seq))?;
                Ok(ThemesSettings {
                    enabled: true,
                    taxonomy,
                })
            }
        }
        d.deserialize_any(Switch)
    }
}

impl ThemesSettings {
    /// Overrides what the flag (or its variable) names.
    pub(super) fn apply(&mut self, args: &ThemesArgs) -> Result<(), ConfigError> {
        if let Some(v) = &args.themes {
            self.enabled = on_off("--themes", v)?;
        }
        Ok(())
    }

    /// Checks the taxonomy (or puts the shipped one in its place).
    pub(super) fn validate(&mut self) -> Result<(), ConfigError> {
        if self.taxonomy.is_empty() {
            self.taxonomy = default_specs();
        }
        Taxonomy::new(&self.taxonomy).map_err(|e| invalid("[[themes]]", e.to_string()))?;
        Ok(())
    }

    /// The taxonomy to match comments against (the one `validate` checked
    /// or put in place); `None` when themes are off.
    pub fn taxonomy(&self) -> Option<Taxonomy> {
        self.enabled
            .then(|| Taxonomy::new(&self.taxonomy).ok())
            .flatten()
    }
}
