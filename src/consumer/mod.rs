//! The consumer driver both applications (the NPS pipeline, the case
//! tracker) run on, and what they share: the loop (`driver`), the consumer
//! and its rebalances (`context`, `holds`), an assigned partition's start
//! (`assign`, `restore`), positions and seeks (`positions`, `realign`,
//! `seek`), deliveries and commits (`produce`, `ledger`, `backpressure`),
//! snapshots (`snapshots`), outputs (`outputs`), the wait for the brokers
//! (`ready`), and the lock on an application's state that a panic must not
//! leave half changed.

pub(crate) mod assign;
pub(crate) mod backpressure;
pub mod context;
pub(crate) mod driver;
pub(crate) mod handover;
pub(crate) mod holds;
pub(crate) mod ledger;
pub(crate) mod memory;
pub mod outputs;
pub(crate) mod positions;
pub(crate) mod produce;
pub(crate) mod ready;
pub(crate) mod realign;
pub mod restore;
pub(crate) mod seek;
pub(crate) mod snapshots;

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
