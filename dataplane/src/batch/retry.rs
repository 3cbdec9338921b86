//! How long to wait before trying again.

use std::time::Duration;

/// Retry policy: full-jitter exponential backoff (as in the AWS
/// Architecture Blog's "Exponential Backoff and Jitter") with an attempt
/// limit for records the sink fails one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// `random(0, min(cap, base * 2^(attempts-1)))`; `jitter` is a uniform
    /// sample from `[0, 1)`.
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
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(P.backoff(1, 0.5), Duration::from_millis(50));
        assert_eq!(P.backoff(2, 0.5), Duration::from_millis(100));
        assert_eq!(P.backoff(10, 0.5), Duration::from_millis(500));
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
