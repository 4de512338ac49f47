//! The EC2 call budget for polling: every poll of a wait (DescribeInstances, GetPasswordData,
//! GetConsoleOutput, DescribeImages while waiting) takes a token from its region's bucket
//! first, so that several builds in one process together poll no more than one build does.
//!
//! EC2 throttles each account per Region with token buckets (the EC2 Developer Guide, "Request
//! throttling for the Amazon EC2 API": a bucket per API action that holds a number of tokens,
//! each request takes one, and it refills at a set rate; its example, DescribeHosts, holds 100
//! and refills 20 a second). Those buckets are the account's, shared with everything else that
//! calls EC2 in that Region (worker-manager's provisioning among them), so tc-ami keeps its own
//! share small: at most [`POLLS_PER_SECOND`] polls a second per Region, in bursts of at most
//! [`BURST`]. One build polls at most 50 times a minute in any Region (one wait at a time in the
//! build region, one copy per other Region; README "Performance"), so a build alone is never
//! delayed; N builds at once share the Region's 60 a minute. The calls that change something
//! (RunInstances, CreateImage, CopyImage, TerminateInstances, …) do not go through it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The budget's rate per Region: 60 polls a minute, what one build's waiting cost today.
pub const POLLS_PER_SECOND: f64 = 1.0;

/// How many polls may go at once after a quiet spell (a wait's first poll reads the console and
/// the state together; several waits may start at the same moment).
pub const BURST: f64 = 10.0;

/// A token bucket on a clock given by the caller (pure): it holds at most `capacity` tokens
/// and gains `per_second` a second. Taking a token from an empty bucket reserves the next one
/// (the count goes below zero), so that callers are served in the order they asked.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(capacity: f64, per_second: f64, now: Duration) -> TokenBucket {
        TokenBucket {
            capacity,
            per_second,
            tokens: capacity,
            at: now,
        }
    }

    /// Takes a token at `now` (a clock that never goes back): how long the caller must wait
    /// before its call, zero when a token was there.
    pub fn take(&mut self, now: Duration) -> Duration {
        let gained = now.saturating_sub(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + gained).min(self.capacity);
        self.at = self.at.max(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

/// One bucket per Region, and how long the polls waited for it in all.
pub struct Budget {
    capacity: f64,
    per_second: f64,
    started: Instant,
    buckets: Mutex<HashMap<String, TokenBucket>>,
    waited_micros: AtomicU64,
}

impl Budget {
    pub fn new(capacity: f64, per_second: f64) -> Budget {
        Budget {
            capacity,
            per_second,
            started: Instant::now(),
            buckets: Mutex::default(),
            waited_micros: AtomicU64::new(0),
        }
    }

    /// Waits until a poll in `region` is within the budget. Dropping the future (an interrupt)
    /// gives nothing back: the token stays spent, which only makes the budget stricter.
    pub async fn poll(&self, region: &str) {
        let now = self.started.elapsed();
        let wait = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            buckets
                .entry(region.to_string())
                .or_insert_with(|| TokenBucket::new(self.capacity, self.per_second, now))
                .take(now)
        };
        if !wait.is_zero() {
            tracing::trace!(
                "{region}: a poll waits {:.2}s for the EC2 call budget",
                wait.as_secs_f64()
            );
            self.waited_micros
                .fetch_add(wait.as_micros() as u64, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// How long the polls have waited for the budget so far, all Regions together.
    pub fn waited(&self) -> Duration {
        Duration::from_micros(self.waited_micros.load(Ordering::Relaxed))
    }
}

static PROCESS: LazyLock<Budget> = LazyLock::new(|| Budget::new(BURST, POLLS_PER_SECOND));

/// The process's budget, which every poll of EC2 goes through.
pub fn process() -> &'static Budget {
    &PROCESS
}

/// Waits for the process's budget before a poll in `region`.
pub async fn poll(region: &str) {
    process().poll(region).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(f64) -> Duration = Duration::from_secs_f64;

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_one_a_second() {
        let mut b = TokenBucket::new(10.0, 1.0, S(0.0));
        for _ in 0..10 {
            assert_eq!(b.take(S(0.0)), Duration::ZERO);
        }
        // The 11th and 12th at the same moment wait for the next tokens, in order.
        assert_eq!(b.take(S(0.0)), S(1.0));
        assert_eq!(b.take(S(0.0)), S(2.0));
        // Two seconds later both have been served: the next waits a second.
        assert_eq!(b.take(S(2.0)), S(1.0));
    }

    #[test]
    fn one_build_alone_never_waits() {
        // The guest's shutdown: a look every 1.8 s, the console too on every other one (50
        // calls a minute), for an hour; then a copy polled every 1.2 s in the same Region.
        let mut b = TokenBucket::new(BURST, POLLS_PER_SECOND, S(0.0));
        let mut t = 0.0;
        for poll in 0..2000 {
            t += 1.8;
            assert_eq!(b.take(S(t)), Duration::ZERO, "at {t}");
            if poll % 2 == 0 {
                assert_eq!(b.take(S(t)), Duration::ZERO, "console at {t}");
            }
        }
        for _ in 0..3000 {
            t += 1.2;
            assert_eq!(b.take(S(t)), Duration::ZERO, "at {t}");
        }
    }

    #[test]
    fn n_builds_together_stay_within_the_rate() {
        // Four builds each polling every 1.2 s from the same moment: 200 asked a minute.
        let mut b = TokenBucket::new(BURST, POLLS_PER_SECOND, S(0.0));
        let mut next = [0.0f64; 4];
        let mut served = Vec::new();
        while served.len() < 1000 {
            let (i, at) = next
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            let go = at + b.take(S(at)).as_secs_f64();
            served.push(go);
            next[i] = go + 1.2;
        }
        // In any window of 60 s at most 60 + BURST polls went out.
        for (k, &start) in served.iter().enumerate() {
            let within = served[k..]
                .iter()
                .take_while(|&&t| t < start + 60.0)
                .count();
            assert!(within as f64 <= 60.0 + BURST, "{within} from {start}");
        }
        // And the budget was used: the last of 1000 went out about 990 s in.
        let last = served[served.len() - 1];
        assert!((989.0..=992.0).contains(&last), "{last}");
    }

    #[test]
    fn a_quiet_spell_refills_up_to_the_capacity_only() {
        let mut b = TokenBucket::new(3.0, 1.0, S(0.0));
        for _ in 0..3 {
            b.take(S(0.0));
        }
        // An hour later: three at once, not 3,600.
        for _ in 0..3 {
            assert_eq!(b.take(S(3600.0)), Duration::ZERO);
        }
        assert_eq!(b.take(S(3600.0)), S(1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn polls_wait_for_their_region_only() {
        let budget = Budget::new(2.0, 1.0);
        let start = Instant::now();
        for _ in 0..2 {
            budget.poll("us-west-2").await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        budget.poll("us-east-1").await;
        assert_eq!(start.elapsed(), Duration::ZERO, "another Region's bucket");
        budget.poll("us-west-2").await;
        assert!(start.elapsed() >= S(1.0) && start.elapsed() < S(1.01));
        assert!(budget.waited() >= S(0.99), "{:?}", budget.waited());
    }
}
