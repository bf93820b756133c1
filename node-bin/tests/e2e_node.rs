//! The node as an operator runs it: the seed's literal command lines and log lines, identity
//! across restarts, graceful shutdown, durability under `kill -9`, API and CLI errors, and
//! the bearer token.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hypha_crdt::{Cid, VerifiedBlock};
use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// Whether `line` starts with the seed's timestamp, `2026-11-25T07:18:17.276-0000, `.
fn seed_timestamp(line: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.ddd-0000, ";
    line.len() > shape.len()
        && line.bytes().zip(shape.bytes()).all(|(c, s)| {
            if s == b'd' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
}

/// The JSON fields of the node's seed-shaped log line `…, INFO, module, message, {…}`.
fn seed_line(node: &Node, module: &str, message: &str) -> Value {
    let log = node.log();
    let marker = format!(", INFO, {module}, {message}, ");
    let line = log
        .lines()
        .find(|l| l.contains(&marker))
        .unwrap_or_else(|| panic!("{}: no log line with {marker:?}", node.name));
    assert!(
        seed_timestamp(line),
        "{}: the line does not start with the seed's timestamp shape: {line}",
        node.name
    );
    let at = line.find(&marker).map(|i| i + marker.len()).unwrap_or(0);
    assert_eq!(
        at,
        28 + marker.len(),
        "{}: a field before the module: {line}",
        node.name
    );
    serde_json::from_str(&line[at..])
        .unwrap_or_else(|e| panic!("{}: the fields are not JSON ({e}): {line}", node.name))
}

/// The seed's `hypha start --p2paddr /ip4/0.0.0.0/tcp/<port>`, `hypha start --peers
/// /ip4/0.0.0.0/tcp/<port>/p2p/<id>`, its log lines, and `hypha client rpc addreplicator
/// "Books" /ip4/0.0.0.0/tcp/<port>/p2p/<id>` with a Books document created on one node and
/// read on the other.
#[test]
fn seed_command_lines_and_log_lines() {
    let any = || Opts {
        p2p_host: "0.0.0.0".into(),
        ..Opts::default()
    };
    let n0 = Node::start_with("N0", any());
    let peers = format!("/ip4/0.0.0.0/tcp/{}/p2p/{}", n0.p2p_port, n0.id());
    let n1 = Node::start_with(
        "N1",
        Opts {
            extra: vec!["--peers".into(), peers.clone()],
            ..any()
        },
    );
    // --peers with 0.0.0.0 is dialed on loopback, with a warning.
    await_connected(&n0, &n1);
    let log = n1.log();
    let unspecified = format!("/ip4/0.0.0.0/tcp/{}", n0.p2p_port);
    assert!(
        log.lines().any(|l| seed_timestamp(l)
            && l.contains(", WARN, ")
            && l.contains(&unspecified)
            && l.contains("loopback")),
        "N1: no warning line about dialing {unspecified} on loopback"
    );

    for n in [&n0, &n1] {
        let started = seed_line(n, "hypha.cli", "Starting P2P node");
        assert_eq!(
            started,
            json!({ "P2P address": format!("/ip4/0.0.0.0/tcp/{}", n.p2p_port) }),
            "{}: Starting P2P node",
            n.name
        );
        let host = seed_line(n, "hypha.node", "Created LibP2P host");
        assert_eq!(
            host["PeerId"],
            json!(n.id()),
            "{}: Created LibP2P host",
            n.name
        );
        assert!(
            n.id().starts_with("12D3Koo"),
            "{}: peer ID {}",
            n.name,
            n.id()
        );
        assert_eq!(
            host["Address"],
            json!([format!("/ip4/0.0.0.0/tcp/{}", n.p2p_port)]),
            "{}: Created LibP2P host",
            n.name
        );
        let info = n.cli_ok(&["p2p", "info"]);
        assert!(
            info.contains(n.id()),
            "{}: `p2p info` names the peer ID: {info}",
            n.name
        );
    }

    let books = "type Books { name: String }";
    n0.cli_ok(&["schema", "add", books]);
    n1.cli_ok(&["schema", "add", books]);
    let target = format!("/ip4/0.0.0.0/tcp/{}/p2p/{}", n1.p2p_port, n1.id());
    n0.cli_ok(&["rpc", "addreplicator", "Books", &target]);
    let created = n0.cli_ok(&[
        "collection",
        "create",
        "-n",
        "Books",
        r#"{"name": "The Hobbit"}"#,
    ]);
    let created: Value = serde_json::from_str(&created)
        .unwrap_or_else(|e| panic!("`collection create` printed no JSON ({e}): {created}"));
    let doc = created["docID"]
        .as_str()
        .unwrap_or_else(|| panic!("`collection create` printed no docID: {created}"))
        .to_string();
    wait(&[&n0, &n1]);
    let got = n1.cli_ok(&["collection", "get", "-n", "Books", &doc]);
    let got: Value = serde_json::from_str(&got)
        .unwrap_or_else(|e| panic!("`collection get` printed no JSON ({e}): {got}"));
    assert_eq!(
        got["name"],
        json!("The Hobbit"),
        "N1 reads the Books document: {got}"
    );
    assert_eq!(got["_docID"], json!(doc));
}

/// The seed's `hypha start --no-p2p`: the API and the store work, p2p endpoints say p2p is
/// disabled.
#[test]
fn seed_no_p2p() {
    let n = Node::start_with("N", Opts::with(&["--no-p2p"]));
    assert_eq!(n.peer_id, None, "no peer ID without p2p");
    let health = n.get("/health");
    assert_eq!(health["p2p"], json!(false), "health: {health}");
    schema(&n, U);
    user(&n, "John", 21);
    assert_ages(&n, &[21]);
    let address = "/ip4/127.0.0.1/tcp/9/p2p/12D3KooWEFCQ1iGMobsmNTPXb758kJkFc7XieQyGKpsuMxeDktz4";
    let calls: [(&str, &str, Option<Value>); 7] = [
        ("GET", "/p2p/info", None),
        ("GET", "/p2p/peers", None),
        ("POST", "/p2p/peers", Some(json!({ "address": address }))),
        ("GET", "/p2p/replicators", None),
        (
            "POST",
            "/p2p/replicators",
            Some(json!({ "address": address, "collections": ["Users"] })),
        ),
        ("POST", "/p2p/collections", Some(json!(["Users"]))),
        ("POST", "/p2p/collections/sync", Some(json!(["Users"]))),
    ];
    for (method, path, body) in calls {
        let a = n.fails(method, path, body);
        assert_eq!(a.status, 400, "{method} {path}: {}", a.text());
        assert!(
            a.error().contains("p2p is disabled"),
            "{method} {path}: {}",
            a.text()
        );
    }
    let line = n.cli_fails(&["p2p", "info"]);
    assert!(line.contains("p2p is disabled"), "CLI: {line}");
    let log = n.log();
    assert!(
        !log.contains("Starting P2P node"),
        "a node without p2p does not start it"
    );
}

/// The peer ID survives restarts; the key file is private (0600).
#[test]
fn peer_id_is_stable_and_the_key_is_private() {
    let mut n = Node::start("N");
    let id = n.id().to_string();
    let key_mode = |n: &Node| -> Vec<(String, u32)> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(n.dir()).expect("root directory") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains("key") {
                let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
                keys.push((name, mode));
            }
        }
        keys
    };
    let keys = key_mode(&n);
    assert!(!keys.is_empty(), "no key file in {}", n.dir().display());
    for (name, mode) in &keys {
        assert_eq!(*mode, 0o600, "{name} has mode {mode:o}");
    }
    n.restart();
    assert_eq!(n.id(), id, "the peer ID after a restart");
    assert_eq!(n.get("/p2p/info")["id"], json!(id));
    assert_eq!(key_mode(&n), keys, "the key file after a restart");
    assert!(
        n.log().matches("Generated a new peer key").count() <= 1,
        "the key is generated once"
    );
}

