//! Scenario files: SCENARIOS.md's action language in TOML, parsed into steps and run.
//!
//! ```toml
//! name = "A1"
//! description = "A new document does not reach a peer that follows nothing."
//! nodes = 2                        # or one [[node]] table per host
//! seed = 1                         # the default seed (`--seed` overrides it)
//!
//! [schemas]                        # SDL by name; `schema = "U"` uses it
//! U = "type Users { Name: String  Age: Int }"
//!
//! [[step]]
//! schema = "U"
//! on = "all"                       # a host, a list of hosts, or "all"
//!
//! [[step]]
//! create = "Users"
//! on = "all"
//! doc = { Name = "Shahzad", Age = 300 }
//!
//! [[step]]
//! connect = [1, 0]
//!
//! [[step]]
//! wait = true
//!
//! [[step]]
//! expect = "Users"
//! on = 1
//! field = "Age"
//! values = [300]
//! ```
//!
//! # Actions (one per `[[step]]`)
//!
//! | key | with | does |
//! |---|---|---|
//! | `schema = "U"` or SDL | `on` | adds a schema |
//! | `create = "Coll"` | `on`, `doc = {…}`, `as = "label"` | creates a document (on several hosts: independently, same docID) |
//! | `update = "doc0"` | `on`, `set = {…}` or `set = [{…}, …]` | updates a document (one commit per table) |
//! | `delete = "doc0"` | `on` | deletes a document |
//! | `writes = N` | `on`, `collection`, `docs = K`, `field`, `every = "30s"` | N updates spread over K documents it creates, one every `every` |
//! | `connect = [a, b]` | | a dials b and keeps it connected |
//! | `subscribe = "Coll"` or a list | `on` | follows collections (all or none) |
//! | `subscribe_doc = "doc0"` or a list | `on` | follows documents |
//! | `sync_docs = ["doc0", …]` | `on` | fetches documents once without following |
//! | `replicator = [from, to]` | `collections = […]`, `documents = […]` | sets a replicator (default scope: every collection `from` has) |
//! | `delete_replicator = [from, to]` | | deletes it |
//! | `concurrently = [{…}, …]` | | isolates every host, runs the inner steps, heals |
//! | `partition = [[…], […]]` | `mode = "hold" \| "drop" \| "oneway"` | partitions two groups (default hold) |
//! | `heal = true` | | ends every partition |
//! | `crash`, `stop`, `start`, `restart` | a host, a list, or `"all"` | crash loses unsynced persists; stop and restart are clean |
//! | `wait = true` | | quiescence (bounded: a run that does not settle fails) |
//! | `run = "24h"` | | lets virtual time pass |
//! | `expect = "Coll"` | `on`, `field` + `values = […]`, or `docs = [{…}]`, `deleted = true` | compares values or listings as sets |
//! | `expect_same = "Coll"` | `field` | every running host has the same values |
//! | `expect_event = "Name"` | `on`, `contains = "…"` | some coordinator event's debug text names it |
//! | `expect_connection = [a, b]` | `path = "direct" \| "relayed"` | a is connected to b that way |
//! | `expect_outbox = [from, to]` | `max = N` | from's outbox for to holds at most N entries |
//!
//! Any action may carry `error = "text"`: it must then fail with an error containing the
//! text. `docN` names the N-th distinct document created in the run; `as` gives a name too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hypha_crdt::DocId;
use serde::Deserialize;
use serde_json::Value;

use crate::net::{HostSpec, Nat};
use crate::world::{Options, PartitionMode, World};

/// A scenario that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ScenarioError {
    /// The file (or built-in name).
    pub file: String,
    /// The line (1-based; 0 when unknown).
    pub line: usize,
    /// What is wrong, naming the field.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    description: String,
    nodes: Option<usize>,
    #[serde(default)]
    node: Vec<NodeSpec>,
    #[serde(default = "one")]
    seed: u64,
    #[serde(default)]
    schemas: BTreeMap<String, String>,
    #[serde(default)]
    options: FileOptions,
    #[serde(default)]
    step: Vec<toml::Spanned<toml::Table>>,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    #[serde(default)]
    nat: Option<String>,
    #[serde(default)]
    relay: bool,
    #[serde(default)]
    hot_docs: usize,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    anti_entropy: Option<String>,
    tick: Option<String>,
    latency: Option<Vec<String>>,
    fsync: Option<Vec<String>>,
    wait_budget: Option<String>,
    max_outbox: Option<u64>,
}

