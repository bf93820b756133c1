//! Passive replication at scale (DESIGN §8), through the in-memory harness with real
//! coordinators and stores:
//!
//! - `topics_for_100k_docs`: topics a node joins while following 100,000 documents of one
//!   collection — bounded by the shard count, whatever the number of documents;
//! - `pubsub_bytes_per_useful_update`: a node follows one document while 100,000 documents of
//!   its collection are created and that document is updated; pubsub bytes it receives per
//!   update of its document. The same figure for a follower of the whole collection shows
//!   what sharding saves (`pubsub_collection_bytes_per_useful_update`).
//!
//! `cargo bench -p hypha-protocols --bench pubsub`; `HYPHA_BENCH_SCALE=0.01` shrinks it.

// A benchmark reads the clock; the crate's clippy.toml forbids it for the cores.
#![allow(clippy::disallowed_methods)]

#[path = "../../crdt/benches/report.rs"]
mod report;

use std::time::Instant;

use hypha_crdt::DocId;
use hypha_protocols::pubsub::SHARD_COUNT;
use hypha_protocols::testing::{Network, Options};
use serde_json::json;

const U: &str = "type Users { Name: String  Age: Int }";

fn main() {
    let scale: f64 = std::env::var("HYPHA_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let n = ((100_000.0 * scale) as usize).max(200);
    let mut report = report::Report::new();

    // Topics while following n documents.
    let started = Instant::now();
    let mut net = Network::new(Options::seeded(1).nodes(1));
    net.schema(0, U);
    let docs: Vec<DocId> = (0..n as u128)
        .map(|i| {
            DocId::from_bytes(
                (i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_be_bytes(),
            )
        })
        .collect();
    for chunk in docs.chunks(1024) {
        net.follow_documents(0, chunk);
    }
    net.wait().unwrap();
    let topics = net.topics(0).len();
    println!(
        "following {n} documents: {topics} topics ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(
        topics <= SHARD_COUNT as usize,
        "topics are bounded by the shard count"
    );
    report.add("topics_for_100k_docs", topics as f64, "topics");

    // Bytes per useful update: node 1 follows one document, node 2 the whole collection,
    // while node 0 creates n documents and updates the followed one every n/100 creates.
    let started = Instant::now();
    let mut o = Options::seeded(2).nodes(3);
    o.signing = true;
    let mut net = Network::new(o);
    net.schema_all(U);
    let followed = net
        .create(0, "Users", json!({"Name": "followed", "Age": 0}))
        .unwrap();
    net.connect(0, 1);
    net.connect(0, 2);
    net.follow_documents(1, &[followed]);
    net.follow_collections(2, &["Users"]).unwrap();
    net.wait().unwrap();
    let every = (n / 100).max(1);
    let mut useful = 0u64;
    for i in 0..n {
        net.create(0, "Users", json!({"Name": format!("user {i}"), "Age": i}))
            .unwrap();
        if i % every == 0 {
            net.update(0, followed, json!({"Age": i})).unwrap();
            useful += 1;
        }
        if i % 1024 == 0 {
            net.wait().unwrap();
        }
    }
    net.wait().unwrap();
    let one = net.node(1).unwrap().stats();
    let all = net.node(2).unwrap().stats();
    assert_eq!(
        net.values(1, "Users", "Age").len(),
        1,
        "node 1 keeps only its document"
    );
    println!(
        "{n} documents created, {useful} updates of the followed one ({:.1} s): \
         document follower received {} messages / {} bytes, collection follower {} / {}",
        started.elapsed().as_secs_f64(),
        one.pubsub_received,
        one.pubsub_bytes,
        all.pubsub_received,
        all.pubsub_bytes,
    );
    report.add(
        "pubsub_bytes_per_useful_update",
        one.pubsub_bytes as f64 / useful as f64,
        "bytes",
    );
    report.add(
        "pubsub_collection_bytes_per_useful_update",
        all.pubsub_bytes as f64 / useful as f64,
        "bytes",
    );
    report.add(
        "pubsub_shard_saving_ratio",
        all.pubsub_bytes as f64 / one.pubsub_bytes.max(1) as f64,
        "x",
    );
    report.finish("pubsub");
}