/// SIGTERM: the process exits 0 within a few seconds; it starts again with its data.
#[test]
fn sigterm_shuts_down_gracefully() {
    let mut n = Node::start("N");
    let peer = Node::start("P");
    schema(&n, U);
    schema(&peer, U);
    connect(&n, &peer);
    let john = user(&n, "John", 21);
    let started = Instant::now();
    let status = n.stop();
    let took = started.elapsed();
    assert!(status.success(), "N exited with {status} after SIGTERM");
    assert!(took < Duration::from_secs(10), "N took {took:?} to exit");
    n.start_again();
    assert_ages(&n, &[21]);
    let doc = n.get(&format!("/collections/Users/documents/{john}"));
    assert_eq!(doc["Name"], json!("John"));
}

/// kill -9 during a stream of writes: every acknowledged write is there after the restart,
/// and every block re-hashes to its CID.
#[test]
fn kill9_loses_no_acknowledged_write() {
    const ACKED_BEFORE_KILL: usize = 300;
    let mut n = Node::start("N");
    schema(&n, U);
    let pid = n.pid();
    let acked: Mutex<Vec<(String, i64)>> = Mutex::new(Vec::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for writer in 0..2i64 {
            let (n, acked, stop) = (&n, &acked, &stop);
            s.spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let age = writer * 1_000_000 + i;
                    let body = json!({"Name": format!("w{writer}-{i}"), "Age": age});
                    let answer = n.try_request(
                        "POST",
                        "/collections/Users",
                        Some(("application/json", body.to_string().into_bytes())),
                    );
                    match answer {
                        Ok(a) if a.status == 200 => {
                            let doc = a.json()["docID"].as_str().map(str::to_string);
                            let doc = doc.unwrap_or_else(|| panic!("no docID: {}", a.text()));
                            acked.lock().expect("acked").push((doc, age));
                        }
                        // The node died during the request: not acknowledged.
                        Ok(_) | Err(_) => return,
                    }
                }
            });
        }
        poll(
            Duration::from_secs(60),
            &format!("{ACKED_BEFORE_KILL} acknowledged creates"),
            || {
                let count = acked.lock().expect("acked").len();
                if count >= ACKED_BEFORE_KILL {
                    Ok(())
                } else {
                    Err(format!("{count} acknowledged"))
                }
            },
        );
        signal(pid, Signal::SIGKILL);
        stop.store(true, Ordering::Relaxed);
    });
    n.kill9();
    let acked = acked.into_inner().expect("acked");
    n.start_again();

    // Every acknowledged create is readable, with its value.
    for (doc, age) in &acked {
        let a = n.request("GET", &format!("/collections/Users/documents/{doc}"), None);
        assert_eq!(
            a.status,
            200,
            "acknowledged {doc} after kill -9: {}",
            a.text()
        );
        assert_eq!(a.json()["Age"], json!(age), "acknowledged {doc}");
    }
    // Every block of every document (acknowledged or not) re-hashes to its CID.
    let docs = n.get("/collections/Users/docIDs?show_deleted=true");
    let docs = docs.as_array().cloned().unwrap_or_default();
    assert!(
        docs.len() >= acked.len(),
        "{} docIDs listed, {} acknowledged",
        docs.len(),
        acked.len()
    );
    let mut blocks = 0;
    for doc in &docs {
        let doc = doc
            .as_str()
            .or_else(|| doc.get("docID").and_then(Value::as_str))
            .unwrap_or_else(|| panic!("docIDs answered {doc}"));
        let history = n.get(&format!("/documents/{doc}/history"));
        let list = history["blocks"].as_array().cloned().unwrap_or_default();
        assert!(!list.is_empty(), "{doc} has no history: {history}");
        for block in list {
            let cid = block["cid"]
                .as_str()
                .unwrap_or_else(|| panic!("no cid in {block}"));
            let parsed: Cid = cid.parse().unwrap_or_else(|e| panic!("CID {cid}: {e}"));
            let raw = n.request("GET", &format!("/blocks/{cid}"), None);
            assert_eq!(raw.status, 200, "block {cid}: {}", raw.text());
            if let Err(e) = VerifiedBlock::decode(&raw.body, Some(&parsed)) {
                panic!("block {cid} of {doc} does not verify after kill -9: {e}");
            }
            blocks += 1;
        }
    }
    assert!(
        blocks >= acked.len(),
        "{blocks} blocks for {} documents",
        acked.len()
    );
    // And the node still takes writes.
    user(&n, "After", 1);
}

