//! When to try a failed record again, and when to give up.

use std::time::Duration;

use crate::sinks::RecordOutcome;

/// Per-record retry policy: full-jitter exponential backoff (as in the AWS
/// Architecture Blog's "Exponential Backoff and Jitter") with an attempt limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

/// What to do with a record after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Delivered,
    /// Send it again after this delay.
    RetryAfter(Duration),
    /// Stop: the reason, for the failure counter and log.
    GiveUp(String),
}

impl RetryPolicy {
    /// Decides after attempt number `attempts` (1 for the first send) ended
    /// in `outcome`. `jitter` is a uniform sample from `[0, 1)`.
    pub fn decide(&self, attempts: u32, outcome: &RecordOutcome, jitter: f64) -> Decision {
        match outcome {
            RecordOutcome::Delivered => Decision::Delivered,
            RecordOutcome::Rejected(why) => Decision::GiveUp(why.clone()),
            RecordOutcome::Retryable(code) if attempts >= self.max_attempts => {
                Decision::GiveUp(format!("{code} after {attempts} attempts"))
            }
            RecordOutcome::Retryable(_) => Decision::RetryAfter(self.backoff(attempts, jitter)),
        }
    }

    /// `random(0, min(cap, base * 2^(attempts-1)))`.
    pub fn backoff(&self, attempts: u32, jitter: f64) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let ceiling = self.base.saturating_mul(1u32 << exp).min(self.cap);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(1000),
    };

    #[test]
    fn only_retryable_records_are_retried_until_the_limit() {
        let throttled = RecordOutcome::Retryable("ProvisionedThroughputExceededException".into());
        assert_eq!(
            P.decide(1, &RecordOutcome::Delivered, 0.5),
            Decision::Delivered
        );
        assert_eq!(
            P.decide(1, &throttled, 0.5),
            Decision::RetryAfter(Duration::from_millis(50))
        );
        assert_eq!(
            P.decide(2, &throttled, 0.5),
            Decision::RetryAfter(Duration::from_millis(100))
        );
        assert!(matches!(P.decide(3, &throttled, 0.5), Decision::GiveUp(_)));
        assert!(matches!(
            P.decide(
                1,
                &RecordOutcome::Rejected("ValidationException".into()),
                0.5
            ),
            Decision::GiveUp(_)
        ));
    }

    proptest! {
        #[test]
        fn backoff_stays_under_the_cap(attempts in 0u32..100, jitter in 0.0f64..1.0) {
            let d = P.backoff(attempts, jitter);
            prop_assert!(d <= P.cap);
            let ceiling = P.base.saturating_mul(1u32 << attempts.saturating_sub(1).min(30)).min(P.cap);
            prop_assert!(d <= ceiling);
        }
    }
}
