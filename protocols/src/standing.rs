//! A peer's standing: what its violations cost it, and when it is cut off.
//!
//! Every [`Violation`] a peer commits (a malformed frame, a block the merge refuses, an update
//! that does not validate, a broken protocol step) costs it [`cost`] points. Points decay
//! exponentially with [`Config::with_half_life`] (default 10 minutes), so a peer that erred
//! once long ago is in good standing again, while one that keeps erring accumulates. At
//! [`Config::with_ban_at`] points (default 5) it is banned for [`Config::with_ban_for`]
//! (default 15 minutes): the driver closes its connections and refuses new ones until the ban
//! ends. Its score — minus its points — is also what the driver reports to gossipsub as the
//! application-specific score, so a misbehaving peer loses its mesh and gossip before it is
//! banned.
//!
//! ```text
//!  Event::PeerMisbehaved ─▶ penalize(peer, violation, now) ─▶ Outcome::Penalized { score }
//!                                                         └─▶ Outcome::Banned { until }
//!  a connection from peer ─▶ is_banned(peer, now)? refuse
//! ```
//!
//! Sans-IO and deterministic: time is an input, peers are kept in a `BTreeMap`.
//!
//! # Bounds
//!
//! | bound | default | past it |
//! |---|---|---|
//! | peers tracked (`max_peers`) | 10,000 | the record with the fewest points is forgotten (a ban is never forgotten before it ends: bans are kept over points) |
//!
//! Records decayed below 0.01 points and without a ban are dropped by [`Standing::prune`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::node::Violation;

/// What a violation costs, in points. Every kind costs the same today: each is a peer sending
/// what an honest node never sends. Kept a function so kinds can be weighed apart later.
pub fn cost(violation: &Violation) -> f64 {
    match violation {
        Violation::Backfill(_)
        | Violation::HeadSync(_)
        | Violation::Pubsub(_)
        | Violation::Replicator(_)
        | Violation::Rejected(_)
        | Violation::Framing(..) => 1.0,
    }
}

/// How standing is kept.
#[derive(Debug, Clone)]
pub struct Config {
    half_life: Duration,
    ban_at: f64,
    ban_for: Duration,
    max_peers: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            half_life: Duration::from_secs(600),
            ban_at: 5.0,
            ban_for: Duration::from_secs(900),
            max_peers: 10_000,
        }
    }
}

impl Config {
    /// How long points take to halve. Default 10 minutes; at least 1 s.
    pub fn with_half_life(mut self, half_life: Duration) -> Config {
        self.half_life = half_life.max(Duration::from_secs(1));
        self
    }

    /// Points at which a peer is banned. Default 5; at least 1.
    pub fn with_ban_at(mut self, points: f64) -> Config {
        self.ban_at = points.max(1.0);
        self
    }

    /// How long a ban lasts. Default 15 minutes.
    pub fn with_ban_for(mut self, duration: Duration) -> Config {
        self.ban_for = duration;
        self
    }

    /// Most peers tracked. Default 10,000; at least 1.
    pub fn with_max_peers(mut self, n: usize) -> Config {
        self.max_peers = n.max(1);
        self
    }

    /// How long points take to halve.
    pub fn half_life(&self) -> Duration {
        self.half_life
    }

    /// Points at which a peer is banned.
    pub fn ban_at(&self) -> f64 {
        self.ban_at
    }

    /// How long a ban lasts.
    pub fn ban_for(&self) -> Duration {
        self.ban_for
    }

    /// Most peers tracked.
    pub fn max_peers(&self) -> usize {
        self.max_peers
    }
}

/// What a penalty did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The peer's points grew; `score` (≤ 0) is minus its points.
    Penalized {
        /// Minus the peer's points now.
        score: f64,
    },
    /// The peer reached the ban threshold: close its connections and refuse it until `until`.
    Banned {
        /// When the ban ends.
        until: Instant,
    },
}

/// `record`'s points at `now`. Decay counts whole seconds, so violations in a burst add up
/// exactly (three within a second are three points, not 2.9999).
fn decay(record: &Record, now: Instant, half_life: Duration) -> f64 {
    let elapsed = now.saturating_duration_since(record.at).as_secs() as f64;
    record.points * 0.5f64.powf(elapsed / half_life.as_secs_f64())
}

#[derive(Debug, Clone, Copy)]
struct Record {
    points: f64,
    at: Instant,
    banned_until: Option<Instant>,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Penalties recorded.
    pub penalties: u64,
    /// Bans imposed.
    pub bans: u64,
    /// Gauge: peers tracked.
    pub tracked: usize,
}

/// The standing of every peer that misbehaved. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Standing<P> {
    config: Config,
    peers: BTreeMap<P, Record>,
    stats: Stats,
}

impl<P: Ord + Copy> Standing<P> {
    /// No peer has misbehaved yet.
    pub fn new(config: Config) -> Standing<P> {
        Standing {
            config,
            peers: BTreeMap::new(),
            stats: Stats::default(),
        }
    }

