//! Capped exponential pauses between retries: reconnects here, and the service's retries too
//! (its `backoff` module re-exports this one).

use std::time::Duration;

/// Pauses that double from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            next: first.min(max),
            max,
        }
    }

    /// The pause before the next try; each call doubles the one after, up to the cap.
    pub fn pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Starts again from the first pause (after a connection that worked).
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_and_start_again_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_millis(700));
        let pauses: Vec<u128> = (0..4).map(|_| backoff.pause().as_millis()).collect();
        assert_eq!(pauses, vec![200, 400, 700, 700]);
        backoff.reset();
        assert_eq!(backoff.pause(), Duration::from_millis(200));
    }
}