/// A parsed scenario: hosts, options and steps.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name.
    pub name: String,
    /// What it shows.
    pub description: String,
    /// The seed it runs with unless told otherwise.
    pub seed: u64,
    /// The hosts.
    pub hosts: Vec<HostSpec>,
    steps: Vec<Step>,
    anti_entropy: Option<Duration>,
    tick: Option<Duration>,
    latency: Option<(Duration, Duration)>,
    fsync: Option<(Duration, Duration)>,
    wait_budget: Option<Duration>,
    max_outbox: Option<u64>,
}

#[derive(Debug, Clone)]
struct Step {
    line: usize,
    action: Action,
    error: Option<String>,
}

#[derive(Debug, Clone)]
enum Nodes {
    All,
    Some(Vec<u16>),
}

#[derive(Debug, Clone)]
enum Action {
    Schema(Nodes, String),
    Create(Nodes, String, Value, Option<String>),
    Update(Nodes, String, Vec<Value>),
    Delete(Nodes, String),
    Writes {
        on: u16,
        collection: String,
        count: u64,
        docs: u64,
        field: String,
        every: Duration,
    },
    Connect(u16, u16),
    Subscribe(Nodes, Vec<String>),
    SubscribeDoc(Nodes, Vec<String>),
    SyncDocs(Nodes, Vec<String>),
    Replicator(u16, u16, Option<Vec<String>>, Vec<String>),
    DeleteReplicator(u16, u16),
    Concurrently(Vec<Step>),
    Partition(Vec<u16>, Vec<u16>, PartitionMode),
    Heal,
    Crash(Nodes),
    Stop(Nodes),
    Start(Nodes),
    Restart(Nodes),
    Wait,
    Run(Duration),
    Expect {
        on: Nodes,
        collection: String,
        field: Option<String>,
        values: Option<Vec<Value>>,
        docs: Option<Vec<Value>>,
        deleted: bool,
    },
    ExpectSame(String, String),
    ExpectEvent(Nodes, String, Option<String>),
    ExpectConnection(u16, u16, Option<bool>),
    ExpectOutbox(u16, u16, u64),
}

const ACTIONS: &[&str] = &[
    "schema",
    "create",
    "update",
    "delete",
    "writes",
    "connect",
    "subscribe",
    "subscribe_doc",
    "sync_docs",
    "replicator",
    "delete_replicator",
    "concurrently",
    "partition",
    "heal",
    "crash",
    "stop",
    "start",
    "restart",
    "wait",
    "run",
    "expect",
    "expect_same",
    "expect_event",
    "expect_connection",
    "expect_outbox",
];

/// Parses a duration like `500ms`, `15s`, `10m`, `24h`.
///
/// # Errors
/// Text naming what is wrong.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit (ms, s, m, h)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    }
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    nodes: usize,
    schemas: &'a BTreeMap<String, String>,
}

