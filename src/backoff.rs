//! The pause between attempts to reopen a device that went away (the camera, the alert link's
//! serial port, the GNSS receiver): short at first, so an unplug-and-replug costs little,
//! doubling up to a ceiling, so a device that stays away costs no CPU and floods no log.

use std::time::Duration;

/// Pauses that double after each failed attempt, from `first` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first`; never waits longer than `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// The pause before the next attempt, without counting a failure.
    pub fn current(&self) -> Duration {
        self.next
    }

    /// An attempt failed: the pause before the next one; the one after it is twice as long
    /// (at most `max`).
    pub fn failed(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// The device is back: the next outage starts with the short pause again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Whether no attempt has failed since the last reset (the first failure is the one worth a
    /// warning).
    pub fn is_fresh(&self) -> bool {
        self.next == self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling_and_start_again_after_a_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(250), ms(8000));
        assert!(b.is_fresh());
        let pauses: Vec<u128> = (0..8).map(|_| b.failed().as_millis()).collect();
        assert_eq!(pauses, [250, 500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert!(!b.is_fresh());
        assert_eq!(b.current(), ms(8000));
        b.reset();
        assert!(b.is_fresh());
        assert_eq!(b.current(), ms(250));
    }
}
