//! The end-to-end harness: real `hypha` processes on 127.0.0.1, driven over the HTTP API and
//! the `hypha client` CLI.
//!
//! Every node has a temporary root directory and two ports chosen once (the API's, and the
//! peer-to-peer port used by TCP and by QUIC over UDP) that it keeps across restarts. Nothing
//! waits by sleeping: every wait polls a condition against a deadline and fails naming the
//! node, what was expected and what was seen. A node's output goes to `node.log` in its root
//! directory and is printed when a test fails.

#![allow(dead_code)] // Each test binary uses a part of the harness.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::fs::{self, OpenOptions};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

/// The node binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_hypha");
/// How long a node may take to answer its health check after starting.
pub(crate) const READY: Duration = Duration::from_secs(30);
/// How long a set of nodes may take to become quiescent.
pub(crate) const QUIESCE: Duration = Duration::from_secs(60);
/// How long anything else polled may take.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two polls.
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// Anti-entropy rounds that must complete during a wait, after the last action.
pub(crate) const ROUNDS: f64 = 2.0;

/// Schema U of SCENARIOS.md.
pub(crate) const U: &str = "type Users { Name: String  Age: Int }";

/// How a node is started.
#[derive(Clone, Debug)]
pub(crate) struct Opts {
    /// `--hot-docs`.
    pub(crate) hot_docs: usize,
    /// `--anti-entropy-interval` in seconds.
    pub(crate) anti_entropy: u64,
    /// The host of the `--p2paddr` listen address (`127.0.0.1`, or the seed's `0.0.0.0`).
    pub(crate) p2p_host: String,
    /// Whether to pass `--no-mdns` (always, unless a test says otherwise).
    pub(crate) no_mdns: bool,
    /// Flags added after the harness's own.
    pub(crate) extra: Vec<String>,
    /// The bearer token the harness's requests carry (pass `--api-token` in `extra` too).
    pub(crate) token: Option<String>,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            hot_docs: 0,
            anti_entropy: 2,
            p2p_host: "127.0.0.1".into(),
            no_mdns: true,
            extra: Vec::new(),
            token: None,
        }
    }
}

impl Opts {
    /// The defaults plus `flags`.
    pub(crate) fn with(flags: &[&str]) -> Opts {
        Opts {
            extra: flags.iter().map(|s| s.to_string()).collect(),
            ..Opts::default()
        }
    }
}

