//! The reconnect policy devices follow: exponential backoff with full jitter.
//!
//! After the `n`-th consecutive failure the device waits a uniformly random
//! time in `[floor, min(cap, base · 2^n)]` (full jitter, with a floor so it
//! never spins). A session that stayed established for `stable` resets the
//! count, so a device that flaps right after connecting keeps backing off.
//! Randomness comes from the caller, like everything else in `proto`.

use core::time::Duration;

/// Backoff parameters and the failure count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling after the first failure. Default 1 s.
    pub base: Duration,
    /// Largest ceiling. Default 60 s.
    pub cap: Duration,
    /// Smallest wait. Default 100 ms.
    pub floor: Duration,
    /// How long a session must last to reset the count. Default 30 s.
    pub stable: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_secs(1), Duration::from_secs(60))
    }
}

impl Backoff {
    /// A policy with `base` and `cap`; floor 100 ms (or `base` if smaller), stable 30 s.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        let floor = if base.as_millis() < 100 {
            base
        } else {
            Duration::from_millis(100)
        };
        Self {
            base,
            cap,
            floor,
            stable: Duration::from_secs(30),
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub const fn failures(&self) -> u32 {
        self.failures
    }

    /// The current ceiling: `min(cap, base · 2^(failures - 1))`.
    pub fn ceiling(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(31);
        let ms = (self.base.as_millis() as u64).saturating_mul(1 << shift);
        Duration::from_millis(ms).min(self.cap).max(self.floor)
    }

    /// Records a failed attempt (or a session that ended before `stable`)
    /// and returns how long to wait, given 32 random bits.
    pub fn next_delay(&mut self, random: u32) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ceiling = self.ceiling().as_millis() as u64;
        let floor = self.floor.as_millis() as u64;
        let span = ceiling - floor + 1;
        Duration::from_millis(floor + u64::from(random) % span)
    }

    /// A session ended after lasting `uptime`: resets the count if it was
    /// stable, and returns the wait before the next attempt.
    pub fn session_ended(&mut self, uptime: Duration, random: u32) -> Duration {
        if uptime >= self.stable {
            self.failures = 0;
        }
        self.next_delay(random)
    }

    /// Forgets all failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_and_stays_within_bounds() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut ceilings = [0u64; 10];
        for c in &mut ceilings {
            let d = b.next_delay(u32::MAX);
            *c = b.ceiling().as_millis() as u64;
            assert!(d <= b.ceiling() && d >= b.floor);
        }
        assert_eq!(ceilings[..7], [1000, 2000, 4000, 8000, 16000, 32000, 60000]);
        assert_eq!(ceilings[9], 60000);
        assert_eq!(b.next_delay(0), Duration::from_millis(100));
    }

    #[test]
    fn full_jitter_spreads() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            b.next_delay(0);
        }
        let lo = b.clone().next_delay(0);
        let hi = b.clone().next_delay(u32::MAX / 2);
        assert!(lo < hi);
    }

    #[test]
    fn stable_session_resets_flapping_does_not() {
        let mut b = Backoff::default();
        for _ in 0..4 {
            b.next_delay(7);
        }
        b.session_ended(Duration::from_secs(2), 7);
        assert_eq!(b.failures(), 5);
        b.session_ended(Duration::from_secs(31), 7);
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(
            Duration::from_secs(3600),
            Duration::from_secs(u64::MAX / 1000),
        );
        for _ in 0..200 {
            b.next_delay(u32::MAX);
        }
        assert!(b.ceiling() >= Duration::from_secs(3600));
    }
}
