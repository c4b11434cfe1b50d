//! The shells' shared rules.

use std::sync::Mutex;

/// Set in the child process of `a_poisoned_lock_exits_with_status_70`.
const CHILD: &str = "NPS_POISONED_LOCK_CHILD";

/// A lock poisoned by a panic ends the process with status 70 at the
/// next `lock`: run in a child process (this test binary again, this
/// test alone), whose exit status is the verdict.
#[test]
fn a_poisoned_lock_exits_with_status_70() {
    if std::env::var_os(CHILD).is_some() {
        let core = Mutex::new(0u32);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _held = core.lock();
                panic!("a panic while the lock is held");
            })
            .join()
        });
        drop(super::lock(&core, "test"));
        unreachable!("lock returned on a poisoned mutex");
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args([
            "--exact",
            "consumer::tests::a_poisoned_lock_exits_with_status_70",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(70));
}