/// Ports handed out by this test process (tests run in parallel threads).
static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port that is free now for TCP and UDP on every interface, outside the kernel's ephemeral
/// range (so an outgoing connection cannot take it while its node is stopped), and not handed
/// out before by this process.
pub(crate) fn free_port() -> u16 {
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().wrapping_mul(2_654_435_761);
    // 20000..32000: below Linux's default ephemeral range (32768..60999).
    for i in 0..12_000u32 {
        let port = 20_000 + ((seed.wrapping_add(i.wrapping_mul(7919))) % 12_000) as u16;
        if taken.contains(&port) {
            continue;
        }
        let free = TcpListener::bind(("0.0.0.0", port)).is_ok()
            && UdpSocket::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Polls `f` every [`POLL`] until it answers `Some`, or panics after `deadline` with `what`
/// and the last thing `seen` said.
pub(crate) fn poll<T>(
    deadline: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let end = Instant::now() + deadline;
    loop {
        match f() {
            Ok(v) => return v,
            Err(seen) => {
                if Instant::now() >= end {
                    panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}");
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// An HTTP answer: status and body.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error` member of an error answer.
    pub(crate) fn error(&self) -> String {
        match self.json().get("error").and_then(Value::as_str) {
            Some(e) => e.to_string(),
            None => panic!("no {{\"error\": …}} in {}", self.text()),
        }
    }
}

/// One `hypha` process and its root directory.
pub(crate) struct Node {
    pub(crate) name: String,
    dir: tempfile::TempDir,
    pub(crate) api_port: u16,
    pub(crate) p2p_port: u16,
    opts: Opts,
    child: Option<Child>,
    /// The peer ID (`None` with `--no-p2p`).
    pub(crate) peer_id: Option<String>,
    agent: ureq::Agent,
}

impl Node {
    /// Starts a node with the default flags.
    pub(crate) fn start(name: &str) -> Node {
        Node::start_with(name, Opts::default())
    }

    /// Starts a node with `opts`.
    pub(crate) fn start_with(name: &str, opts: Opts) -> Node {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hypha-e2e-{name}-"))
            .tempdir()
            .expect("temporary root directory");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut node = Node {
            name: name.to_string(),
            dir,
            api_port: free_port(),
            p2p_port: free_port(),
            opts,
            child: None,
            peer_id: None,
            agent,
        };
        node.spawn();
        node
    }

    /// The root directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file the node's output goes to.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// Everything the node printed, over all its runs.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The API's `host:port`.
    pub(crate) fn url(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    /// The flags `hypha start` is run with.
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "start".into(),
            "--rootdir".into(),
            self.dir.path().display().to_string(),
            "--url".into(),
            self.url(),
            "--p2paddr".into(),
            format!("/ip4/{}/tcp/{}", self.opts.p2p_host, self.p2p_port),
            "--hot-docs".into(),
            self.opts.hot_docs.to_string(),
            "--anti-entropy-interval".into(),
            self.opts.anti_entropy.to_string(),
        ];
        if self.opts.no_mdns {
            args.push("--no-mdns".into());
        }
        args.extend(self.opts.extra.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("log file");
        let mut command = Command::new(BIN);
        command
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        clean_env(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"));
        self.child = Some(child);
        let health = poll(READY, &format!("{} to answer /health", self.name), || {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited during start-up with {status}; its log:\n{}",
                    self.name,
                    self.log()
                );
            }
            match self.try_request("GET", "/health", None) {
                Ok(a) if a.status == 200 => Ok(a.json()),
                Ok(a) => Err(format!("{} {}", a.status, a.text())),
                Err(e) => Err(e),
            }
        });
        self.peer_id = health
            .get("peerId")
            .and_then(Value::as_str)
            .map(str::to_string);
    }

    /// The process ID, while it runs.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("the node is running").id()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit; returns its exit status.
    pub(crate) fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        signal(child.id(), Signal::SIGTERM);
        let name = self.name.clone();
        poll(
            DEADLINE,
            &format!("{name} to exit after SIGTERM"),
            || match child.try_wait() {
                Ok(Some(status)) => Ok(status),
                Ok(None) => Err("still running".into()),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// Starts the node again with the same root directory, ports and flags.
    pub(crate) fn start_again(&mut self) {
        self.spawn();
    }

    /// Stops (SIGTERM) and starts again; the stop must exit 0.
    pub(crate) fn restart(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM",
            self.name
        );
        self.spawn();
    }

    /// Kills the process with SIGKILL and reaps it.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The process may already be dead (killed by its PID): reaping is what matters.
            let _ = child.kill();
            child.wait().expect("reap");
        }
    }

    /// This node's direct address with its peer ID: `/ip4/127.0.0.1/tcp/P/p2p/ID`.
    pub(crate) fn maddr(&self) -> String {
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", self.p2p_port, self.id())
    }

    /// The peer ID.
    pub(crate) fn id(&self) -> &str {
        self.peer_id
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no peer ID", self.name))
    }

    // ---- HTTP ----

    /// One request; `Err` only when there is no HTTP answer.
    pub(crate) fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        self.try_request_with(method, path, body, self.opts.token.as_deref())
    }

    /// One request with the given bearer token (or none).
    pub(crate) fn try_request_with(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        token: Option<&str>,
    ) -> Result<Answer, String> {
        let url = format!("http://{}/api/v0{path}", self.url());
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", None) => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            ("DELETE", None) => {
                let mut r = self.agent.delete(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            (method, body) => {
                let mut r = match method {
                    "POST" => self.agent.post(&url),
                    "PATCH" => self.agent.patch(&url),
                    "PUT" => self.agent.put(&url),
                    "DELETE" => self.agent.delete(&url).force_send_body(),
                    other => panic!("unsupported method {other}"),
                };
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                let (content_type, bytes) = body.unwrap_or(("application/json", Vec::new()));
                r.header("Content-Type", content_type).send(&bytes[..])
            }
        };
        let mut response = result.map_err(|e| format!("{method} {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
        Ok(Answer { status, body })
    }

    /// One request that must get an HTTP answer.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Answer {
        self.try_request(method, path, body)
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", self.name))
    }

    /// A request with a JSON body (or none) that must succeed; its JSON answer.
    pub(crate) fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let a = self.request(
            method,
            path,
            body.map(|b| ("application/json", b.to_string().into_bytes())),
        );
        assert!(
            (200..300).contains(&a.status),
            "{}: {method} {path} answered {}: {}",
            self.name,
            a.status,
            a.text()
        );
        if a.body.is_empty() {
            Value::Null
        } else {
            a.json()
        }
    }

    /// A request with a JSON body that must fail; the answer.
    pub(crate) fn fails(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let a = self.request(
            method,
            path,
            body.map(|b| ("application/json", b.to_string().into_bytes())),
        );
        assert!(
            a.status >= 400,
            "{}: {method} {path} should have failed but answered {}: {}",
            self.name,
            a.status,
            a.text()
        );
        a
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        self.ok("GET", path, None)
    }

    /// The metrics, by series name (labels included).
    pub(crate) fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let a = self.try_request("GET", "/metrics", None)?;
        if a.status != 200 {
            return Err(format!("/metrics answered {}: {}", a.status, a.text()));
        }
        Ok(a.text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// One metric that must exist.
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let m = self
            .metrics()
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        *m.get(name)
            .unwrap_or_else(|| panic!("{}: no metric {name}", self.name))
    }

    // ---- the CLI ----

    /// Runs `hypha client --url <this node> args…`.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        cli_at(&self.url(), self.opts.token.as_deref(), args)
    }

    /// Runs a client command that must exit 0; its stdout.
    pub(crate) fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "{}: `hypha client {}` exited with {}\nstdout: {}\nstderr: {}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a client command that must fail with a non-zero exit and exactly one line on
    /// stderr; that line.
    pub(crate) fn cli_fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        one_line_failure(
            &out,
            &format!("{}: `hypha client {}`", self.name, args.join(" ")),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "===== log of {} (API {}, p2p {}, peer {}) =====\n{}===== end of {} =====",
                self.name,
                self.api_port,
                self.p2p_port,
                self.peer_id.as_deref().unwrap_or("-"),
                self.log(),
                self.name
            );
        }
    }
}

