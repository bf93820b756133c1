//! Two (then three) real `hypha` processes on loopback: replication latency and throughput,
//! the disk's fsync latency measured in the same run, and an idle node's memory.
//!
//! `cargo bench -p hypha-node --bench e2e`; `HYPHA_BENCH_SCALE=0.1` shrinks it.
//!
//! - **Latency**: a document created on A (the API call returns once it is durable on A) until
//!   it is readable on B, seen on B's change feed (`GET /api/v0/events`). B's store commits a
//!   received block visibly first and makes it durable one fsync later
//!   ([`hypha_store::Stage`]): the feed fires at the first, a replicator ack waits for the
//!   second. Passively (B follows the collection over pubsub) and by replicator (A pushes to
//!   C, which follows nothing). Writes are one at a time, so each sample is one document's
//!   trip. `e2e_latency_p50_ms` is the slower path's p50; `e2e_latency_p99_ms` is over both.
//! - **fsync**: 4 KiB written and `fsync`ed in the nodes' own directory, the floor of any
//!   durable write; the target is on the ratio: latency p50 ≤ 3 × fsync p50, and p99 ≤ 50 ms.
//!   Beside it, for reference, the same disk's cost of what one store commit writes: a redb
//!   commit of one received block writes [`COMMIT_PAGES`] pages across the file and the
//!   header, then one `fdatasync` (`strace -e pwrite64,fdatasync` on a node), and on a disk
//!   whose flush cost grows with the pages flushed that is the floor of the reader's commit.
//! - **Throughput**: documents per second that reach a replicator target while eight clients
//!   write to the source as fast as it acknowledges.
//! - **Idle RSS**: a node that has started, with no peers and nothing to do.

#[path = "../../crdt/benches/report.rs"]
mod report;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SCHEMA: &str = "type Users { Name: String  Age: Int }  type Items { Name: String  N: Int }";

