//! deploy/prometheus: the rules parse (`promtool check rules`) and their
//! unit tests pass (`promtool test rules`): roll-ups from summed counts,
//! alerts on low NPS with enough answers, instance down, growing lag.

mod common;

use std::process::Command;

fn promtool(args: &[&str]) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    common::run_ok(Command::new("promtool").args(args).current_dir(dir));
}

#[test]
fn rules_parse() {
    if common::have_tool("promtool") {
        promtool(&["check", "rules", "nps-rules.yml"]);
    }
}

#[test]
fn rules_unit_tests_pass() {
    if common::have_tool("promtool") {
        promtool(&["test", "rules", "nps-rules.test.yml"]);
    }
}