/// Runs `hypha client --url <url> args…`, with `HYPHA_API_TOKEN` set to `token` if any.
pub(crate) fn cli_at(url: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command.arg("client").arg("--url").arg(url).args(args);
    clean_env(&mut command);
    if let Some(t) = token {
        command.env("HYPHA_API_TOKEN", t);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN} client: {e}"))
}

/// Asserts that a client run failed with a non-zero exit and one line on stderr; that line.
#[track_caller]
pub(crate) fn one_line_failure(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{what} should have failed; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.trim_end_matches('\n').lines().count(),
        1,
        "{what}: the error should be one line, stderr was:\n{stderr}"
    );
    stderr.trim_end().to_string()
}

/// Sends `signal` to the process `pid`.
pub(crate) fn signal(pid: u32, signal: Signal) {
    let raw = i32::try_from(pid).expect("a PID fits in i32");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal)
        .unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// Removes the environment that would change what `hypha` does.
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HYPHA_") {
            command.env_remove(&key);
        }
    }
    command.env_remove("RUST_LOG");
}

// ---- quiescence ----

/// SCENARIOS' `wait`: on every node the outbox and pending sets are empty and at least
/// [`ROUNDS`] anti-entropy rounds completed since the wait began.
pub(crate) fn wait(nodes: &[&Node]) {
    wait_allowing_outbox(nodes, &[]);
}