impl Parser<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError {
            file: self.file.to_owned(),
            line,
            message: message.into(),
        }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn host(&self, line: usize, field: &str, v: &toml::Value) -> Result<u16, ScenarioError> {
        let n = v.as_integer().ok_or_else(|| {
            self.err(
                line,
                format!("`{field}`: a host number expected, found {v}"),
            )
        })?;
        if n < 0 || n as usize >= self.nodes {
            return Err(self.err(
                line,
                format!(
                    "`{field}`: host {n} does not exist (hosts are 0..{})",
                    self.nodes
                ),
            ));
        }
        Ok(n as u16)
    }

    fn nodes(
        &self,
        line: usize,
        field: &str,
        v: Option<&toml::Value>,
    ) -> Result<Nodes, ScenarioError> {
        match v {
            None => Err(self.err(
                line,
                format!("`{field}` is missing (a host, a list, or \"all\")"),
            )),
            Some(toml::Value::String(s)) if s == "all" => Ok(Nodes::All),
            Some(toml::Value::Array(a)) => Ok(Nodes::Some(
                a.iter()
                    .map(|x| self.host(line, field, x))
                    .collect::<Result<_, _>>()?,
            )),
            Some(x) => Ok(Nodes::Some(vec![self.host(line, field, x)?])),
        }
    }

    fn pair(&self, line: usize, field: &str, v: &toml::Value) -> Result<(u16, u16), ScenarioError> {
        match v.as_array().map(Vec::as_slice) {
            Some([a, b]) => Ok((self.host(line, field, a)?, self.host(line, field, b)?)),
            _ => Err(self.err(line, format!("`{field}`: two hosts expected, like [0, 1]"))),
        }
    }

    fn string(
        &self,
        line: usize,
        field: &str,
        v: Option<&toml::Value>,
    ) -> Result<String, ScenarioError> {
        v.and_then(toml::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| self.err(line, format!("`{field}`: a string expected")))
    }

    fn strings(
        &self,
        line: usize,
        field: &str,
        v: Option<&toml::Value>,
    ) -> Result<Vec<String>, ScenarioError> {
        match v {
            Some(toml::Value::String(s)) => Ok(vec![s.clone()]),
            Some(toml::Value::Array(a)) => a
                .iter()
                .map(|x| self.string(line, field, Some(x)))
                .collect(),
            _ => Err(self.err(
                line,
                format!("`{field}`: a string or a list of strings expected"),
            )),
        }
    }

    fn duration(
        &self,
        line: usize,
        field: &str,
        v: Option<&toml::Value>,
    ) -> Result<Duration, ScenarioError> {
        let s = self.string(line, field, v)?;
        parse_duration(&s).map_err(|e| self.err(line, format!("`{field}`: {e}")))
    }

    fn json(v: &toml::Value) -> Value {
        serde_json::to_value(v).unwrap_or(Value::Null)
    }

    fn step(&self, line: usize, table: &toml::Table) -> Result<Step, ScenarioError> {
        let actions: Vec<&str> = table
            .keys()
            .map(String::as_str)
            .filter(|k| ACTIONS.contains(k))
            .collect();
        let [action] = actions.as_slice() else {
            let keys: Vec<&String> = table.keys().collect();
            return Err(self.err(
                line,
                format!(
                    "a step needs exactly one action (one of {}), found keys {keys:?}",
                    ACTIONS.join(", ")
                ),
            ));
        };
        let allowed: &[&str] = match *action {
            "schema" | "delete" | "subscribe" | "subscribe_doc" | "sync_docs" => &["on"],
            "create" => &["on", "doc", "as"],
            "update" => &["on", "set"],
            "writes" => &["on", "collection", "docs", "field", "every"],
            "replicator" => &["collections", "documents"],
            "partition" => &["mode"],
            "expect" => &["on", "field", "values", "docs", "deleted"],
            "expect_same" => &["field"],
            "expect_event" => &["on", "contains"],
            "expect_connection" => &["path"],
            "expect_outbox" => &["max"],
            _ => &[],
        };
        for k in table.keys() {
            if k != action && k != "error" && !allowed.contains(&k.as_str()) {
                return Err(self.err(line, format!("`{k}` is not a field of `{action}`")));
            }
        }
        let v = &table[*action];
        let get = |k: &str| table.get(k);
        let a = match *action {
            "schema" => {
                let s = self.string(line, "schema", Some(v))?;
                let sdl = self.schemas.get(&s).cloned().unwrap_or(s);
                Action::Schema(self.nodes(line, "on", get("on"))?, sdl)
            }
            "create" => {
                let doc = get("doc").ok_or_else(|| self.err(line, "`doc` is missing"))?;
                if !doc.is_table() {
                    return Err(self.err(line, "`doc`: a table expected, like { Name = \"John\" }"));
                }
                let label = get("as")
                    .map(|x| self.string(line, "as", Some(x)))
                    .transpose()?;
                Action::Create(
                    self.nodes(line, "on", get("on"))?,
                    self.string(line, "create", Some(v))?,
                    Self::json(doc),
                    label,
                )
            }
            "update" => {
                let set = get("set").ok_or_else(|| self.err(line, "`set` is missing"))?;
                let patches = match set {
                    toml::Value::Table(_) => vec![Self::json(set)],
                    toml::Value::Array(a) if a.iter().all(toml::Value::is_table) => {
                        a.iter().map(Self::json).collect()
                    }
                    _ => return Err(self.err(line, "`set`: a table or a list of tables expected")),
                };
                Action::Update(
                    self.nodes(line, "on", get("on"))?,
                    self.string(line, "update", Some(v))?,
                    patches,
                )
            }
            "delete" => Action::Delete(
                self.nodes(line, "on", get("on"))?,
                self.string(line, "delete", Some(v))?,
            ),
            "writes" => {
                let count = v
                    .as_integer()
                    .filter(|n| (1..=1_000_000).contains(n))
                    .ok_or_else(|| self.err(line, "`writes`: a count in 1..=1,000,000 expected"))?;
                let docs = get("docs")
                    .map(|d| d.as_integer().filter(|n| (1..=10_000).contains(n)))
                    .unwrap_or(Some(1))
                    .ok_or_else(|| self.err(line, "`docs`: a count in 1..=10,000 expected"))?;
                let Nodes::Some(on) = self.nodes(line, "on", get("on"))? else {
                    return Err(self.err(line, "`on`: one host expected"));
                };
                Action::Writes {
                    on: on[0],
                    collection: self.string(line, "collection", get("collection"))?,
                    count: count as u64,
                    docs: docs as u64,
                    field: self.string(line, "field", get("field"))?,
                    every: match get("every") {
                        Some(e) => self.duration(line, "every", Some(e))?,
                        None => Duration::ZERO,
                    },
                }
            }
            "connect" => {
                let (a, b) = self.pair(line, "connect", v)?;
                Action::Connect(a, b)
            }
            "subscribe" => Action::Subscribe(
                self.nodes(line, "on", get("on"))?,
                self.strings(line, "subscribe", Some(v))?,
            ),
            "subscribe_doc" => Action::SubscribeDoc(
                self.nodes(line, "on", get("on"))?,
                self.strings(line, "subscribe_doc", Some(v))?,
            ),
            "sync_docs" => Action::SyncDocs(
                self.nodes(line, "on", get("on"))?,
                self.strings(line, "sync_docs", Some(v))?,
            ),
            "replicator" => {
                let (a, b) = self.pair(line, "replicator", v)?;
                let colls = get("collections")
                    .map(|c| self.strings(line, "collections", Some(c)))
                    .transpose()?;
                let docs = get("documents")
                    .map(|d| self.strings(line, "documents", Some(d)))
                    .transpose()?
                    .unwrap_or_default();
                Action::Replicator(a, b, colls, docs)
            }
            "delete_replicator" => {
                let (a, b) = self.pair(line, "delete_replicator", v)?;
                Action::DeleteReplicator(a, b)
            }
            "concurrently" => {
                let toml::Value::Array(inner) = v else {
                    return Err(self.err(line, "`concurrently`: a list of steps expected"));
                };
                let mut steps = Vec::new();
                for s in inner {
                    let t = s.as_table().ok_or_else(|| {
                        self.err(line, "`concurrently`: each entry must be a step table")
                    })?;
                    steps.push(self.step(line, t)?);
                }
                Action::Concurrently(steps)
            }
            "partition" => {
                let groups = v.as_array().filter(|a| a.len() == 2).ok_or_else(|| {
                    self.err(line, "`partition`: two groups expected, like [[0], [1, 2]]")
                })?;
                let group = |g: &toml::Value| -> Result<Vec<u16>, ScenarioError> {
                    match self.nodes(line, "partition", Some(g))? {
                        Nodes::Some(v) => Ok(v),
                        Nodes::All => {
                            Err(self.err(line, "`partition`: list the hosts of each group"))
                        }
                    }
                };
                let mode = match get("mode")
                    .map(|m| self.string(line, "mode", Some(m)))
                    .transpose()?
                    .as_deref()
                {
                    None | Some("hold") => PartitionMode::Hold,
                    Some("drop") => PartitionMode::Drop,
                    Some("oneway") => PartitionMode::OneWay,
                    Some(other) => {
                        return Err(self.err(
                            line,
                            format!("`mode`: `{other}` is not hold, drop or oneway"),
                        ));
                    }
                };
                Action::Partition(group(&groups[0])?, group(&groups[1])?, mode)
            }
            "heal" => Action::Heal,
            "crash" => Action::Crash(self.nodes(line, "crash", Some(v))?),
            "stop" => Action::Stop(self.nodes(line, "stop", Some(v))?),
            "start" => Action::Start(self.nodes(line, "start", Some(v))?),
            "restart" => Action::Restart(self.nodes(line, "restart", Some(v))?),
            "wait" => Action::Wait,
            "run" => Action::Run(self.duration(line, "run", Some(v))?),
            "expect" => {
                let values = get("values")
                    .map(|x| x.as_array().map(|a| a.iter().map(Self::json).collect()))
                    .map(|o| o.ok_or_else(|| self.err(line, "`values`: a list expected")))
                    .transpose()?;
                let docs = get("docs")
                    .map(|x| x.as_array().map(|a| a.iter().map(Self::json).collect()))
                    .map(|o| o.ok_or_else(|| self.err(line, "`docs`: a list of tables expected")))
                    .transpose()?;
                let field = get("field")
                    .map(|f| self.string(line, "field", Some(f)))
                    .transpose()?;
                if values.is_some() == docs.is_some() || (values.is_some() && field.is_none()) {
                    return Err(self.err(line, "`expect` needs `field` with `values`, or `docs`"));
                }
                Action::Expect {
                    on: self.nodes(line, "on", get("on"))?,
                    collection: self.string(line, "expect", Some(v))?,
                    field,
                    values,
                    docs,
                    deleted: get("deleted")
                        .and_then(toml::Value::as_bool)
                        .unwrap_or(false),
                }
            }
            "expect_same" => Action::ExpectSame(
                self.string(line, "expect_same", Some(v))?,
                self.string(line, "field", get("field"))?,
            ),
            "expect_event" => Action::ExpectEvent(
                self.nodes(line, "on", get("on"))?,
                self.string(line, "expect_event", Some(v))?,
                get("contains")
                    .map(|c| self.string(line, "contains", Some(c)))
                    .transpose()?,
            ),
            "expect_connection" => {
                let (a, b) = self.pair(line, "expect_connection", v)?;
                let path = match get("path")
                    .map(|p| self.string(line, "path", Some(p)))
                    .transpose()?
                    .as_deref()
                {
                    None => None,
                    Some("direct") => Some(true),
                    Some("relayed") => Some(false),
                    Some(other) => {
                        return Err(
                            self.err(line, format!("`path`: `{other}` is not direct or relayed"))
                        );
                    }
                };
                Action::ExpectConnection(a, b, path)
            }
            "expect_outbox" => {
                let (a, b) = self.pair(line, "expect_outbox", v)?;
                let max = get("max")
                    .and_then(toml::Value::as_integer)
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| self.err(line, "`max`: a count expected"))?;
                Action::ExpectOutbox(a, b, max as u64)
            }
            other => return Err(self.err(line, format!("unknown action `{other}`"))),
        };
        let error = get("error")
            .map(|e| self.string(line, "error", Some(e)))
            .transpose()?;
        Ok(Step {
            line,
            action: a,
            error,
        })
    }
}

