//! The event log of a run: every delivery, persist, connection and coordinator event, in
//! order, with its virtual time. Its hash is the determinism check; its tail is the trace.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// Lines kept for `--trace` and failure reports (older ones only count in the hash).
pub(crate) const KEPT_LINES: usize = 2_000;

/// An FNV-1a hash over every line, plus the last 2,000 lines (all of them when tracing).
#[derive(Debug, Clone)]
pub struct EventLog {
    hash: u64,
    lines: u64,
    kept: VecDeque<String>,
    scratch: String,
    /// Keep every line (for `--trace`), not just the tail.
    pub(crate) keep_all: bool,
    all: Vec<String>,
}

impl Default for EventLog {
    fn default() -> EventLog {
        EventLog {
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            kept: VecDeque::new(),
            scratch: String::new(),
            keep_all: false,
            all: Vec::new(),
        }
    }
}

impl EventLog {
    /// Records one line for host `host` at virtual time `at`.
    pub(crate) fn record(&mut self, at: Duration, host: u16, what: fmt::Arguments<'_>) {
        self.scratch.clear();
        let ms = at.as_millis();
        let _ = write!(
            self.scratch,
            "{:>5}.{:03}s n{host} {what}",
            ms / 1000,
            ms % 1000
        );
        for b in self.scratch.bytes().chain([b'\n']) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.lines += 1;
        if self.keep_all {
            self.all.push(self.scratch.clone());
        }
        if self.kept.len() == KEPT_LINES {
            self.kept.pop_front();
        }
        self.kept.push_back(self.scratch.clone());
    }

    /// Records a line of the driver (actions, checks), not of a host.
    pub(crate) fn note(&mut self, at: Duration, what: fmt::Arguments<'_>) {
        self.record(at, u16::MAX, what);
    }

    /// The hash of every line so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Lines so far.
    pub fn len(&self) -> u64 {
        self.lines
    }

    /// Whether nothing was logged.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The last lines (all of them with `keep_all`).
    pub fn tail(&self) -> Vec<String> {
        if self.keep_all {
            self.all.clone()
        } else {
            self.kept.iter().cloned().collect()
        }
    }
}