/// API errors: the right status and `{"error": …}`; CLI errors: one line, non-zero exit.
#[test]
fn api_and_cli_errors() {
    let n = Node::start("N");
    schema(&n, U);
    let john = user(&n, "John", 21);

    let a = n.fails("GET", "/collections/Nope/documents", None);
    assert_eq!(a.status, 404, "unknown collection: {}", a.text());
    assert!(
        a.error().contains("Nope"),
        "unknown collection: {}",
        a.text()
    );
    let a = n.fails("POST", "/collections/Nope", Some(json!({"Name": "X"})));
    assert_eq!(
        a.status,
        404,
        "create in an unknown collection: {}",
        a.text()
    );
    assert!(!a.error().is_empty());

    let a = n.request(
        "POST",
        "/collections/Users",
        Some(("application/json", b"{not json".to_vec())),
    );
    assert_eq!(a.status, 400, "malformed JSON: {}", a.text());
    assert!(!a.error().is_empty());
    let a = n.fails("POST", "/collections/Users", Some(json!({"Name": 5})));
    assert_eq!(a.status, 400, "a field of the wrong type: {}", a.text());
    assert!(!a.error().is_empty());
    let a = n.request(
        "PATCH",
        &format!("/collections/Users/documents/{john}"),
        Some(("application/json", b"[1, 2".to_vec())),
    );
    assert_eq!(a.status, 400, "malformed patch: {}", a.text());
    let a = n.fails("GET", "/collections/Users/documents/bae-nope", None);
    assert!(
        matches!(a.status, 400 | 404),
        "malformed docID: {}",
        a.text()
    );
    assert!(!a.error().is_empty());
    let a = n.fails("GET", "/no/such/endpoint", None);
    assert_eq!(a.status, 404, "unknown endpoint: {}", a.text());
    assert_ages(&n, &[21]);

    let line = n.cli_fails(&["collection", "create", "-n", "Nope", r#"{"Name": "X"}"#]);
    assert!(line.contains("Nope"), "CLI, unknown collection: {line}");
    let line = n.cli_fails(&["collection", "create", "-n", "Users", "{not json"]);
    assert!(!line.is_empty());
    // An argument clap refuses: clap's usage error (its first line says what is wrong, then a
    // blank line and a pointer to --help), exit code 2.
    let out = n.cli(&[
        "p2p",
        "replicator",
        "set",
        "-c",
        "Users",
        "/ip4/127.0.0.1/tcp/1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "CLI, address without a peer ID: {stderr}"
    );
    let first = stderr.lines().next().unwrap_or("");
    assert!(
        first.starts_with("error: ") && first.contains("/p2p/"),
        "CLI, address without a peer ID: {stderr}"
    );

    // No node at that address: one line naming it.
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = cli_at(&nobody, None, &["health"]);
    let line = one_line_failure(&out, "`hypha client health` with no node");
    assert!(line.contains(&nobody), "CLI, no node: {line}");
}

/// With `--api-token`, every request needs the bearer token.
#[test]
fn api_token_is_required() {
    let token = "s3cret-token";
    let n = Node::start_with(
        "N",
        Opts {
            token: Some(token.into()),
            ..Opts::with(&["--api-token", token])
        },
    );
    for path in ["/health", "/collections", "/metrics"] {
        let none = n
            .try_request_with("GET", path, None, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            none.status,
            401,
            "GET {path} without the token: {}",
            none.text()
        );
        assert!(!none.error().is_empty());
        let wrong = n
            .try_request_with("GET", path, None, Some("wrong"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            wrong.status,
            401,
            "GET {path} with a wrong token: {}",
            wrong.text()
        );
        let right = n
            .try_request_with("GET", path, None, Some(token))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            right.status,
            200,
            "GET {path} with the token: {}",
            right.text()
        );
    }
    let a = n
        .try_request_with(
            "POST",
            "/schema",
            Some(("text/plain", U.as_bytes().to_vec())),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.status, 401, "a write without the token: {}", a.text());
    assert_eq!(n.get("/collections"), json!([]), "nothing was written");

    // The CLI: the right token (from HYPHA_API_TOKEN) works; a wrong one fails in one line.
    n.cli_ok(&["schema", "add", U]);
    let line = n.cli_fails(&["--api-token", "wrong", "collection", "describe"]);
    assert!(line.contains("token"), "CLI, wrong token: {line}");
    let out = cli_at(&n.url(), None, &["collection", "describe"]);
    let line = one_line_failure(&out, "`hypha client collection describe` without a token");
    assert!(line.contains("token"), "CLI, no token: {line}");
}