impl Scenario {
    /// Parses scenario text; `file` names it in errors.
    ///
    /// # Errors
    /// [`ScenarioError`] naming the line and field at fault.
    pub fn parse(file: &str, text: &str) -> Result<Scenario, ScenarioError> {
        let f: File = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| {
                text[..s.start.min(text.len())].lines().count().max(1)
            });
            ScenarioError {
                file: file.to_owned(),
                line,
                message: e.message().to_owned(),
            }
        })?;
        let nodes = f.nodes.unwrap_or(f.node.len());
        if !(1..=64).contains(&nodes) {
            return Err(ScenarioError {
                file: file.to_owned(),
                line: 0,
                message: format!("`nodes`: 1..=64 hosts expected, found {nodes}"),
            });
        }
        if !f.node.is_empty() && f.node.len() != nodes {
            return Err(ScenarioError {
                file: file.to_owned(),
                line: 0,
                message: format!("`nodes` = {nodes} but {} [[node]] tables", f.node.len()),
            });
        }
        let mut hosts = Vec::new();
        for (i, n) in f.node.iter().enumerate() {
            let nat = match n.nat.as_deref() {
                None | Some("public") => Nat::Public,
                Some("cone") => Nat::Cone,
                Some("symmetric") => Nat::Symmetric,
                Some(other) => {
                    return Err(ScenarioError {
                        file: file.to_owned(),
                        line: 0,
                        message: format!(
                            "node {i}: `nat`: `{other}` is not public, cone or symmetric"
                        ),
                    });
                }
            };
            hosts.push(HostSpec {
                nat,
                relay: n.relay,
                hot_docs: n.hot_docs,
            });
        }
        hosts.resize(nodes, HostSpec::default());
        let p = Parser {
            file,
            text,
            nodes,
            schemas: &f.schemas,
        };
        let mut steps = Vec::new();
        for s in &f.step {
            let line = p.line_of(s.span().start);
            steps.push(p.step(line, s.get_ref())?);
        }
        let o = &f.options;
        let dur = |field: &str, v: &Option<String>| -> Result<Option<Duration>, ScenarioError> {
            v.as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| p.err(0, format!("options.{field}: {e}")))
        };
        let range = |field: &str,
                     v: &Option<Vec<String>>|
         -> Result<Option<(Duration, Duration)>, ScenarioError> {
            match v.as_deref() {
                None => Ok(None),
                Some([a, b]) => {
                    let a =
                        parse_duration(a).map_err(|e| p.err(0, format!("options.{field}: {e}")))?;
                    let b =
                        parse_duration(b).map_err(|e| p.err(0, format!("options.{field}: {e}")))?;
                    if a > b {
                        return Err(p.err(
                            0,
                            format!("options.{field}: the lower bound is above the upper"),
                        ));
                    }
                    Ok(Some((a, b)))
                }
                Some(_) => Err(p.err(
                    0,
                    format!("options.{field}: two durations expected, like [\"1ms\", \"10ms\"]"),
                )),
            }
        };
        Ok(Scenario {
            name: f.name,
            description: f.description,
            seed: f.seed,
            hosts,
            steps,
            anti_entropy: dur("anti_entropy", &o.anti_entropy)?,
            tick: dur("tick", &o.tick)?,
            latency: range("latency", &o.latency)?,
            fsync: range("fsync", &o.fsync)?,
            wait_budget: dur("wait_budget", &o.wait_budget)?,
            max_outbox: o.max_outbox,
        })
    }

    /// The options this scenario runs with under `seed`.
    pub fn options(&self, seed: u64) -> Options {
        let mut o = Options::seeded(seed, self.hosts.len());
        o.hosts = self.hosts.clone();
        if let Some(d) = self.anti_entropy {
            o.anti_entropy = d;
        }
        if let Some(d) = self.tick {
            o.tick = d;
        }
        if let Some(d) = self.latency {
            o.latency = d;
        }
        if let Some(d) = self.fsync {
            o.fsync = d;
        }
        if let Some(d) = self.wait_budget {
            o.wait_budget = d;
        }
        if let Some(m) = self.max_outbox {
            o.max_outbox_per_peer = m;
        }
        o
    }

    /// Runs the scenario in a world built from `options`.
    pub fn run(&self, options: Options) -> Outcome {
        #[allow(clippy::disallowed_methods)] // Wall time for the report only.
        let wall = std::time::Instant::now();
        let mut w = World::new(options);
        let mut r = Runner {
            docs: Vec::new(),
            labels: BTreeMap::new(),
            failures: Vec::new(),
            last_wait: None,
        };
        for step in &self.steps {
            r.step(&mut w, step);
            w.check_durable();
            if r.failures.len() > 20 {
                break;
            }
        }
        // The final check; what it finds joins the violations found along the way.
        w.check();
        let mut failures = r.failures;
        failures.extend(w.violations().iter().map(|v| format!("checker: {v}")));
        let traffic = w.traffic();
        let (head_sync, backfill) = w.round_trips();
        Outcome {
            name: self.name.clone(),
            seed: w.options().seed,
            passed: failures.is_empty(),
            failures,
            simulated: w.elapsed(),
            converge: r.last_wait,
            messages: traffic.messages,
            bytes: traffic.bytes,
            frames: traffic.frames,
            gossip: traffic.gossip,
            head_sync_sessions: head_sync,
            backfill_requests: backfill,
            punches: w.punches(),
            wall: wall.elapsed(),
            log_hash: w.log().hash(),
            log: w.log().tail(),
        }
    }
}

