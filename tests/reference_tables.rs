//! The reference tables of docs/ against the binary: the flags of `run`
//! (docs/configuration.md) with their environment variables and defaults
//! against `run --help` and `check-config`, and the metric table
//! (docs/metrics.md) against a live scrape of /metrics (names, types and
//! labels). Neither side may list what the other lacks. Also: every link of
//! README and docs/ resolves, README stays a front door, and the comments
//! of src/ tell the mechanism rather than its history.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::reference::*;
use common::*;

/// A row of docs/configuration.md's flag table: (flag, env, default).
#[derive(Debug, PartialEq, Eq, Clone)]
struct FlagRow {
    flag: String,
    env: String,
    default: Option<String>,
}

fn documented_flags() -> Vec<FlagRow> {
    table_after(&repo_file("docs/configuration.md"), "## Flags of `run`")
        .into_iter()
        .map(|cells| {
            let flag = code_spans(&cells[0])[0]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            let env = code_spans(&cells[1]).first().cloned().unwrap_or_default();
            let default = code_spans(&cells[2]).first().cloned();
            FlagRow { flag, env, default }
        })
        .collect()
}

/// `run --help`, option by option: (flag, env, default).
fn help_flags() -> Vec<FlagRow> {
    let help = run_ok(Command::new(BIN).args(["run", "--help"]));
    let mut out: Vec<FlagRow> = Vec::new();
    let mut text = String::new();
    let flush = |out: &mut Vec<FlagRow>, text: &str| {
        let Some(last) = out.last_mut() else { return };
        let field = |key: &str| {
            let i = text.find(key)? + key.len();
            let rest = &text[i..];
            Some(rest[..rest.find(']')?].to_string())
        };
        last.env = field("[env: ")
            .map(|e| e.trim_end_matches('=').to_string())
            .unwrap_or_default();
        // "67108864, 64 MiB": the value, then a note.
        last.default = field("[default: ").map(|d| {
            d.split(", ")
                .next()
                .unwrap_or_default()
                .trim_matches('`')
                .to_string()
        });
    };
    for line in help
        .lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
    {
        let t = line.trim_start();
        let indent = line.len() - t.len();
        if indent <= 6 && t.starts_with('-') {
            flush(&mut out, &text);
            text.clear();
            let flag = t
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .or_else(|| t.split_whitespace().next())
                .unwrap()
                .to_string();
            out.push(FlagRow {
                flag,
                env: String::new(),
                default: None,
            });
        } else {
            text.push_str(t);
            text.push(' ');
        }
    }
    flush(&mut out, &text);
    out.retain(|r| r.flag != "--help");
    out
}

#[test]
fn flag_table_is_run_help() {
    let readme: BTreeMap<String, FlagRow> = documented_flags()
        .into_iter()
        .map(|r| (r.flag.clone(), r))
        .collect();
    let help: BTreeMap<String, FlagRow> = help_flags()
        .into_iter()
        .map(|r| (r.flag.clone(), r))
        .collect();
    let (a, b): (BTreeSet<&String>, BTreeSet<&String>) =
        (readme.keys().collect(), help.keys().collect());
    assert_eq!(a, b, "flags in docs/configuration.md against `run --help`");
    assert_eq!(help.len(), 38, "the flags of run: {:?}", help.keys());
    for (flag, row) in &readme {
        let h = &help[flag];
        assert_eq!(row.env, h.env, "{flag}: environment variable");
        // The table writes "(required)" or nothing where there is no default.
        assert_eq!(row.default, h.default, "{flag}: default");
    }
}

