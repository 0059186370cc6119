//! Crash points for the project's own chaos tests: with `SWEEP_FAILPOINT=<name>` (or
//! `<name>@<n>`, the n-th time it is reached) the process aborts at that point, as a `kill -9`
//! there would stop it: no unwinding, no cleanup, nothing flushed. Only debug builds (the
//! tests' binary) have them; in a release build `hit` is empty.

/// The points, in the order a batch reaches them.
pub const POINTS: [&str; 6] =
    ["after-intents", "in-row-tx", "after-rows", "after-local", "after-objects", "before-settle"];

/// Abort here if the environment names this point.
#[inline]
pub fn hit(name: &str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static HITS: AtomicUsize = AtomicUsize::new(0);
        let Ok(want) = std::env::var("SWEEP_FAILPOINT") else { return };
        let (point, nth) = match want.split_once('@') {
            Some((p, n)) => (p.to_string(), n.parse().unwrap_or(1)),
            None => (want, 1),
        };
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Slow each batch down by `SWEEP_BATCH_DELAY_MS` milliseconds (debug builds only), so that
/// tests can cancel, stop or race a run mid-way without making thousands of items.
pub async fn batch_delay() {
    delay_from("SWEEP_BATCH_DELAY_MS").await
}

/// Slow the planning down by `SWEEP_PAGE_DELAY_MS` milliseconds a page of candidates read
/// (debug builds only): a test's planning of a few thousand rows then lasts as long as a large
/// one's.
pub async fn page_delay() {
    delay_from("SWEEP_PAGE_DELAY_MS").await
}

async fn delay_from(var: &str) {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    #[cfg(not(debug_assertions))]
    let _ = var;
}
