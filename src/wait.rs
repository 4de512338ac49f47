//! Waiting on AWS: one call per poll, on a schedule that keeps the detection lag a small
//! fraction of the wait. For the first minute of a wait a poll every 1.2 s, so a quick change is
//! noticed within about a second; after that the interval is 2 % of the time waited so far (the
//! two meet at 60 s), up to 15 s. A change is therefore noticed at most max(1.2 s, 2 % of the
//! wait) after it, plus one round trip, and a wait of an hour costs about 400 calls instead of
//! 3,000 (the AWS CLI polls every 15 s, the SDK's waiters back off to two minutes). An
//! interrupt ends the wait at once.
//!
//! No jitter: EC2 throttles per account, per region and per API action with token buckets
//! (the EC2 API reference, "Request throttling"), which count calls, not their phase; copies to
//! several regions poll different buckets, and within one region a build has one wait it is
//! blocked on (plus the build instance's release while copies are pending). Jitter would only
//! add lag.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::duration::format_duration;
use crate::interrupt::Cancel;

/// The interval of a wait's first minute: a change is noticed 0.6 s after it on average and
/// 1.2 s at worst.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1200);

/// The longest interval, reached after 12.5 minutes of waiting.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(15);

/// After the first minute the interval is the time waited so far divided by this: a change is
/// noticed at most 1/50 = 2 % of the wait after it (1 % on average).
pub const LAG_DIVISOR: u32 = 50;

/// The schedule: the interval before the next poll of a wait that has lasted `elapsed`, whose
/// first-minute interval is `first` ([`POLL_INTERVAL`] for a wait something is blocked on, more
/// for one nothing waits on). `elapsed / 50`, at least `first`, at most [`MAX_POLL_INTERVAL`]
/// (or `first` if that is longer).
pub fn poll_interval(first: Duration, elapsed: Duration) -> Duration {
    (elapsed / LAG_DIVISOR).min(MAX_POLL_INTERVAL).max(first)
}

/// Paces a retry loop on the schedule, from when it was made.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    first: Duration,
    started: Instant,
}

impl Pacer {
    pub fn new(first: Duration) -> Pacer {
        Pacer {
            first,
            started: Instant::now(),
        }
    }

    /// The interval the schedule gives now.
    pub fn interval(&self) -> Duration {
        poll_interval(self.first, self.started.elapsed())
    }