/// What a scenario run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The scenario.
    pub name: String,
    /// The seed.
    pub seed: u64,
    /// Every expectation met, no checker violated.
    pub passed: bool,
    /// What failed: expectations (with their line), errors, checker violations.
    pub failures: Vec<String>,
    /// Virtual time of the whole run.
    pub simulated: Duration,
    /// Time to converge: from the start of the last wait to the last document change on any
    /// host before it was quiescent (zero when nothing changed; quiescence itself also waits
    /// for an anti-entropy round).
    pub converge: Option<Duration>,
    /// Records sent.
    pub messages: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Stream-protocol frames sent: backfill, replicator, head exchange.
    pub frames: [u64; 3],
    /// Gossip messages sent (hop by hop).
    pub gossip: u64,
    /// Head-exchange sessions (running coordinators, since their last start).
    pub head_sync_sessions: u64,
    /// Backfill requests (running coordinators, since their last start).
    pub backfill_requests: u64,
    /// Hole punches (direct, stayed relayed).
    pub punches: (u64, u64),
    /// Wall time.
    pub wall: Duration,
    /// The event log's hash.
    pub log_hash: u64,
    /// The event log's tail (all of it with tracing on).
    pub log: Vec<String>,
}

struct Runner {
    docs: Vec<DocId>,
    labels: BTreeMap<String, DocId>,
    failures: Vec<String>,
    last_wait: Option<Duration>,
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(Value::to_string);
    v
}

