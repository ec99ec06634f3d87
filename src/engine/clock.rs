//! Wall-clock time for the journal and retry times, passed in so tests can run the
//! engine under `tokio::time::pause()` and see exactly the waits it asks for.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where "now" comes from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// Tokio's clock, starting at a fixed wall-clock time: advancing paused tokio time
    /// advances it.
    Tokio {
        /// The wall-clock time at `origin`.
        start: DateTime<Utc>,
        /// Tokio's instant that corresponds to `start`.
        origin: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that follows tokio's (paused) time from `start` on.
    pub fn tokio_from(start: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            start,
            origin: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { start, origin } => {
                let elapsed = tokio::time::Instant::now().saturating_duration_since(*origin);
                chrono::Duration::from_std(elapsed)
                    .ok()
                    .and_then(|d| start.checked_add_signed(d))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            }
        }
    }

    /// `delay` from now; saturates instead of overflowing for absurd delays.
    pub fn after(&self, delay: Duration) -> DateTime<Utc> {
        let now = self.now();
        chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}
