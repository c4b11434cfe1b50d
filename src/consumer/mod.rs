//! What both consumer shells (the NPS pipeline and the case tracker) share:
//! how a partition's start is decided on assignment (`restore`), and the
//! lock on an application's state that a panic must not leave half
//! changed.

pub(crate) mod backpressure;
pub mod context;
pub(crate) mod driver;
pub(crate) mod holds;
pub(crate) mod ledger;
pub(crate) mod memory;
pub mod outputs;
pub(crate) mod produce;
pub(crate) mod ready;
pub(crate) mod realign;
pub mod restore;

use std::sync::{Mutex, MutexGuard};

/// An application's state shared between its loop and its rebalance
/// callback, locked. A poisoned lock means a panic left the state half
/// changed: going on could drop a record silently (a later commit would
/// pass its offset) or snapshot state no commit matches. So the process
/// exits at once (status 70, EX_SOFTWARE) without committing, and whoever
/// takes its partitions resumes from the last commit and snapshot, which
/// lose nothing. `what` names the state in the log.
pub(crate) fn lock<'a, T>(core: &'a Mutex<T>, what: &str) -> MutexGuard<'a, T> {
    match core.lock() {
        Ok(c) => c,
        Err(_) => {
            tracing::error!(
                state = what,
                "state poisoned by a panic: exiting without committing; the next owner resumes from the last commit"
            );
            std::process::exit(70);
        }
    }
}

#[cfg(test)]
mod tests;
