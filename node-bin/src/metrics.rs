//! Prometheus metrics (`GET /api/v0/metrics`, text format 0.0.4).
//!
//! Counters the event loop and the API keep here, the coordinator's own counters copied out
//! at each scrape ([`NodeStats`]), and the store's gauges. Rejections are labelled by protocol
//! and reason (the violation's variant), so their cardinality is bounded by the code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hypha_protocols::node::{Protocol, Violation};

use crate::service::NodeStats;

/// Counters kept by the loop and the API.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// Documents changed here (local writes and merged blocks).
    pub(crate) changes: AtomicU64,
    /// Documents a replicator target acknowledged.
    pub(crate) replicated: AtomicU64,
    /// Pushes that failed or were refused (retried).
    pub(crate) replication_failed: AtomicU64,
    /// Received blocks whose persist failed.
    pub(crate) persist_failed: AtomicU64,
    /// Store reads that failed.
    pub(crate) store_failed: AtomicU64,
    /// Peers banned for repeated violations.
    pub(crate) peers_banned: AtomicU64,
    /// Peers connected (first connection).
    pub(crate) connections_opened: AtomicU64,
    /// API requests answered, by status class.
    pub(crate) api_ok: AtomicU64,
    /// API requests refused for bad input (4xx).
    pub(crate) api_client_errors: AtomicU64,
    /// API requests that failed in the node (5xx).
    pub(crate) api_server_errors: AtomicU64,
    /// Peer violations by (protocol, reason).
    violations: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    /// Counts a peer's violation.
    pub(crate) fn record_violation(&self, violation: &Violation) {
        let (protocol, inner) = match violation {
            Violation::Backfill(v) => ("backfill", format!("{v:?}")),
            Violation::HeadSync(v) => ("head_sync", format!("{v:?}")),
            Violation::Pubsub(v) => ("pubsub", format!("{v:?}")),
            Violation::Replicator(v) => ("replicator", format!("{v:?}")),
            Violation::Rejected(v) => ("merge", format!("{v:?}")),
            Violation::Framing(p, v) => {
                let protocol = match p {
                    Protocol::Backfill => "backfill",
                    Protocol::HeadSync => "head_sync",
                    Protocol::Replicator => "replicator",
                };
                (protocol, format!("{v:?}"))
            }
        };
        // The variant's name: what Debug writes before any field.
        let reason: String = inner
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        let mut map = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((protocol, reason)).or_default() += 1;
    }

    /// The text exposition.
    pub(crate) fn render(
        &self,
        node: Option<&NodeStats>,
        store: Option<&hypha_store::Stats>,
    ) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP hypha_{name} {help}\n# TYPE hypha_{name} counter\nhypha_{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP hypha_{name} {help}\n# TYPE hypha_{name} gauge\nhypha_{name} {value}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "document_changes_total",
            "Documents changed here (local writes and merged blocks).",
            get(&self.changes),
        );
        counter(
            &mut out,
            "replicated_total",
            "Documents a replicator target acknowledged as durable.",
            get(&self.replicated),
        );
        counter(
            &mut out,
            "replication_failures_total",
            "Replicator pushes that failed or were refused (retried with backoff).",
            get(&self.replication_failed),
        );
        counter(
            &mut out,
            "persist_failures_total",
            "Received blocks whose persist failed.",
            get(&self.persist_failed),
        );
        counter(
            &mut out,
            "store_read_failures_total",
            "Store reads that failed.",
            get(&self.store_failed),
        );
        counter(
            &mut out,
            "peers_banned_total",
            "Peers banned for repeated violations.",
            get(&self.peers_banned),
        );
        counter(
            &mut out,
            "peer_connections_total",
            "Peers connected (first connection of each).",
            get(&self.connections_opened),
        );
        let _ = writeln!(
            out,
            "# HELP hypha_api_requests_total API requests by outcome.\n# TYPE hypha_api_requests_total counter"
        );
        for (outcome, value) in [
            ("ok", &self.api_ok),
            ("client_error", &self.api_client_errors),
            ("server_error", &self.api_server_errors),
        ] {
            let _ = writeln!(
                out,
                "hypha_api_requests_total{{outcome=\"{outcome}\"}} {}",
                get(value)
            );
        }
        let _ = writeln!(
            out,
            "# HELP hypha_peer_violations_total Rejected peer input, by protocol and reason.\n# TYPE hypha_peer_violations_total counter"
        );
        for ((protocol, reason), n) in self
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "hypha_peer_violations_total{{protocol=\"{protocol}\",reason=\"{reason}\"}} {n}"
            );
        }
        if let Some(s) = node {
            gauge(
                &mut out,
                "peers_connected",
                "Peers connected now.",
                s.connected_peers as u64,
            );
            gauge(
                &mut out,
                "gossip_peers",
                "Peers known to gossipsub.",
                s.gossip_peers as u64,
            );
            let n = &s.node;
            counter(
                &mut out,
                "pubsub_published_total",
                "Pubsub updates published.",
                n.published,
            );
            counter(
                &mut out,
                "pubsub_received_total",
                "Pubsub updates received.",
                n.pubsub_received,
            );
            counter(
                &mut out,
                "pubsub_useful_total",
                "Received updates of followed documents.",
                n.pubsub_useful,
            );
            counter(
                &mut out,
                "pubsub_received_bytes_total",
                "Pubsub bytes received.",
                n.pubsub_bytes,
            );
            counter(
                &mut out,
                "blocks_ingested_total",
                "Blocks from peers handed to the store.",
                n.ingested,
            );
            counter(
                &mut out,
                "backfill_requests_total",
                "Backfill requests made.",
                n.fetches,
            );
            counter(
                &mut out,
                "blocks_dropped_total",
                "Received blocks dropped because too many persists were outstanding.",
                n.dropped,
            );
            counter(
                &mut out,
                "anti_entropy_rounds_total",
                "Anti-entropy rounds run.",
                n.anti_entropy_rounds,
            );
            counter(
                &mut out,
                "head_sync_documents_total",
                "Documents head exchange found to differ.",
                n.head_sync_docs,
            );
            let r = &s.replicator;
            counter(
                &mut out,
                "replicator_pushes_total",
                "Replicator pushes sent.",
                r.pushes,
            );
            counter(
                &mut out,
                "replicator_acked_total",
                "Replicator pushes acknowledged.",
                r.acked,
            );
            counter(
                &mut out,
                "replicator_failed_total",
                "Replicator pushes failed.",
                r.failed,
            );
            counter(
                &mut out,
                "replicator_received_total",
                "Replicator pushes received.",
                r.received,
            );
            let _ = writeln!(
                out,
                "# HELP hypha_replicator_refused_total Replicator pushes refused, by reason.\n# TYPE hypha_replicator_refused_total counter"
            );
            for (reason, n) in [
                ("unauthorized", r.refused_unauthorized),
                ("busy", r.refused_busy),
                ("invalid", r.refused_invalid),
            ] {
                let _ = writeln!(
                    out,
                    "hypha_replicator_refused_total{{reason=\"{reason}\"}} {n}"
                );
            }
            let h = &s.head_sync;
            counter(
                &mut out,
                "head_sync_sessions_total",
                "Head-exchange sessions started.",
                h.sessions,
            );
            counter(
                &mut out,
                "head_sync_completed_total",
                "Head-exchange sessions completed.",
                h.completed,
            );
            counter(
                &mut out,
                "head_sync_failed_total",
                "Head-exchange sessions failed.",
                h.failed,
            );
            counter(
                &mut out,
                "head_sync_equal_roots_total",
                "Head exchanges that found equal roots.",
                h.equal_roots,
            );
            counter(
                &mut out,
                "head_sync_served_total",
                "Head-exchange requests served.",
                h.served,
            );
        }
        if let Some(s) = store {
            gauge(&mut out, "store_blocks", "Applied blocks stored.", s.blocks);
            gauge(
                &mut out,
                "store_pending_blocks",
                "Blocks waiting for ancestors.",
                s.pending,
            );
            gauge(
                &mut out,
                "store_documents",
                "Documents stored.",
                s.documents,
            );
            gauge(
                &mut out,
                "store_collections",
                "Collections declared.",
                s.collections,
            );
            gauge(
                &mut out,
                "store_replicators",
                "Replicators set.",
                s.replicators,
            );
            gauge(
                &mut out,
                "store_subscriptions",
                "Collections and documents followed.",
                s.subscriptions,
            );
            gauge(
                &mut out,
                "store_outbox_entries",
                "Documents owed to replicators.",
                s.outbox_entries,
            );
            gauge(&mut out, "store_peers", "Peers remembered.", s.peers);
            counter(
                &mut out,
                "store_commits_total",
                "Store commits (group commits).",
                s.commits,
            );
            counter(
                &mut out,
                "store_mutations_total",
                "Mutations committed.",
                s.mutations,
            );
            counter(
                &mut out,
                "store_refused_total",
                "Mutations refused.",
                s.refused,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_labelled_violations() {
        let m = Metrics::default();
        m.changes.fetch_add(3, Ordering::Relaxed);
        m.peers_banned.fetch_add(1, Ordering::Relaxed);
        m.record_violation(&Violation::Rejected(hypha_crdt::Rejection::ForeignParent));
        m.record_violation(&Violation::Rejected(hypha_crdt::Rejection::ForeignParent));
        m.record_violation(&Violation::Framing(
            Protocol::Backfill,
            hypha_protocols::node::Framing::FrameTooLarge { len: 9, max: 8 },
        ));
        let text = m.render(Some(&NodeStats::default()), None);
        assert!(text.contains("hypha_document_changes_total 3"), "{text}");
        assert!(text.contains("hypha_peers_banned_total 1"), "{text}");
        assert!(
            text.contains(
                "hypha_peer_violations_total{protocol=\"merge\",reason=\"ForeignParent\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "hypha_peer_violations_total{protocol=\"backfill\",reason=\"FrameTooLarge\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("hypha_peers_connected 0"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