fn main() {
    let scale: f64 = std::env::var("HYPHA_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let samples = ((200.0 * scale) as usize).max(10);
    let burst = ((2000.0 * scale) as usize).max(50);
    let mut report = report::Report::new();

    let dir = tempfile::tempdir().expect("temp dir");
    let fsync = fsync_latencies(dir.path(), samples.max(50));
    let fsync_p50 = percentile(&fsync, 0.5);
    let commit_floor = commit_floor_latencies(dir.path(), samples.max(50));

    let a = Node::start(dir.path().join("a"), &[]);
    let rss = a.rss_mb();
    let b = Node::start(dir.path().join("b"), &[]);
    let c = Node::start(dir.path().join("c"), &[]);
    for n in [&a, &b, &c] {
        n.post_text("/schema", SCHEMA);
    }
    n_connect(&b, &a);
    n_connect(&c, &a);
    b.post("/p2p/collections", json!(["Users"]));
    a.post(
        "/p2p/replicators",
        json!({ "address": c.address(), "collections": ["Items"] }),
    );
    // The pubsub mesh forms on gossipsub's heartbeat: wait until a first write arrives.
    let b_feed = Feed::open(&b);
    let c_feed = Feed::open(&c);
    let warm = a.create("Users", json!({"Name": "warm", "Age": 0}));
    b_feed.wait_for(&warm, Duration::from_secs(60));
    let warm = a.create("Items", json!({"Name": "warm", "N": 0}));
    c_feed.wait_for(&warm, Duration::from_secs(60));

    let passive = latencies(&a, &b_feed, "Users", samples);
    let replicator = latencies(&a, &c_feed, "Items", samples);
    let mut all = passive.clone();
    all.extend(&replicator);

    // Throughput: eight writers on A, counted as they arrive on C.
    let started = Instant::now();
    let next = Arc::new(Mutex::new(0usize));
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (url, next) = (a.url.clone(), Arc::clone(&next));
            thread::spawn(move || {
                loop {
                    let i = {
                        let mut n = next.lock().expect("lock");
                        if *n == burst {
                            return;
                        }
                        *n += 1;
                        *n
                    };
                    let body = json!({"Name": format!("item {i}"), "N": i});
                    post_json(&url, "/collections/Items", &body);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let written = started.elapsed();
    c_feed.wait_count(burst + 1 + samples, Duration::from_secs(300));
    let arrived = started.elapsed();

    report.note(format!(
        "{samples} documents one at a time each way; {burst} documents written by 8 clients in {:.2} s",
        written.as_secs_f64()
    ));
    report.add("fsync_p50_ms", fsync_p50, "ms");
    report.add(
        "fsync_commit_pages_p50_ms",
        percentile(&commit_floor, 0.5),
        "ms",
    );
    // The two paths differ (a push goes straight to the target, and starts as soon as A's
    // commit is durable, while the API's answer is still on its way to the client; an update
    // crosses gossipsub), so the p50 of their union would fall between them: the latency
    // reported is the slower path's p50.
    let (passive_p50, replicator_p50) = (percentile(&passive, 0.5), percentile(&replicator, 0.5));
    let p50 = passive_p50.max(replicator_p50);
    report.add("e2e_passive_p50_ms", passive_p50, "ms");
    report.add("e2e_replicator_p50_ms", replicator_p50, "ms");
    report.add("e2e_latency_p50_ms", p50, "ms");
    report.add("e2e_latency_p99_ms", percentile(&all, 0.99), "ms");
    report.add("e2e_latency_p50_over_fsync_ratio", p50 / fsync_p50, "x");
    report.add(
        "e2e_replicator_docs_per_s",
        burst as f64 / arrived.as_secs_f64(),
        "docs/s",
    );
    report.add("idle_rss_mb", rss, "MB");
    report.finish("e2e");
}

/// Milliseconds from each create returning on `a` to its change on `feed`.
fn latencies(a: &Node, feed: &Feed, collection: &str, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let doc = a.create(collection, json!({"Name": format!("{collection} {i}")}));
            let returned = Instant::now();
            let seen = feed.wait_for(&doc, Duration::from_secs(30));
            seen.saturating_duration_since(returned).as_secs_f64() * 1e3
        })
        .collect()
}

fn n_connect(from: &Node, to: &Node) {
    from.post("/p2p/peers", json!({ "address": to.address() }));
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Milliseconds per 4 KiB write + fsync in `dir`.
fn fsync_latencies(dir: &Path, n: usize) -> Vec<f64> {
    let mut file = std::fs::File::create(dir.join("fsync-probe")).expect("probe file");
    let page = vec![7u8; 4096];
    (0..n)
        .map(|_| {
            let t = Instant::now();
            file.write_all(&page).expect("write");
            file.sync_data().expect("fsync");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// Pages a redb commit of one received block writes (besides the header), as `strace` shows
/// on a node: the leaves of the tables it touches (blocks, states, sync items and roots, the
/// collection's index) and redb's table and allocator trees.
const COMMIT_PAGES: u64 = 10;

/// Milliseconds per [`COMMIT_PAGES`] 4 KiB pages written at scattered offsets of a 64 MiB
/// file, plus a header write, then `fdatasync`: what the disk charges for one store commit.
fn commit_floor_latencies(dir: &Path, n: usize) -> Vec<f64> {
    use std::os::unix::fs::FileExt as _;
    const PAGES_IN_FILE: u64 = 16 * 1024;
    let file = std::fs::File::create(dir.join("commit-probe")).expect("probe file");
    file.set_len(PAGES_IN_FILE * 4096).expect("size the probe");
    file.sync_all().expect("fsync");
    let page = vec![7u8; 4096];
    // A fixed linear congruential sequence: the same offsets in every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            let t = Instant::now();
            file.write_all_at(&page[..320], 0).expect("header");
            for _ in 0..COMMIT_PAGES {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let at = 1 + (x >> 33) % (PAGES_IN_FILE - 1);
                file.write_all_at(&page, at * 4096).expect("page");
            }
            file.sync_data().expect("fsync");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

/// A change feed: docIDs with the instant they arrived.
struct Feed {
    seen: Arc<Mutex<BTreeMap<String, Instant>>>,
}

impl Feed {
    fn open(node: &Node) -> Feed {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let url = format!("{}/events", node.url);
        let sink = Arc::clone(&seen);
        thread::spawn(move || {
            let response = ureq::get(&url).call().expect("change feed");
            let _ = ready_tx.send(());
            let reader = BufReader::new(response.into_body().into_reader());
            for line in reader.lines() {
                let Ok(line) = line else { return };
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(v) = serde_json::from_str::<Value>(data.trim())
                    && let Some(doc) = v["docID"].as_str()
                {
                    let mut seen = sink.lock().expect("lock");
                    seen.entry(doc.to_string()).or_insert_with(Instant::now);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the change feed answers");
        Feed { seen }
    }

    fn wait_for(&self, doc: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(at) = self.seen.lock().expect("lock").get(doc) {
                return *at;
            }
            assert!(
                Instant::now() < deadline,
                "{doc} did not arrive within {limit:?}"
            );
            thread::sleep(Duration::from_micros(200));
        }
    }

    fn wait_count(&self, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.seen.lock().expect("lock").len() < n {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} documents arrived within {limit:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A `hypha` process.
struct Node {
    child: Child,
    url: String,
    p2p: u16,
    id: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Node {
    fn start(root: PathBuf, extra: &[&str]) -> Node {
        std::fs::create_dir_all(&root).expect("root dir");
        let (api, p2p) = (free_port(), free_port());
        let log = std::fs::File::create(root.join("node.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hypha"))
            .args(["start", "--no-mdns", "--hot-docs", "0"])
            .arg("--rootdir")
            .arg(&root)
            .args(["--url", &format!("127.0.0.1:{api}")])
            .args(["--p2paddr", &format!("/ip4/127.0.0.1/tcp/{p2p}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("hypha starts");
        let url = format!("http://127.0.0.1:{api}/api/v0");
        let deadline = Instant::now() + Duration::from_secs(30);
        let id = loop {
            if let Ok(mut r) = ureq::get(&format!("{url}/p2p/info")).call()
                && let Ok(v) = r.body_mut().read_json::<Value>()
            {
                break v["id"].as_str().expect("id").to_string();
            }
            assert!(Instant::now() < deadline, "the node at {url} did not start");
            thread::sleep(Duration::from_millis(20));
        };
        Node {
            child,
            url,
            p2p,
            id,
        }
    }

    fn address(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.p2p, self.id)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        post_json(&self.url, path, &body)
    }

    fn post_text(&self, path: &str, body: &str) {
        ureq::post(&format!("{}{path}", self.url))
            .send(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    }

    fn create(&self, collection: &str, doc: Value) -> String {
        let v = self.post(&format!("/collections/{collection}"), doc);
        v["docID"].as_str().expect("docID").to_string()
    }

    fn rss_mb(&self) -> f64 {
        // Let start-up settle: listeners, the first Kademlia and gossipsub ticks.
        thread::sleep(Duration::from_secs(2));
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

fn post_json(url: &str, path: &str, body: &Value) -> Value {
    ureq::post(&format!("{url}{path}"))
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
        .body_mut()
        .read_json()
        .expect("a JSON answer")
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