    /// Sleeps for [`Pacer::interval`].
    pub async fn pause(&self) {
        tokio::time::sleep(self.interval()).await
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{what} did not happen within {}", format_duration(*.limit))]
pub struct TimedOut {
    pub what: String,
    pub limit: Duration,
}

/// Calls `check` on the schedule ([`poll_interval`] with `first`, counted from this call; the
/// first check one interval in) until it returns `Some`, an error, the deadline (`started` +
/// `limit`) passes, or an interrupt arrives.
pub async fn poll_until<T, F, Fut>(
    cancel: &Cancel,
    what: &str,
    started: Instant,
    limit: Duration,
    first: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = started.checked_add(limit).ok_or_else(|| {
        anyhow::anyhow!(
            "{what}: the time limit {} is too large",
            format_duration(limit)
        )
    })?;
    let pacer = Pacer::new(first);
    loop {
        // Every wait follows a call that started the change: checking at once would only
        // cost a call, so the first check comes one interval in.
        let next = (Instant::now() + pacer.interval()).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            i = cancel.cancelled() => return Err(i.into()),
        }
        if let Some(done) = check().await? {
            tracing::trace!("{what}: done after {}", format_duration(started.elapsed()));
            return Ok(done);
        }
        tracing::trace!(
            "{what}: not yet after {}",
            format_duration(started.elapsed())
        );
        if Instant::now() >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                limit,
            }
            .into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const S: fn(f64) -> Duration = Duration::from_secs_f64;

    /// When the polls of a wait that began at 0 come, up to `until`.
    fn poll_times(first: Duration, until: Duration) -> Vec<Duration> {
        let mut t = Duration::ZERO;
        let mut out = Vec::new();
        loop {
            t += poll_interval(first, t);
            if t > until {
                return out;
            }
            out.push(t);
        }
    }

    #[test]
    fn the_first_minute_is_as_fast_as_before() {
        for s in [0.0, 1.0, 30.0, 59.9, 60.0] {
            assert_eq!(poll_interval(POLL_INTERVAL, S(s)), POLL_INTERVAL, "{s} s");
        }
        // 50 polls in the first minute, as with a fixed 1.2 s.
        assert_eq!(poll_times(POLL_INTERVAL, S(60.0)).len(), 50);
    }

    #[test]
    fn then_the_interval_is_two_percent_of_the_wait_up_to_15_s() {
        assert_eq!(poll_interval(POLL_INTERVAL, S(61.0)), S(1.22));
        assert_eq!(poll_interval(POLL_INTERVAL, S(120.0)), S(2.4));
        assert_eq!(poll_interval(POLL_INTERVAL, S(600.0)), S(12.0));
        assert_eq!(poll_interval(POLL_INTERVAL, S(750.0)), MAX_POLL_INTERVAL);
        assert_eq!(
            poll_interval(POLL_INTERVAL, S(4.0 * 3600.0)),
            MAX_POLL_INTERVAL
        );
        // A wait nothing depends on starts slower and grows the same way.
        assert_eq!(poll_interval(S(3.0), S(100.0)), S(3.0));
        assert_eq!(poll_interval(S(3.0), S(200.0)), S(4.0));
        assert_eq!(poll_interval(S(3.0), S(3600.0)), MAX_POLL_INTERVAL);
        // A first interval above the cap is kept.
        assert_eq!(poll_interval(S(20.0), S(3600.0)), S(20.0));
    }

    #[test]
    fn a_change_is_noticed_within_two_percent_of_the_wait() {
        let polls = poll_times(POLL_INTERVAL, S(7200.0));
        // Changes every 0.7 s of a two-hour wait: the next poll comes at most max(1.2 s, 2 %)
        // after each.
        let mut at = S(0.05);
        while at < S(7000.0) {
            let seen = polls.iter().find(|&&p| p >= at).copied().unwrap();
            let bound = POLL_INTERVAL.max(at / LAG_DIVISOR);
            assert!(seen - at <= bound, "change at {at:?} seen at {seen:?}");
            at += S(0.7);
        }
        // The interval never shrinks.
        assert!(polls.windows(3).all(|w| w[2] - w[1] >= w[1] - w[0]));
    }

    #[test]
    fn an_hour_costs_hundreds_of_calls_not_thousands() {
        let hour = poll_times(POLL_INTERVAL, S(3600.0)).len();
        // 50 in the first minute, 127 while the interval grows to 15 s (at 750 s), then 190.
        assert_eq!(hour, 367);
        assert_eq!(poll_times(POLL_INTERVAL, S(750.0)).len(), 177);
        // A fixed 1.2 s: 3,000.
        assert_eq!((3600.0 / POLL_INTERVAL.as_secs_f64()).round(), 3000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn poll_until_follows_the_schedule() {
        let start = Instant::now();
        let mut calls = Vec::new();
        let done_at = S(300.0);
        poll_until(
            &Cancel::new(),
            "x",
            start,
            Duration::from_secs(3600),
            POLL_INTERVAL,
            || {
                let now = start.elapsed();
                calls.push(now);
                async move { Ok((now >= done_at).then_some(())) }
            },
        )
        .await
        .unwrap();
        // Each gap is the schedule's interval at the poll before (tokio's timer rounds up to
        // the millisecond).
        let mut before = Duration::ZERO;
        for &at in &calls {
            let gap = at - before;
            let want = poll_interval(POLL_INTERVAL, before);
            assert!(gap >= want && gap - want < S(0.001), "poll at {at:?}");
            before = at;
        }
        // 50 in the first minute, 82 more until the first at or after 300 s (304.4 s).
        assert_eq!(calls.len(), 132);
        let last = calls[calls.len() - 1];
        assert!(last >= done_at && last - done_at <= done_at / LAG_DIVISOR);
    }

    #[tokio::test(start_paused = true)]
    async fn polls_until_done() {
        let calls = AtomicU32::new(0);
        let got = poll_until(
            &Cancel::new(),
            "x",
            Instant::now(),
            Duration::from_secs(60),
            POLL_INTERVAL,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                Ok((n == 3).then_some(n))
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // One call per interval, none at the start: the 4th call came 4 intervals in.
    }

    #[tokio::test(start_paused = true)]
    async fn times_out() {
        let started = Instant::now();
        let err = poll_until(
            &Cancel::new(),
            "the instance to stop",
            started,
            Duration::from_secs(5),
            POLL_INTERVAL,
            || async { Ok(None::<()>) },
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the instance to stop did not happen within 5s"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_beyond_any_instant_is_an_error_not_a_panic() {
        let err = poll_until(
            &Cancel::new(),
            "x",
            Instant::now(),
            Duration::MAX,
            POLL_INTERVAL,
            || async { Ok(None::<()>) },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().starts_with("x: the time limit"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn interrupt_ends_the_wait() {
        let cancel = Cancel::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            c2.cancel(crate::interrupt::SIGTERM);
        });
        let err = poll_until(
            &cancel,
            "x",
            Instant::now(),
            Duration::from_secs(60),
            POLL_INTERVAL,
            || async { Ok(None::<()>) },
        )
        .await
        .unwrap_err();
        let i = err.downcast_ref::<crate::interrupt::Interrupted>().unwrap();
        assert_eq!(i.exit_code(), 143);
    }
}
