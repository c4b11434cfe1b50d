//! The reference tables of docs/, parsed: the tests hold the binary and
//! the deploy files to them.

use std::collections::{BTreeMap, BTreeSet};

/// A file of the repository, by its path from the root.
pub fn repo_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// The rows of the first Markdown table after the heading `heading`:
/// cells trimmed, header and rule rows left out.
pub fn table_after(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in the text"));
    let rows: Vec<Vec<String>> = text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().trim_matches('|').trim().to_string())
                .collect()
        })
        .collect();
    rows.into_iter().skip(2).collect()
}

/// The code spans of a cell, in order.
pub fn code_spans(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_string())
        .collect()
}

/// docs/metrics.md's table: name → (type, label names).
pub fn reference_metrics() -> BTreeMap<String, (String, BTreeSet<String>)> {
    table_after(&repo_file("docs/metrics.md"), "| metric | type | labels |")
        .into_iter()
        .map(|cells| {
            let name = code_spans(&cells[0])[0].clone();
            let labels = code_spans(&cells[2]).into_iter().collect();
            (name, (cells[1].clone(), labels))
        })
        .collect()
}