impl Runner {
    fn hosts(w: &World, n: &Nodes) -> Vec<u16> {
        match n {
            Nodes::All => w.ids().collect(),
            Nodes::Some(v) => v.clone(),
        }
    }

    fn doc(&self, name: &str) -> Result<DocId, String> {
        if let Some(d) = self.labels.get(name) {
            return Ok(*d);
        }
        if let Some(n) = name
            .strip_prefix("doc")
            .and_then(|n| n.parse::<usize>().ok())
        {
            return self.docs.get(n).copied().ok_or_else(|| {
                format!("`{name}`: only {} documents were created", self.docs.len())
            });
        }
        name.parse::<DocId>()
            .map_err(|e| format!("`{name}` is not a document name nor a docID: {e}"))
    }

    fn created(&mut self, d: DocId) {
        if !self.docs.contains(&d) {
            self.docs.push(d);
        }
    }

    fn step(&mut self, w: &mut World, step: &Step) {
        w.note(format_args!("line {}: {:?}", step.line, step.action));
        let result = self.act(w, &step.action);
        match (result, &step.error) {
            (Ok(()), None) => {}
            (Err(e), None) => self.failures.push(format!("line {}: {e}", step.line)),
            (Ok(()), Some(want)) => self.failures.push(format!(
                "line {}: expected an error containing `{want}`, but it succeeded",
                step.line
            )),
            (Err(e), Some(want)) if e.contains(want.as_str()) => {}
            (Err(e), Some(want)) => self.failures.push(format!(
                "line {}: expected an error containing `{want}`, got `{e}`",
                step.line
            )),
        }
    }

