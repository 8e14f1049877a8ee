//! A bounded poll, for conditions that nothing announces (a file appearing
//! on disk while a separate process works). Where the server publishes an
//! event for what a test waits for, the test waits for the event instead.

use std::time::{Duration, Instant};

/// How long a poll waits before it gives up.
const POLL_LIMIT: Duration = Duration::from_secs(10);

/// How often a poll looks.
const POLL_EVERY: Duration = Duration::from_millis(10);

/// Whether `cond` holds now or becomes true within ten seconds (for tests
/// without a runtime: it blocks the thread between looks).
pub fn eventually_blocking(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + POLL_LIMIT;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
}

/// Waits until `cond` holds, looking every 10 ms, for at most `within`;
/// panics if it never does.
pub async fn until(within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "the condition did not hold within {within:?}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}
