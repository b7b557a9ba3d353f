//! How fast watches reconnect after the API server failed them.
//!
//! kube-runtime's default (client-go's) doubles from 0.8 s to 30 s with
//! jitter, so after a 20 s API server outage a controller could sit idle for
//! up to a minute before it saw new work. capstan's watches are few and
//! cheap, so they retry sooner: doubling from 0.5 s, capped at 5 s, back to
//! the start whenever the watch yields again (the watcher yields before each
//! new list, so a server that keeps failing is retried about every 0.5 s,
//! as with kube's default).

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// First retry delay.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest delay between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(5);

/// Doubling delays from [`FIRST_RETRY`] up to [`MAX_RETRY`], forever.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: FIRST_RETRY }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next;
        self.next = (self.next * 2).min(MAX_RETRY);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let first: Vec<u64> = b.by_ref().take(6).map(|d| d.as_millis() as u64).collect();
        assert_eq!(first, [500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(FIRST_RETRY));
    }
}