/// check-config's printout of the settings, with `args` after `run`'s
/// flags and `env` as the only NPS_* variables.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("NPS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A valid value other than the default, per flag of the table.
fn other_value(flag: &str, dir: &std::path::Path) -> String {
    let v = match flag {
        "--config" => {
            let path = dir.join("other.toml");
            std::fs::write(&path, "max_pending = 7\n").unwrap();
            return path.to_str().unwrap().to_string();
        }
        "--brokers" => "other-broker:9092",
        "--group-id" => "other-group",
        "--input-topic" => "other-input",
        "--alerts-topic" => "other-alerts",
        "--dlq-topic" => "other-dlq",
        "--metrics-addr" => "127.0.0.1:9999",
        "--windows" => "1h,2d",
        "-X" => "socket.timeout.ms=12345",
        "--alerts-format" => "json",
        "--auto-offset-reset" => "latest",
        "--log-format" => "json",
        "--max-keys" => "77",
        "--buckets-per-window" => "12",
        "--dedup-horizon" => "2h",
        "--dedup-max-ids" => "1234",
        "--max-future-skew" => "1m",
        "--alert-threshold" => "4",
        "--shutdown-timeout" => "7s",
        "--stall-timeout" => "7s",
        "--state-topic" => "other-state",
        "--snapshot-interval" => "3s",
        "--snapshot-max-bytes" => "2048",
        "--max-pending" => "99",
        "--cases" => "off",
        "--case-events-topic" => "other-case-events",
        "--escalations-topic" => "other-escalations",
        "--contact-sla" => "critical=1h",
        "--repeat-horizon" => "10d",
        "--orphan-grace" => "1m",
        "--closed-retention" => "5d",
        "--max-cases" => "999",
        "--max-customers" => "888",
        "--snapshot-format" => "1",
        "--restart-on-change" => concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        "--promoters" => "off",
        "--promoter-topic" => "other-promoters",
        "--themes" => "off",
        other => panic!("no other value for {other}: add one here"),
    };
    v.to_string()
}

/// Every flag of the table, through check-config: its documented default
/// given explicitly changes nothing; another value changes the settings,
/// and the same value through its environment variable gives the same
/// settings as through the flag.
#[test]
fn every_flag_and_environment_variable_sets_what_the_table_says() {
    let dir = std::env::temp_dir().join(format!("nps-readme-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let base_args = ["--brokers", "x:1"];
    let base = check_config(&base_args, &[]).unwrap();
    for row in documented_flags() {
        let flag = row.flag.as_str();
        // The broker list is given by this test: its own row gives it alone.
        let mut args: Vec<&str> = if flag == "--brokers" {
            vec![]
        } else {
            base_args.to_vec()
        };
        if let Some(default) = &row.default {
            let default = default.replace("<group-id>", "nps-stream");
            let mut with = args.clone();
            with.extend([flag, default.as_str()]);
            assert_eq!(
                check_config(&with, &[]),
                Ok(base.clone()),
                "{flag} {default}: the documented default is not the default"
            );
        }
        let value = other_value(flag, &dir);
        let mut env_args = args.clone();
        if flag == "--brokers" {
            env_args.clear();
        }
        args.extend([flag, value.as_str()]);
        let by_flag = check_config(&args, &[]).unwrap_or_else(|e| panic!("{flag} {value}: {e}"));
        assert_ne!(by_flag, base, "{flag} {value} changed nothing");
        let by_env = check_config(&env_args, &[(row.env.as_str(), value.as_str())])
            .unwrap_or_else(|e| panic!("{}={value}: {e}", row.env));
        assert_eq!(by_env, by_flag, "{} against {flag}", row.env);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/configuration.md: `--dedup-max-ids` is capped at 16,777,216 per partition.
#[test]
fn dedup_max_ids_takes_up_to_its_cap() {
    let ok = check_config(&["--brokers", "x:1", "--dedup-max-ids", "16777216"], &[]).unwrap();
    assert!(ok.contains("dedup_max_ids: 16777216"), "{ok}");
    let refused = check_config(&["--brokers", "x:1", "--dedup-max-ids", "16777217"], &[]);
    let e = refused.expect_err("one over the cap is refused");
    assert!(
        e.contains("exit status: 2") && e.contains("--dedup-max-ids"),
        "{e}"
    );
}

/// A scrape's metric families: name → (type, label names seen on its
/// samples; `le` and `quantile` left out). Families with no sample yet
/// have no label names.
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            let (name, kind) = (w.next().unwrap(), w.next().unwrap());
            out.insert(name.to_string(), (kind.to_string(), BTreeSet::new()));
        }
    }
    for (name, labels, _) in Metrics::parse(text).samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| out.get(*f).is_some_and(|(k, _)| k == "histogram"))
            })
            .unwrap_or(&name)
            .to_string();
        let entry = out
            .get_mut(&family)
            .unwrap_or_else(|| panic!("{name}: no TYPE"));
        // `le` and `quantile` are a histogram's and a summary's own labels
        // (a gauge may have a `quantile` of its own).
        let own = match entry.0.as_str() {
            "histogram" => "le",
            "summary" => "quantile",
            _ => "",
        };
        entry.1.extend(labels.into_keys().filter(|k| k != own));
    }
    out
}