    fn decayed(&self, record: &Record, now: Instant) -> f64 {
        decay(record, now, self.config.half_life)
    }

    /// `peer` committed `violation` at `now`.
    pub fn penalize(&mut self, peer: P, violation: &Violation, now: Instant) -> Outcome {
        self.stats.penalties += 1;
        let points = match self.peers.get(&peer) {
            Some(r) => self.decayed(r, now),
            None => {
                self.make_room(now);
                0.0
            }
        } + cost(violation);
        let banned = self
            .peers
            .get(&peer)
            .and_then(|r| r.banned_until)
            .filter(|until| *until > now);
        let (banned_until, outcome) = match banned {
            Some(until) => (Some(until), Outcome::Banned { until }),
            None if points >= self.config.ban_at => {
                self.stats.bans += 1;
                let until = now + self.config.ban_for;
                (Some(until), Outcome::Banned { until })
            }
            None => (None, Outcome::Penalized { score: -points }),
        };
        self.peers.insert(
            peer,
            Record {
                points,
                at: now,
                banned_until,
            },
        );
        self.stats.tracked = self.peers.len();
        outcome
    }

    /// Minus `peer`'s points at `now` (0 for a peer in good standing).
    pub fn score(&self, peer: &P, now: Instant) -> f64 {
        self.peers.get(peer).map_or(0.0, |r| -self.decayed(r, now))
    }

    /// Whether `peer` is banned at `now`.
    pub fn is_banned(&self, peer: &P, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|until| until > now)
    }

    /// Forgets peers whose points decayed away and whose ban, if any, ended.
    pub fn prune(&mut self, now: Instant) {
        let half_life = self.config.half_life;
        self.peers.retain(|_, r| {
            decay(r, now, half_life) >= 0.01 || r.banned_until.is_some_and(|u| u > now)
        });
        self.stats.tracked = self.peers.len();
    }

    /// Makes room for one more record: prunes, then forgets the unbanned peer with the fewest
    /// points (ties: the smallest peer), then, if every record is a ban, the ban ending first.
    fn make_room(&mut self, now: Instant) {
        if self.peers.len() < self.config.max_peers {
            return;
        }
        self.prune(now);
        if self.peers.len() < self.config.max_peers {
            return;
        }
        let unbanned = self
            .peers
            .iter()
            .filter(|(_, r)| r.banned_until.is_none_or(|u| u <= now))
            .min_by(|a, b| self.decayed(a.1, now).total_cmp(&self.decayed(b.1, now)))
            .map(|(p, _)| *p);
        let victim = unbanned.or_else(|| {
            self.peers
                .iter()
                .min_by_key(|(_, r)| r.banned_until)
                .map(|(p, _)| *p)
        });
        if let Some(p) = victim {
            self.peers.remove(&p);
        }
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::Invalid;

    #[allow(clippy::disallowed_methods)] // a fixed origin for virtual time
    fn epoch() -> Instant {
        Instant::now()
    }

    fn bad() -> Violation {
        Violation::Pubsub(Invalid::Mismatch)
    }

    #[test]
    fn repeated_violations_ban_and_bans_end() {
        let t0 = epoch();
        let mut s = Standing::new(Config::default());
        for i in 1..5 {
            assert_eq!(
                s.penalize(1u8, &bad(), t0),
                Outcome::Penalized { score: -(i as f64) }
            );
        }
        assert!(!s.is_banned(&1, t0));
        let until = t0 + Duration::from_secs(900);
        assert_eq!(s.penalize(1, &bad(), t0), Outcome::Banned { until });
        assert!(s.is_banned(&1, t0 + Duration::from_secs(899)));
        assert!(!s.is_banned(&1, until));
        assert!(!s.is_banned(&2, t0), "others are untouched");
        assert_eq!(s.stats().bans, 1);
    }

    #[test]
    fn points_decay_so_rare_mistakes_never_ban() {
        let t0 = epoch();
        let mut s = Standing::new(Config::default());
        for hour in 0..100u64 {
            let now = t0 + Duration::from_secs(3600 * hour);
            assert!(matches!(
                s.penalize(1u8, &bad(), now),
                Outcome::Penalized { .. }
            ));
        }
        let later = t0 + Duration::from_secs(3600 * 100);
        assert!(s.score(&1, later) > -0.1, "{}", s.score(&1, later));
        s.prune(later + Duration::from_secs(3600 * 10));
        assert_eq!(s.stats().tracked, 0);
    }

    #[test]
    fn tracking_is_bounded_and_keeps_bans() {
        let t0 = epoch();
        let mut s = Standing::new(Config::default().with_max_peers(3).with_ban_at(2.0));
        s.penalize(0u16, &bad(), t0);
        assert!(matches!(
            s.penalize(0u16, &bad(), t0),
            Outcome::Banned { .. }
        ));
        for p in 1..100u16 {
            s.penalize(p, &bad(), t0);
            assert!(s.stats().tracked <= 3);
        }
        assert!(
            s.is_banned(&0, t0),
            "a ban outlives the eviction of mere points"
        );
    }
}
