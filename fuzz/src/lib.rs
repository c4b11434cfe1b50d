//! Fuzz targets of nps-stream (`cargo fuzz run <target>`, or
//! `bash fuzz/run.sh SECONDS` for all). The targets in `fuzz_targets/` are
//! one line each; what they check is in `checks.rs`.

mod checks;
pub mod input;
pub use checks::*;
