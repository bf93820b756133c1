//! Time as the cores see it: an input that only moves forward.

use std::time::Instant;

/// The last `now` an input carried; a core asserts time never goes backwards.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Monotonic(Option<Instant>);

impl Monotonic {
    /// Records `now`.
    ///
    /// # Panics
    /// When `now` is earlier than the last time recorded: a driver bug, never peer input.
    pub(crate) fn advance(&mut self, now: Instant) {
        if let Some(last) = self.0 {
            assert!(now >= last, "time went backwards: {now:?} < {last:?}");
        }
        self.0 = Some(now);
    }

    /// The last time recorded, if any.
    pub(crate) fn last(&self) -> Option<Instant> {
        self.0
    }
}
