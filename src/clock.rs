//! The time every replica agrees on: the database server's clock.
//!
//! A deadline written by one replica is judged by whichever replica sweeps next, so replicas
//! must not each trust their own clock. Every time the shell writes or judges goes through a
//! [`Clock`]: the local clock plus an offset to the database server's clock, measured with a
//! `hello` round trip (the server's `localTime`) at every sweep. Replicas then disagree by about
//! the measurement error (half a round trip, and the server's millisecond resolution), however
//! far apart their own clocks are.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::Timestamp;

/// Where a clock reads the local time.
pub type LocalTime = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The local clock corrected to the database's. Cheap to clone; clones share the offset.
#[derive(Clone)]
pub struct Clock {
    local: LocalTime,
    /// Database time minus local time, in microseconds.
    offset_us: Arc<AtomicI64>,
    /// Whether a reading was taken yet.
    observed: Arc<AtomicBool>,
}

/// A reading whose round trip took longer than this is not trusted (the server may have read
/// its clock anywhere within it), unless there is no other yet.
pub const MAX_ROUND_TRIP: TimeDelta = TimeDelta::milliseconds(500);

impl Default for Clock {
    fn default() -> Self {
        Self::with_local(Arc::new(Utc::now))
    }
}

impl Clock {
    /// A clock reading local time from `local` (the system clock by default), with no offset
    /// until [`Clock::observe`] is called.
    pub fn with_local(local: LocalTime) -> Self {
        Self {
            local,
            offset_us: Arc::new(AtomicI64::new(0)),
            observed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The local time, uncorrected.
    pub fn local(&self) -> DateTime<Utc> {
        (self.local)()
    }

    /// The agreed time: local time plus the last measured offset.
    pub fn now(&self) -> Timestamp {
        Timestamp::from(self.local() + self.offset())
    }

    /// The last measured offset to the database's clock.
    pub fn offset(&self) -> TimeDelta {
        TimeDelta::microseconds(self.offset_us.load(Ordering::Relaxed))
    }

    /// Takes a reading of the server's clock, `server`, made between the local times `sent`
    /// and `received`: the server read its clock about halfway through. A reading with a round
    /// trip over [`MAX_ROUND_TRIP`] is dropped once an earlier one was taken. Returns whether
    /// the reading was taken.
    pub fn observe(
        &self,
        sent: DateTime<Utc>,
        server: DateTime<Utc>,
        received: DateTime<Utc>,
    ) -> bool {
        let round_trip = received - sent;
        if round_trip > MAX_ROUND_TRIP && self.observed.load(Ordering::Relaxed) {
            return false;
        }
        let midpoint = sent + round_trip / 2;
        let offset = (server - midpoint).num_microseconds().unwrap_or(0);
        self.offset_us.store(offset, Ordering::Relaxed);
        self.observed.store(true, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("a time")
    }

    #[test]
    fn a_clock_an_hour_ahead_agrees_with_the_server_after_one_reading() {
        let clock = Clock::with_local(Arc::new(|| at(1_000_000 + 3600)));
        // Sent and received locally an hour ahead; the server said 1,000,000.
        clock.observe(at(1_000_000 + 3599), at(1_000_000), at(1_000_000 + 3601));
        assert_eq!(clock.offset(), TimeDelta::seconds(-3600));
        assert_eq!(clock.now(), Timestamp::from(at(1_000_000)));
    }

    #[test]
    fn a_slow_reading_does_not_replace_a_good_one() {
        let clock = Clock::with_local(Arc::new(|| at(1_000_000)));
        assert!(clock.observe(at(999_999), at(1_000_010), at(1_000_001)));
        assert_eq!(clock.offset(), TimeDelta::seconds(10));
        // A round trip of 8 s: the server's reading could be anywhere within it.
        assert!(!clock.observe(at(999_996), at(1_000_100), at(1_000_004)));
        assert_eq!(clock.offset(), TimeDelta::seconds(10));
    }

    #[test]
    fn clones_share_the_offset() {
        let clock = Clock::default();
        let clone = clock.clone();
        let now = Utc::now();
        clock.observe(now, now + TimeDelta::seconds(5), now);
        assert_eq!(clone.offset(), TimeDelta::seconds(5));
    }
}