/// The metric table against a running demo (cases and promoter events on,
/// malformed answers among the generated ones): every family it exports is
/// in the table with its type and labels, and every name in the table is
/// one the binary holds.
#[test]
fn metric_table_is_what_the_binary_exports() {
    let _heavy = heavy();
    let table = reference_metrics();
    assert!(
        table.len() >= 50,
        "{} metrics in docs/metrics.md",
        table.len()
    );
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut demo = Service::start(
        &["demo", "--metrics-addr", &addr, "--table-every", "3600"],
        port,
        "readme-metrics",
    );
    demo.wait_for(
        "cases, promoters and refusals",
        Duration::from_secs(120),
        |m| {
            m.count("nps_cases_open") > 0
                && m.count("nps_promoter_events_total") > 0
                && m.count("nps_events_rejected_total") > 0
                && m.count("nps_case_first_contact_seconds_count") > 0
        },
    );
    let (_, text) = http_get(&demo.metrics_addr, "/metrics").unwrap();
    let scraped = families(&text);
    let mut wrong = Vec::new();
    for (name, (kind, labels)) in &scraped {
        match table.get(name) {
            None => wrong.push(format!("{name} is exported, not in docs/metrics.md")),
            Some((k, l)) => {
                if k != kind {
                    wrong.push(format!(
                        "{name}: docs/metrics.md says {k}, exported as {kind}"
                    ));
                }
                if !labels.is_empty() && l != labels {
                    wrong.push(format!(
                        "{name}: documented labels {l:?}, exported {labels:?}"
                    ));
                }
            }
        }
    }
    let binary = std::fs::read(BIN).unwrap();
    for name in table.keys() {
        if !binary.windows(name.len()).any(|w| w == name.as_bytes()) {
            wrong.push(format!("{name} is in docs/metrics.md, not in the binary"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(scraped.len() >= 35, "{} families exported", scraped.len());
    assert!(demo.terminate(Duration::from_secs(30)).success());
}

/// docs/testing.md's table after `heading`: first cell's code span → the
/// test named in the second.
fn testing_table(heading: &str) -> BTreeMap<String, String> {
    table_after(&repo_file("docs/testing.md"), heading)
        .into_iter()
        .map(|cells| {
            let key = code_spans(&cells[0])[0].clone();
            let test = code_spans(&cells[1]).first().cloned().unwrap_or_default();
            (key, test)
        })
        .collect()
}

/// Whether `file::name` is a function of tests/<file>.rs.
fn test_exists(path: &str) -> bool {
    let Some((file, name)) = path.split_once("::") else {
        return false;
    };
    let source = std::fs::read_to_string(format!("{}/tests/{file}.rs", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_default();
    source.contains(&format!("\nfn {name}()"))
}

/// docs/testing.md maps every flag of docs/configuration.md and every
/// metric of docs/metrics.md to an existing test, and nothing else.
#[test]
fn docs_testing_maps_every_flag_and_metric_to_an_existing_test() {
    let flags: BTreeSet<String> = documented_flags().into_iter().map(|r| r.flag).collect();
    let metrics: BTreeSet<String> = reference_metrics().into_keys().collect();
    for (heading, want) in [
        ("## Every flag of `run` on a running service", &flags),
        ("## Every metric with its expected value", &metrics),
    ] {
        let table = testing_table(heading);
        let have: BTreeSet<String> = table.keys().cloned().collect();
        assert_eq!(&have, want, "{heading}: rows against the reference tables");
        let missing: Vec<String> = table
            .iter()
            .filter(|(_, test)| !test_exists(test))
            .map(|(k, test)| format!("{k}: {test:?}"))
            .collect();
        assert!(missing.is_empty(), "{heading}: no such test: {missing:?}");
    }
}

// ------------------------------------------------------- the docs themselves

/// The Markdown files a reader follows: README and everything in docs/.
fn markdown_files() -> Vec<String> {
    let mut files = vec!["README.md".to_string()];
    let dir = format!("{}/docs", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            files.push(format!("docs/{name}"));
        }
    }
    files.sort();
    files
}

/// The lines of a Markdown text outside its fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped but `-`
/// and `_`, spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .into_iter()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The targets of a text's inline links `[text](target)`, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(j) = after.find(')') else { break };
            targets.push(after[..j].to_string());
            rest = &after[j..];
        }
    }
    targets
}

/// Every relative link of README and docs/ names a file of the repository
/// and, with `#anchor`, a heading of that file.
#[test]
fn every_link_of_readme_and_docs_resolves() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = repo_file(&file);
        let dir = root.join(&file).parent().unwrap().to_path_buf();
        for target in link_targets(&text) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                root.join(&file)
            } else {
                dir.join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{file}: {target}: no such file"));
                continue;
            }
            if let Some(fragment) = fragment {
                let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                if !anchors(&target_text).contains(fragment) {
                    broken.push(format!("{file}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked >= 60, "only {checked} links checked");
}

/// README is a front door: at most 250 lines, the two commands of its
/// quick start, and a link to every page of docs/.
#[test]
fn readme_is_a_front_door_linking_every_page_of_docs() {
    let readme = repo_file("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 250, "README has {lines} lines");
    for command in ["cargo run --release -- demo", "bash tests/run-all.sh"] {
        assert!(
            readme.contains(&format!("```\n{command}\n```")),
            "{command}"
        );
    }
    let linked: BTreeSet<String> = link_targets(&readme)
        .into_iter()
        .map(|t| t.split('#').next().unwrap_or_default().to_string())
        .collect();
    for file in markdown_files()
        .into_iter()
        .filter(|f| f.starts_with("docs/"))
    {
        assert!(linked.contains(&file), "README does not link {file}");
    }
}

/// The comments of src/ explain the mechanism; dates, soak runs, numbered
/// rounds of work and issue numbers belong in docs/ and commit messages.
#[test]
fn src_comments_tell_the_mechanism_not_its_history() {
    let diary = regex::Regex::new(
        r"(?x)
        \b(19|20)\d\d-\d\d\b                      # a date
        | (?i:\bsoak) | (?i:\brehears)            # soak runs
        | (?i:\b(round|session|iteration)\s+\d+)  # numbered rounds of work
        | (?i:\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|last|previous|this)\s+session\b)
        | (?i:\bissue\s+\#?\d+)
        | \bBefore,\s",
    )
    .unwrap();
    // A timestamp in a comment documents a value, not a day of work.
    let timestamp = regex::Regex::new(r"\d{4}-\d\d-\d\dT[\d:.]+Z?").unwrap();
    let mut found = Vec::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = rust_files(&src, Tests::In);
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some(i) = line.find("//") else { continue };
            if diary.is_match(&timestamp.replace_all(&line[i..], "")) {
                found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(files.len() > 50, "{} source files", files.len());
    assert!(
        found.is_empty(),
        "history in comments:\n{}",
        found.join("\n")
    );
}

/// Whether a walk of src/ takes the test modules (`tests.rs`, files under
/// a `tests/` folder).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tests {
    In,
    Out,
}

/// The `.rs` files under `dir`, with or without the test modules.
fn rust_files(dir: &std::path::Path, tests: Tests) -> Vec<std::path::PathBuf> {
    let is_test = |path: &std::path::Path| {
        path.file_name()
            .is_some_and(|n| n == "tests" || n == "tests.rs")
    };
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if tests == Tests::Out && is_test(&path) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

/// No two top-level modules of src/ reach each other through `crate::`
/// paths: each layer uses only those below it.
#[test]
fn src_modules_import_no_circle() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let path = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap().path();
        let name = entry.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let files = if entry.is_dir() {
            rust_files(&entry, Tests::Out)
        } else {
            vec![entry.clone()]
        };
        let deps = uses.entry(name.clone()).or_default();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            // A test module at the end of a file is not a dependency.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            deps.extend(path.captures_iter(code).map(|c| c[1].to_string()));
        }
        deps.remove(&name);
        deps.remove("pb");
    }
    assert!(uses.len() > 15, "{} modules", uses.len());
    // A path from each module back to itself, breadth first.
    let mut circles = Vec::new();
    for start in uses.keys() {
        let mut paths = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(p) = paths.pop() {
            for next in uses.get(p.last().unwrap()).into_iter().flatten() {
                if next == start {
                    circles.push(format!("{} -> {start}", p.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = p.clone();
                    longer.push(next.clone());
                    paths.insert(0, longer);
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// src/lib.rs's layout and docs/design.md's module table name the same
/// top-level modules, and every module lib.rs declares.
#[test]
fn lib_layout_and_design_map_name_every_module() {
    let lib = repo_file("src/lib.rs");
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| {
            let l = l.trim_start_matches("pub ");
            let name = l.strip_prefix("mod ")?;
            Some(name.trim_end_matches([';', '{', ' ']).to_string())
        })
        .collect();
    let in_layout: BTreeSet<String> = lib
        .lines()
        .skip_while(|l| *l != "//! # Layout")
        .filter_map(|l| l.strip_prefix("//!"))
        .flat_map(|l| {
            code_spans(l)
                .into_iter()
                .map(|s| s.trim_matches(['[', ']']).to_string())
                .filter(|s| declared.contains(s))
                .collect::<Vec<_>>()
        })
        .collect();
    let design = repo_file("docs/design.md");
    let mapped: BTreeSet<String> = table_after(&design, "| module | owns | must never |")
        .iter()
        .map(|cells| code_spans(&cells[0])[0].clone())
        .filter(|m| m != "main.rs")
        .map(|m| m.split('/').next().unwrap().to_string())
        .collect();
    assert!(declared.len() > 15, "{declared:?}");
    assert_eq!(in_layout, declared, "lib.rs's layout against its modules");
    assert_eq!(mapped, declared, "docs/design.md's map against lib.rs");
}

/// No module of src/ takes another's names wholesale: every import names
/// what it uses (a test module's `use super::*` is fine).
#[test]
fn src_has_no_glob_imports_between_modules() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let glob = regex::Regex::new(r"(?m)^\s*(pub(\([a-z]+\))? )?use [\w:]+::\*;").unwrap();
    let mut found = Vec::new();
    let files = rust_files(&src, Tests::Out);
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for m in glob.find_iter(code) {
            found.push(format!("{}: {}", f.display(), m.as_str().trim()));
        }
    }
    assert!(files.len() > 50, "{} files", files.len());
    assert!(found.is_empty(), "glob imports:\n{}", found.join("\n"));
}