/// [`wait`], except that the outboxes of `retrying` may hold entries (pushes a target refused,
/// which the source keeps and retries).
pub(crate) fn wait_allowing_outbox(nodes: &[&Node], retrying: &[&Node]) {
    let rounds = |n: &Node| -> Result<f64, String> {
        let m = n.metrics()?;
        m.get("hypha_anti_entropy_rounds_total")
            .copied()
            .ok_or_else(|| format!("{}: no hypha_anti_entropy_rounds_total", n.name))
    };
    let start: Vec<f64> = nodes
        .iter()
        .map(|n| rounds(n).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    poll(QUIESCE, &format!("quiescence of {names:?}"), || {
        let mut seen = Vec::new();
        let mut quiet = true;
        for (node, start) in nodes.iter().zip(&start) {
            let m = node.metrics()?;
            let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            let (outbox, pending, r) = (
                get("hypha_store_outbox_entries"),
                get("hypha_store_pending_blocks"),
                get("hypha_anti_entropy_rounds_total"),
            );
            let outbox_ok = outbox == 0.0 || retrying.iter().any(|n| n.name == node.name);
            if !outbox_ok || pending != 0.0 || r < start + ROUNDS {
                quiet = false;
            }
            seen.push(format!(
                "{}: outbox {outbox}, pending {pending}, rounds {} since the wait began",
                node.name,
                r - start
            ));
        }
        if quiet { Ok(()) } else { Err(seen.join("; ")) }
    });
}

// ---- documents ----

/// Adds `sdl` to the node's schema.
pub(crate) fn schema(node: &Node, sdl: &str) {
    let a = node.request(
        "POST",
        "/schema",
        Some(("text/plain", sdl.as_bytes().to_vec())),
    );
    assert_eq!(
        a.status,
        200,
        "{}: adding the schema answered {}: {}",
        node.name,
        a.status,
        a.text()
    );
}

/// Creates a document; its docID.
pub(crate) fn create(node: &Node, collection: &str, doc: Value) -> String {
    let v = node.ok("POST", &format!("/collections/{collection}"), Some(doc));
    v["docID"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: create answered no docID: {v}", node.name))
        .to_string()
}

/// Creates a Users document {Name, Age}.
pub(crate) fn user(node: &Node, name: &str, age: i64) -> String {
    create(node, "Users", json!({"Name": name, "Age": age}))
}

/// Creates the same document on every node; checks that all get the same docID.
pub(crate) fn create_all(nodes: &[&Node], collection: &str, doc: Value) -> String {
    let ids: Vec<String> = nodes
        .iter()
        .map(|n| create(n, collection, doc.clone()))
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "the same document got different docIDs on the nodes: {ids:?}"
    );
    ids[0].clone()
}

/// Updates a document with a patch.
pub(crate) fn update(node: &Node, collection: &str, doc: &str, patch: Value) {
    node.ok(
        "PATCH",
        &format!("/collections/{collection}/documents/{doc}"),
        Some(patch),
    );
}

/// Sets a Users document's Age.
pub(crate) fn set_age(node: &Node, doc: &str, age: i64) {
    update(node, "Users", doc, json!({ "Age": age }));
}

/// Deletes a document.
pub(crate) fn delete(node: &Node, collection: &str, doc: &str) {
    node.ok(
        "DELETE",
        &format!("/collections/{collection}/documents/{doc}"),
        None,
    );
}

/// The documents of a collection (an unknown collection is an empty list).
pub(crate) fn documents(node: &Node, collection: &str, show_deleted: bool) -> Vec<Value> {
    let path = if show_deleted {
        format!("/collections/{collection}/documents?show_deleted=true")
    } else {
        format!("/collections/{collection}/documents")
    };
    let a = node.request("GET", &path, None);
    match (a.status, a.json()) {
        (200, Value::Array(docs)) => docs,
        (status, v) => panic!("{}: GET {path} answered {status}: {v}", node.name),
    }
}

/// The values of `field` in a collection, sorted (a multiset).
pub(crate) fn values(node: &Node, collection: &str, field: &str) -> Vec<Value> {
    let mut v: Vec<Value> = documents(node, collection, false)
        .iter()
        .map(|d| d.get(field).cloned().unwrap_or(Value::Null))
        .collect();
    v.sort_by_key(|a| a.to_string());
    v
}

/// The Ages of Users, sorted.
pub(crate) fn ages(node: &Node) -> Vec<i64> {
    let mut v: Vec<i64> = documents(node, "Users", false)
        .iter()
        .map(|d| {
            d["Age"]
                .as_i64()
                .unwrap_or_else(|| panic!("{}: a Users document without Age: {d}", node.name))
        })
        .collect();
    v.sort_unstable();
    v
}

/// The string values of `field` in a collection, sorted.
pub(crate) fn strings(node: &Node, collection: &str, field: &str) -> Vec<String> {
    let mut v: Vec<String> = documents(node, collection, false)
        .iter()
        .map(|d| {
            d[field]
                .as_str()
                .unwrap_or_else(|| {
                    panic!("{}: {collection} document without {field}: {d}", node.name)
                })
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// Asserts a node's sorted Users Ages.
#[track_caller]
pub(crate) fn assert_ages(node: &Node, expected: &[i64]) {
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(ages(node), expected, "{}: Users Ages", node.name);
}

/// Asserts a node's sorted values of a string field.
#[track_caller]
pub(crate) fn assert_strings(node: &Node, collection: &str, field: &str, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(
        strings(node, collection, field),
        expected,
        "{}: {collection} {field} values",
        node.name
    );
}

// ---- peer-to-peer ----

/// `connect(a, b)`: `a` dials `b`; returns once both see each other as connected.
pub(crate) fn connect(a: &Node, b: &Node) {
    a.ok("POST", "/p2p/peers", Some(json!({ "address": b.maddr() })));
    await_connected(a, b);
}

/// Polls until `a` and `b` list each other as connected peers.
pub(crate) fn await_connected(a: &Node, b: &Node) {
    for (x, y) in [(a, b), (b, a)] {
        poll(
            DEADLINE,
            &format!(
                "{} to list {} ({}) as a connected peer",
                x.name,
                y.name,
                y.id()
            ),
            || {
                let peers = peer_ids(x)?;
                if peers.iter().any(|p| p == y.id()) {
                    Ok(())
                } else {
                    Err(format!("{} peers: {peers:?}", x.name))
                }
            },
        );
    }
}

/// The peer IDs a node lists as connected.
pub(crate) fn peer_ids(node: &Node) -> Result<Vec<String>, String> {
    let a = node.try_request("GET", "/p2p/peers", None)?;
    if a.status != 200 {
        return Err(format!(
            "GET /p2p/peers answered {}: {}",
            a.status,
            a.text()
        ));
    }
    let v = a.json();
    let list = v.as_array().cloned().unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|p| {
            p.as_str()
                .map(str::to_string)
                .or_else(|| p.get("id").and_then(Value::as_str).map(str::to_string))
                .or_else(|| p.get("ID").and_then(Value::as_str).map(str::to_string))
        })
        .collect())
}

/// The node subscribes to collections.
pub(crate) fn follow_collections(node: &Node, names: &[&str]) {
    node.ok("POST", "/p2p/collections", Some(json!(names)));
}

/// The node subscribes to documents.
pub(crate) fn follow_docs(node: &Node, docs: &[&str]) {
    node.ok("POST", "/p2p/documents", Some(json!(docs)));
}

/// A replicator `from` → `to` for collections.
pub(crate) fn replicator(from: &Node, to: &Node, collections: &[&str]) {
    from.ok(
        "POST",
        "/p2p/replicators",
        Some(json!({ "address": to.maddr(), "collections": collections })),
    );
}

/// Asserts two values are equal, naming the node.
#[track_caller]
pub(crate) fn assert_on<T: PartialEq + Debug>(node: &Node, what: &str, seen: T, expected: T) {
    assert_eq!(seen, expected, "{}: {what}", node.name);
}

/// A line of the seed's log shape: `timestamp, LEVEL, module, Message, {json}`.
pub(crate) fn log_lines<'a>(log: &'a str, module: &str, message: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains(&format!(", {module}, {message}")))
        .collect()
}

