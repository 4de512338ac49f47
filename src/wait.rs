//! Waiting on AWS: one call per poll, a poll every 1.2 s, so a state change is noticed within
//! about a second (the AWS CLI polls every 15 s, the SDK's waiters back off to two minutes).
//! An interrupt ends the wait at once.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::duration::format_duration;
use crate::interrupt::Cancel;

/// 1.2 s: a change is noticed 0.6 s after it on average and 1.2 s at worst, and a wait costs
/// 50 calls a minute (the benchmark's target is at most 60 per minute of waiting per build).
pub const POLL_INTERVAL: Duration = Duration::from_millis(1200);

#[derive(Debug, thiserror::Error)]
#[error("{what} did not happen within {}", format_duration(*.limit))]
pub struct TimedOut {
    pub what: String,
    pub limit: Duration,
}

/// Calls `check` every `interval` (the first time one interval in) until it returns `Some`, an
/// error, the deadline passes, or an interrupt arrives.
pub async fn poll_until<T, F, Fut>(
    cancel: &Cancel,
    what: &str,
    started: Instant,
    limit: Duration,
    interval: Duration,
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
    loop {
        // Every wait follows a call that started the change: checking at once would only
        // cost a call, so the first check comes one interval in.
        let next = (Instant::now() + interval).min(deadline);
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
