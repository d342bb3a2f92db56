//! The retry policy for talking to a peer (the registrar; the verifier in
//! push mode), from the `exponential_backoff_*` keys: bounded or unbounded
//! attempts, exponential pauses from a first pause up to a cap, and jitter
//! so that a fleet of agents restarted together does not retry in lockstep.

use std::time::Duration;

/// How often and how patiently to retry a failed call to a peer.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `None` retries forever.
    pub max_retries: Option<u32>,
    /// Pause before the first retry.
    pub initial_delay: Duration,
    /// No pause is longer than this, `Retry-After` included.
    pub max_delay: Duration,
    /// Fraction (0.0–1.0) by which a pause may be shortened at random.
    pub jitter: f64,
}

impl RetryPolicy {
    /// Whether retry number `retry` (1 for the first retry) is allowed.
    pub fn allows(&self, retry: u32) -> bool {
        self.max_retries.is_none_or(|max| retry <= max)
    }

    /// The pause before retry number `retry` (1-based), before jitter:
    /// `initial_delay · 2^(retry-1)`, capped at `max_delay`.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        self.initial_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// The pause before retry number `retry` with jitter applied. `unit` is a
    /// random number in [0, 1). Jitter only ever shortens a pause, so the cap
    /// is a hard bound on how long a recovered registrar waits for us.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let shrink = (self.jitter * unit.clamp(0.0, 1.0)).clamp(0.0, 1.0);
        self.base_delay(retry).mul_f64(1.0 - shrink)
    }

    /// The pause a server asked for with `Retry-After`, capped at
    /// `max_delay` and at least `initial_delay` (a `Retry-After: 0` must
    /// not turn the retries into a busy loop).
    pub fn server_requested(&self, seconds: u64) -> Duration {
        Duration::from_secs(seconds)
            .min(self.max_delay)
            .max(self.initial_delay.min(self.max_delay))
    }
}

/// A random number in [0, 1) for jitter, from OpenSSL's CSPRNG.
pub fn unit_random() -> f64 {
    let mut bytes = [0u8; 4];
    match openssl::rand::rand_bytes(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        // Without randomness the pause is simply not shortened.
        Err(_) => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: Option<u32>) -> RetryPolicy {
        RetryPolicy {
            max_retries: max,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(4),
            jitter: 0.5,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = policy(None);
        let got: Vec<u128> = (1..=6).map(|r| p.base_delay(r).as_millis()).collect();
        assert_eq!(got, vec![500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(p.base_delay(200), Duration::from_secs(4));
    }

    #[test]
    fn jitter_only_shortens() {
        let p = policy(None);
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(2));
        assert_eq!(p.delay(3, 0.999_999).as_millis(), 1000);
        assert_eq!(p.delay(3, 7.0), Duration::from_secs(1));
    }

    #[test]
    fn bounded_and_unbounded_attempts() {
        assert!(policy(None).allows(u32::MAX));
        assert!(policy(Some(2)).allows(2));
        assert!(!policy(Some(2)).allows(3));
        assert!(!policy(Some(0)).allows(1));
    }

    #[test]
    fn retry_after_is_capped_and_never_zero() {
        assert_eq!(policy(None).server_requested(3600), Duration::from_secs(4));
        assert_eq!(policy(None).server_requested(1), Duration::from_secs(1));
        assert_eq!(
            policy(None).server_requested(0),
            policy(None).initial_delay,
            "Retry-After: 0 waits the policy's first pause"
        );
    }

    #[test]
    fn unit_random_is_in_range() {
        for _ in 0..100 {
            let u = unit_random();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