// ---- hostile input ----

/// The resident set size of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

impl Node {
    /// The node process's resident set size in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// A metric, 0 when the node does not export it (yet).
    pub(crate) fn metric_or_zero(&self, name: &str) -> f64 {
        let m = self
            .metrics()
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        m.get(name).copied().unwrap_or(0.0)
    }

    /// `hypha_peer_violations_total` by `protocol/reason`.
    pub(crate) fn violations(&self) -> BTreeMap<String, f64> {
        let m = self
            .metrics()
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        m.iter()
            .filter_map(|(k, v)| {
                let labels = k.strip_prefix("hypha_peer_violations_total{")?;
                let labels = labels.strip_suffix('}')?;
                let mut protocol = "";
                let mut reason = "";
                for pair in labels.split(',') {
                    let (key, value) = pair.split_once('=')?;
                    let value = value.trim_matches('"');
                    match key {
                        "protocol" => protocol = value,
                        "reason" => reason = value,
                        _ => {}
                    }
                }
                Some((format!("{protocol}/{reason}"), *v))
            })
            .collect()
    }

    /// The sum of the violations of `reason`, whatever the protocol.
    pub(crate) fn violations_of_reason(&self, reason: &str) -> f64 {
        self.violations()
            .iter()
            .filter(|(k, _)| k.split('/').nth(1) == Some(reason))
            .map(|(_, v)| v)
            .sum()
    }

    /// The sum of the violations whose `protocol/reason` starts with `prefix`.
    pub(crate) fn violations_of(&self, prefix: &str) -> f64 {
        self.violations()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}