    fn act(&mut self, w: &mut World, action: &Action) -> Result<(), String> {
        match action {
            Action::Schema(on, sdl) => {
                for i in Self::hosts(w, on) {
                    w.schema(i, sdl)?;
                }
            }
            Action::Create(on, coll, doc, label) => {
                let mut ids = BTreeSet::new();
                for i in Self::hosts(w, on) {
                    ids.insert(w.create(i, coll, doc.clone())?);
                }
                if ids.len() != 1 {
                    return Err(format!(
                        "hosts disagree on the docID of the same document: {ids:?}"
                    ));
                }
                let d = *ids.first().expect("one");
                self.created(d);
                if let Some(l) = label {
                    self.labels.insert(l.clone(), d);
                }
            }
            Action::Update(on, doc, patches) => {
                let d = self.doc(doc)?;
                for p in patches {
                    for i in Self::hosts(w, on) {
                        w.update(i, d, p.clone())?;
                    }
                }
            }
            Action::Delete(on, doc) => {
                let d = self.doc(doc)?;
                for i in Self::hosts(w, on) {
                    w.delete(i, d)?;
                }
            }
            Action::Writes {
                on,
                collection,
                count,
                docs,
                field,
                every,
            } => {
                let mut ids = Vec::new();
                for k in 0..*docs {
                    let d = w.create(*on, collection, serde_json::json!({ field.clone(): -(k as i64) - 1, "Name": format!("w{k}") }))?;
                    self.created(d);
                    ids.push(d);
                }
                for k in 0..*count {
                    let d = ids[(k % docs) as usize];
                    w.update(*on, d, serde_json::json!({ field.clone(): k }))?;
                    if !every.is_zero() {
                        w.run_for(*every);
                    }
                    if k.is_multiple_of(500) {
                        w.check_durable();
                    }
                }
            }
            Action::Connect(a, b) => w.connect(*a, *b),
            Action::Subscribe(on, names) => {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                for i in Self::hosts(w, on) {
                    w.follow_collections(i, &names)?;
                }
            }
            Action::SubscribeDoc(on, docs) => {
                let ds = docs
                    .iter()
                    .map(|d| self.doc(d))
                    .collect::<Result<Vec<_>, _>>()?;
                for i in Self::hosts(w, on) {
                    w.follow_documents(i, &ds)?;
                }
            }
            Action::SyncDocs(on, docs) => {
                let ds = docs
                    .iter()
                    .map(|d| self.doc(d))
                    .collect::<Result<Vec<_>, _>>()?;
                for i in Self::hosts(w, on) {
                    w.sync_documents(i, &ds)?;
                }
            }
            Action::Replicator(from, to, colls, docs) => {
                let ds = docs
                    .iter()
                    .map(|d| self.doc(d))
                    .collect::<Result<Vec<_>, _>>()?;
                let colls: Vec<String> = match colls {
                    Some(c) => c.clone(),
                    None if !ds.is_empty() => Vec::new(),
                    None => w.with_store(*from, |s| {
                        s.collections()
                            .unwrap_or_default()
                            .iter()
                            .map(|c| c.name().to_owned())
                            .collect()
                    }),
                };
                let colls: Vec<&str> = colls.iter().map(String::as_str).collect();
                w.set_replicator(*from, *to, &colls, &ds)?;
            }
            Action::DeleteReplicator(from, to) => w.delete_replicator(*from, *to)?,
            Action::Concurrently(steps) => w.concurrently(|w| {
                for s in steps {
                    self.step(w, s);
                }
            }),
            Action::Partition(a, b, mode) => w.partition(a, b, *mode),
            Action::Heal => w.heal(),
            Action::Crash(n) => Self::hosts(w, n).into_iter().for_each(|i| w.crash(i)),
            Action::Stop(n) => Self::hosts(w, n).into_iter().for_each(|i| w.stop(i)),
            Action::Start(n) => Self::hosts(w, n).into_iter().for_each(|i| w.start(i)),
            Action::Restart(n) => {
                let hosts = Self::hosts(w, n);
                for &i in &hosts {
                    w.stop(i);
                }
                for &i in &hosts {
                    w.start(i);
                }
            }
            Action::Wait => {
                let start = w.elapsed();
                w.wait().map_err(|e| e.to_string())?;
                // Converged when the last document changed; quiescence also waits for an
                // anti-entropy round.
                self.last_wait = Some(w.last_change().saturating_sub(start));
            }
            Action::Run(d) => w.run_for(*d),
            Action::Expect {
                on,
                collection,
                field,
                values,
                docs,
                deleted,
            } => {
                for i in Self::hosts(w, on) {
                    let listing = w.documents(i, collection, *deleted);
                    if let (Some(field), Some(want)) = (field, values) {
                        let got: Vec<Value> = listing
                            .iter()
                            .filter(|d| *deleted || !d.contains_key("_deleted"))
                            .filter_map(|d| d.get(field).cloned())
                            .collect();
                        let (got, want) = (sorted(got), sorted(want.clone()));
                        if got != want {
                            return Err(format!(
                                "n{i} {collection}.{field} = {}, expected {}",
                                Value::from(got),
                                Value::from(want)
                            ));
                        }
                    }
                    if let Some(want) = docs {
                        let got: Vec<Value> = listing.into_iter().map(Value::Object).collect();
                        let (got, want) = (sorted(got), sorted(want.clone()));
                        if got != want {
                            return Err(format!(
                                "n{i} {collection} = {}, expected {}",
                                Value::from(got),
                                Value::from(want)
                            ));
                        }
                    }
                }
            }
            Action::ExpectSame(collection, field) => {
                let mut first: Option<(u16, Vec<Value>)> = None;
                for i in w.ids().filter(|&i| w.is_running(i)).collect::<Vec<_>>() {
                    let got = sorted(
                        w.documents(i, collection, false)
                            .iter()
                            .filter_map(|d| d.get(field).cloned())
                            .collect(),
                    );
                    match &first {
                        None => first = Some((i, got)),
                        Some((j, other)) if *other != got => {
                            return Err(format!(
                                "n{i} {collection}.{field} = {}, but n{j} has {}",
                                Value::from(got),
                                Value::from(other.clone())
                            ));
                        }
                        Some(_) => {}
                    }
                }
            }
            Action::ExpectEvent(on, name, contains) => {
                for i in Self::hosts(w, on) {
                    let found = w.events(i).iter().any(|e| {
                        let t = format!("{e:?}");
                        t.starts_with(name.as_str())
                            && contains.as_ref().is_none_or(|c| t.contains(c.as_str()))
                    });
                    if !found {
                        return Err(format!(
                            "n{i} reported no {name} event{}",
                            contains
                                .as_ref()
                                .map(|c| format!(" containing `{c}`"))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
            Action::ExpectConnection(a, b, direct) => {
                let conns = w.connections(*a);
                match (conns.get(b), direct) {
                    (None, _) => return Err(format!("n{a} is not connected to n{b}")),
                    (Some(None), Some(false)) => {
                        return Err(format!(
                            "n{a} reaches n{b} directly, expected through a relay"
                        ));
                    }
                    (Some(Some(r)), Some(true)) => {
                        return Err(format!(
                            "n{a} reaches n{b} through relay n{r}, expected directly"
                        ));
                    }
                    _ => {}
                }
            }
            Action::ExpectOutbox(from, to, max) => {
                let key = hypha_protocols::node::Peer::to_key(to);
                let len = w.with_store(*from, |s| s.outbox(&key, 0).map(|o| o.len).unwrap_or(0));
                if len > *max {
                    return Err(format!(
                        "n{from}'s outbox for n{to} holds {len} entries, expected at most {max}"
                    ));
                }
            }
        }
        Ok(())
    }
}
