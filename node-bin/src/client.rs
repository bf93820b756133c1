//! `hypha client`: the command-line client of a running Hypha node's HTTP API.
//!
//! Every command maps to one HTTP request under `http://<--url>/api/v0`; the mapping is the pure
//! function [`build_request`] (tested without a network) and [`run`] executes it with `ureq`.
//!
//! | command | request |
//! | --- | --- |
//! | `schema add '<SDL>'` / `-f FILE` | `POST /schema` (text/plain SDL) |
//! | `collection create --name C '<json>'` / `-f FILE` | `POST /collections/C` (object or array) |
//! | `collection get --name C ID [--show-deleted]` | `GET /collections/C/documents/ID` |
//! | `collection update --name C ID '<patch>'` | `PATCH /collections/C/documents/ID` |
//! | `collection delete --name C ID` | `DELETE /collections/C/documents/ID` |
//! | `collection docIDs --name C [--show-deleted]` | `GET /collections/C/docIDs` |
//! | `collection list --name C [--show-deleted] [--filter J] [--limit N]` | `GET /collections/C/documents` |
//! | `collection list` / `collection describe` | `GET /collections` |
//! | `collection describe --name C` | `GET /collections/C` |
//! | `p2p info` / `p2p peers` | `GET /p2p/info` / `GET /p2p/peers` |
//! | `p2p connect MADDR` / `p2p disconnect PEER` | `POST /p2p/peers` / `DELETE /p2p/peers/PEER` |
//! | `p2p replicator set -c C --doc ID MADDR` | `POST /p2p/replicators` |
//! | `p2p replicator delete [-c C] [--doc ID] PEER` | `DELETE /p2p/replicators` |
//! | `p2p replicator getall` | `GET /p2p/replicators` |
//! | `p2p collection add\|remove\|sync C...` / `getall` | `POST\|DELETE /p2p/collections`, `POST /p2p/collections/sync` / `GET` |
//! | `p2p document add\|remove\|sync ID...` / `getall` | `POST\|DELETE /p2p/documents`, `POST /p2p/documents/sync` / `GET` |
//! | `rpc addreplicator C MADDR` | as `p2p replicator set -c C MADDR` |
//! | `block get CID [--raw]` | `GET /blocks/CID?format=json` (or raw bytes to stdout) |
//! | `dag ID [--limit N]` | `GET /documents/ID/history` |
//! | `document status ID` | `GET /documents/ID/sync` |
//! | `backup export FILE` / `backup import FILE` | `GET /backup/export` (to FILE) / `POST /backup/import` (CAR) |
//! | `health` / `metrics` | `GET /health` / `GET /metrics` (text) |
//!
//! `--show-deleted` adds the query `show_deleted=true`, `--filter J` and `--limit N` add
//! `filter=J` and `limit=N`; path segments and query values are percent-encoded. Request bodies
//! are JSON, except the SDL of `schema add` (text/plain) and the CAR file of `backup import`.
//!
//! Output: the response body re-printed as pretty JSON, the text of `metrics`,
//! raw bytes for `block get --raw`, and `{"file": …, "bytes": n}` for `backup export`. On any
//! error one line `Error: <message>` goes to stderr and the exit code is 1 (2 for usage errors,
//! which clap reports). Every request has a timeout (`--timeout`, 30 s by default) and response
//! bodies are capped ([`BODY_LIMIT`], [`BACKUP_LIMIT`] for backups).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};

/// Where the node's API is when neither `--url` nor `HYPHA_URL` says otherwise.
pub(crate) const DEFAULT_URL: &str = "127.0.0.1:9181";
/// The path prefix of every API endpoint.
const API_PREFIX: &str = "/api/v0";
/// The largest response body (and `-f` input file) read into memory.
pub(crate) const BODY_LIMIT: u64 = 16 * 1024 * 1024;
/// The largest backup `backup export` writes (it streams to a file, never into memory).
pub(crate) const BACKUP_LIMIT: u64 = 256 * 1024 * 1024;
/// The most of an error response's body that is read to find its message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// The media type of `backup import` bodies.
const CAR_MEDIA_TYPE: &str = "application/vnd.ipld.car";

/// `hypha client …` arguments.
#[derive(Args, Debug)]
pub(crate) struct ClientArgs {
    /// The node's HTTP API: `host:port` or `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "HYPHA_URL",
        default_value = DEFAULT_URL,
        value_name = "URL",
        value_parser = parse_base_url
    )]
    url: String,
    /// API token, sent as `Authorization: Bearer <TOKEN>`.
    #[arg(
        long,
        global = true,
        env = "HYPHA_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    api_token: Option<String>,
    /// Timeout of the whole request, response body included, in seconds.
    #[arg(
        long,
        global = true,
        default_value_t = 30,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout: u64,
    #[command(subcommand)]
    command: ClientCommand,
}

/// The commands of `hypha client`.
#[derive(Subcommand, Debug)]
enum ClientCommand {
    /// Manage the schema.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Create, read, update and delete documents; describe collections.
    Collection {
        #[command(subcommand)]
        command: CollectionCommand,
    },
    /// Peers, replicators and subscriptions of the node's peer-to-peer layer.
    P2p {
        #[command(subcommand)]
        command: P2pCommand,
    },
    /// DefraDB-compatible shortcuts.
    Rpc {
        #[command(subcommand)]
        command: RpcCommand,
    },
    /// Read the blocks of document histories.
    Block {
        #[command(subcommand)]
        command: BlockCommand,
    },
    /// Print the history (the DAG of updates) of a document.
    Dag {
        /// The document's docID.
        doc_id: String,
        /// Print at most N entries.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Document-level information.
    Document {
        #[command(subcommand)]
        command: DocumentCommand,
    },
    /// Export the database to a CAR file, or import one.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Check that the node is up.
    Health,
    /// Print the node's metrics (Prometheus text format).
    Metrics,
}

/// `hypha client schema …`.
#[derive(Subcommand, Debug)]
enum SchemaCommand {
    /// Add types to the schema, from an SDL argument or a file.
    #[command(group(ArgGroup::new("source").required(true).args(["sdl", "file"])))]
    Add {
        /// The schema definition (GraphQL SDL).
        sdl: Option<String>,
        /// Read the schema definition from FILE (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
}

/// `hypha client collection …`.
#[derive(Subcommand, Debug)]
enum CollectionCommand {
    /// Create one document (a JSON object) or several (a JSON array of objects).
    #[command(group(ArgGroup::new("source").required(true).args(["json", "file"])))]
    Create {
        /// The collection.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// The document(s) as JSON.
        json: Option<String>,
        /// Read the document(s) from FILE (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Print one document.
    Get {
        /// The collection.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// The document's docID.
        doc_id: String,
        /// Print the document even if it is deleted.
        #[arg(long)]
        show_deleted: bool,
    },
    /// Update one document with a JSON merge patch (an object).
    #[command(group(ArgGroup::new("source").required(true).args(["patch", "file"])))]
    Update {
        /// The collection.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// The document's docID.
        doc_id: String,
        /// The patch as a JSON object.
        patch: Option<String>,
        /// Read the patch from FILE (`-` for stdin).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Delete one document.
    Delete {
        /// The collection.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// The document's docID.
        doc_id: String,
    },
    /// Print the docIDs of a collection.
    #[command(name = "docIDs")]
    DocIds {
        /// The collection.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: String,
        /// Include deleted documents.
        #[arg(long)]
        show_deleted: bool,
    },
    /// Print the documents of a collection, or the collections when no --name is given.
    List {
        /// The collection.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: Option<String>,
        /// Include deleted documents.
        #[arg(long, requires = "name")]
        show_deleted: bool,
        /// Only documents matching this JSON object, e.g. '{"name":"John"}'.
        #[arg(long, requires = "name", value_name = "JSON")]
        filter: Option<String>,
        /// Print at most N documents.
        #[arg(long, requires = "name", value_name = "N")]
        limit: Option<u64>,
    },
    /// Describe one collection, or all of them when no --name is given.
    Describe {
        /// The collection.
        #[arg(long, short = 'n', value_name = "NAME")]
        name: Option<String>,
    },
}

/// `hypha client p2p …`.
#[derive(Subcommand, Debug)]
enum P2pCommand {
    /// Print the node's peer ID and listen addresses.
    Info,
    /// Print the connected peers.
    Peers,
    /// Connect to a peer.
    Connect {
        /// The peer's multiaddr, e.g. /ip4/10.0.0.2/tcp/9171/p2p/12D3KooW…
        #[arg(value_parser = parse_multiaddr)]
        address: String,
    },
    /// Disconnect from a peer.
    Disconnect {
        /// The peer's ID.
        peer_id: String,
    },
    /// Manage replicators (peers this node pushes updates to).
    Replicator {
        #[command(subcommand)]
        command: ReplicatorCommand,
    },
    /// Manage the collections this node subscribes to.
    Collection {
        #[command(subcommand)]
        command: P2pCollectionCommand,
    },
    /// Manage the documents this node subscribes to.
    Document {
        #[command(subcommand)]
        command: P2pDocumentCommand,
    },
}

/// `hypha client p2p replicator …`.
#[derive(Subcommand, Debug)]
enum ReplicatorCommand {
    /// Add a replicator, or widen its scope (at least one -c or --doc).
    #[command(group(
        ArgGroup::new("scope").required(true).multiple(true).args(["collections", "docs"])
    ))]
    Set {
        /// A collection to replicate (repeat, or separate with commas).
        #[arg(
            short = 'c',
            long = "collection",
            value_name = "NAME",
            value_delimiter = ','
        )]
        collections: Vec<String>,
        /// A document to replicate (repeat, or separate with commas).
        #[arg(long = "doc", value_name = "DOCID", value_delimiter = ',')]
        docs: Vec<String>,
        /// The replicator's multiaddr, ending in /p2p/PEER_ID.
        #[arg(value_parser = parse_peer_multiaddr)]
        address: String,
    },
    /// Narrow a replicator's scope, or remove it when no -c or --doc is given.
    Delete {
        /// A collection to stop replicating (repeat, or separate with commas).
        #[arg(
            short = 'c',
            long = "collection",
            value_name = "NAME",
            value_delimiter = ','
        )]
        collections: Vec<String>,
        /// A document to stop replicating (repeat, or separate with commas).
        #[arg(long = "doc", value_name = "DOCID", value_delimiter = ',')]
        docs: Vec<String>,
        /// The replicator's peer ID or multiaddr.
        peer: String,
    },
    /// Print all replicators.
    Getall,
}

/// `hypha client p2p collection …`.
#[derive(Subcommand, Debug)]
enum P2pCollectionCommand {
    /// Subscribe to collections.
    Add {
        /// The collections.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Unsubscribe from collections.
    Remove {
        /// The collections.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Print the subscribed collections.
    Getall,
    /// Pull the collections' current state from connected peers.
    Sync {
        /// The collections.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

/// `hypha client p2p document …`.
#[derive(Subcommand, Debug)]
enum P2pDocumentCommand {
    /// Subscribe to documents.
    Add {
        /// The docIDs.
        #[arg(required = true, value_name = "DOCID")]
        doc_ids: Vec<String>,
    },
    /// Unsubscribe from documents.
    Remove {
        /// The docIDs.
        #[arg(required = true, value_name = "DOCID")]
        doc_ids: Vec<String>,
    },
    /// Print the subscribed documents.
    Getall,
    /// Pull the documents' current state from connected peers.
    Sync {
        /// The docIDs.
        #[arg(required = true, value_name = "DOCID")]
        doc_ids: Vec<String>,
    },
}

/// `hypha client rpc …`.
#[derive(Subcommand, Debug)]
enum RpcCommand {
    /// Replicate a collection to a peer (same as `p2p replicator set -c COLLECTION MULTIADDR`).
    Addreplicator {
        /// The collection.
        collection: String,
        /// The replicator's multiaddr, ending in /p2p/PEER_ID.
        #[arg(value_parser = parse_peer_multiaddr)]
        address: String,
    },
}

/// `hypha client block …`.
#[derive(Subcommand, Debug)]
enum BlockCommand {
    /// Print a block, decoded as JSON, or its raw bytes with --raw.
    Get {
        /// The block's CID.
        cid: String,
        /// Write the block's raw bytes to stdout.
        #[arg(long)]
        raw: bool,
    },
}

/// `hypha client document …`.
#[derive(Subcommand, Debug)]
enum DocumentCommand {
    /// Print a document's sync status (heads, replicators, peers).
    Status {
        /// The document's docID.
        doc_id: String,
    },
}

/// `hypha client backup …`.
#[derive(Subcommand, Debug)]
enum BackupCommand {
    /// Export the database to FILE (a CAR file; replaced if it exists).
    Export {
        /// The file to write.
        file: PathBuf,
    },
    /// Import a CAR file made by `backup export`.
    Import {
        /// The file to read.
        file: PathBuf,
    },
}

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// The body of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RequestBody {
    /// No body.
    Empty,
    /// JSON text (`application/json`).
    Json(String),
    /// UTF-8 text (`text/plain`).
    Text(String),
    /// A CAR file's bytes, streamed from the file (`application/vnd.ipld.car`).
    CarFile(PathBuf),
}

/// What to do with a successful response's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// Re-print it as pretty JSON (as is if it is not JSON; nothing if it is empty).
    Json,
    /// Print it as is (text).
    Text,
    /// Write its bytes to stdout as they are.
    Raw,
    /// Stream it into this file (through `FILE.tmp`), then print `{"file", "bytes"}`.
    File(PathBuf),
}

/// One API request, described without a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The HTTP method.
    pub(crate) method: Method,
    /// The path after `/api/v0`, its segments already percent-encoded.
    pub(crate) path: String,
    /// Query parameters, not yet encoded.
    pub(crate) query: Vec<(&'static str, String)>,
    /// The body.
    pub(crate) body: RequestBody,
    /// What to do with the response.
    pub(crate) output: Output,
}

impl Request {
    fn new(method: Method, path: String) -> Self {
        Request {
            method,
            path,
            query: Vec::new(),
            body: RequestBody::Empty,
            output: Output::Json,
        }
    }

    fn get(path: impl Into<String>) -> Self {
        Self::new(Method::Get, path.into())
    }

    fn with_json(mut self, json: String) -> Self {
        self.body = RequestBody::Json(json);
        self
    }

    fn with_query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    fn with_flag(self, key: &'static str, set: bool) -> Self {
        if set {
            self.with_query(key, "true")
        } else {
            self
        }
    }

    fn with_output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }

    /// The path and query, percent-encoded, after the base URL (`/api/v0/…?…`).
    pub(crate) fn target(&self) -> String {
        let mut target = format!("{API_PREFIX}{}", self.path);
        for (i, (key, value)) in self.query.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&percent_encode(key));
            target.push('=');
            target.push_str(&percent_encode(value));
        }
        target
    }

    /// The most of the response body this request reads.
    fn body_limit(&self) -> u64 {
        match self.output {
            Output::File(_) => BACKUP_LIMIT,
            Output::Json | Output::Text | Output::Raw => BODY_LIMIT,
        }
    }
}

/// Why a command failed; its `Display` is the one line printed after `Error: `.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The node answered with an error status and an `{"error": …}` message.
    #[error("{0}")]
    Api(String),
    /// The node answered with an error status and no `{"error": …}` message.
    #[error("the hypha node answered {status}{detail}")]
    Status {
        /// The status line, e.g. `502 Bad Gateway`.
        status: String,
        /// `: <body text>` when the body had text, else empty.
        detail: String,
    },
    /// No connection to the node.
    #[error("cannot reach the hypha node at {url}: {reason} — {hint}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// What went wrong, e.g. `connection refused`.
        reason: String,
        /// What to check.
        hint: &'static str,
    },
    /// The request took longer than `--timeout`.
    #[error("the hypha node at {url} did not answer within {secs} s (raise --timeout?)")]
    Timeout {
        /// The base URL.
        url: String,
        /// The timeout.
        secs: u64,
    },
    /// The response body passed the client's cap.
    #[error("the hypha node's response is larger than the client's limit of {} MiB", .limit / (1024 * 1024))]
    TooLarge {
        /// The cap in bytes.
        limit: u64,
    },
    /// Any other failure of the exchange with the node.
    #[error("request to the hypha node at {url} failed: {detail}")]
    Transport {
        /// The base URL.
        url: String,
        /// The underlying error.
        detail: String,
    },
    /// The command's input is not usable (invalid JSON, empty docID, …).
    #[error("{0}")]
    Input(String),
    /// A local file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A local file could not be written.
    #[error("cannot write {}: {source}", .path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Stdout could not be written.
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

/// Runs one client command; prints its result to stdout; returns the process exit code.
pub(crate) fn run(args: ClientArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let result = execute(&args, &mut out).and_then(|()| out.flush().map_err(ClientError::Output));
    report(result, &mut io::stderr())
}

/// Prints a failed command's one-line `Error: …` to `err`; maps the result to an exit code.
fn report(result: Result<(), ClientError>, err: &mut dyn Write) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Nothing better to do if stderr is gone too.
            let _ = writeln!(err, "Error: {}", one_line(&error.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// Builds the command's request and executes it, writing the result to `out`.
fn execute(args: &ClientArgs, out: &mut dyn Write) -> Result<(), ClientError> {
    let request = build_request(&args.command)?;
    let connection = Connection {
        base: args.url.clone(),
        token: args.api_token.clone().filter(|token| !token.is_empty()),
        timeout_secs: args.timeout,
    };
    connection.send(&request, out)
}

/// Maps a command to its request. Reads `-f` files (and stdin for `-f -`), never the network.
fn build_request(command: &ClientCommand) -> Result<Request, ClientError> {
    Ok(match command {
        ClientCommand::Schema {
            command: SchemaCommand::Add { sdl, file },
        } => {
            let sdl = inline_or_file(sdl.as_deref(), file.as_deref())?;
            if sdl.trim().is_empty() {
                return Err(ClientError::Input("the schema definition is empty".into()));
            }
            let mut request = Request::new(Method::Post, "/schema".into());
            request.body = RequestBody::Text(sdl);
            request
        }
        ClientCommand::Collection { command } => build_collection_request(command)?,
        ClientCommand::P2p { command } => build_p2p_request(command)?,
        ClientCommand::Rpc {
            command:
                RpcCommand::Addreplicator {
                    collection,
                    address,
                },
        } => set_replicator(address, std::slice::from_ref(collection), &[]),
        ClientCommand::Block {
            command: BlockCommand::Get { cid, raw },
        } => {
            let request = Request::get(format!("/blocks/{}", segment("CID", cid)?));
            if *raw {
                request.with_output(Output::Raw)
            } else {
                request.with_query("format", "json")
            }
        }
        ClientCommand::Dag { doc_id, limit } => {
            let request = Request::get(format!("/documents/{}/history", segment("docID", doc_id)?));
            match limit {
                Some(limit) => request.with_query("limit", limit.to_string()),
                None => request,
            }
        }
        ClientCommand::Document {
            command: DocumentCommand::Status { doc_id },
        } => Request::get(format!("/documents/{}/sync", segment("docID", doc_id)?)),
        ClientCommand::Backup {
            command: BackupCommand::Export { file },
        } => Request::get("/backup/export").with_output(Output::File(file.clone())),
        ClientCommand::Backup {
            command: BackupCommand::Import { file },
        } => {
            let mut request = Request::new(Method::Post, "/backup/import".into());
            request.body = RequestBody::CarFile(file.clone());
            request
        }
        ClientCommand::Health => Request::get("/health"),
        ClientCommand::Metrics => Request::get("/metrics").with_output(Output::Text),
    })
}

fn build_collection_request(command: &CollectionCommand) -> Result<Request, ClientError> {
    Ok(match command {
        CollectionCommand::Create { name, json, file } => {
            let text = inline_or_file(json.as_deref(), file.as_deref())?;
            let value = parse_json("documents", &text)?;
            let valid = match &value {
                serde_json::Value::Object(_) => true,
                serde_json::Value::Array(items) => {
                    !items.is_empty() && items.iter().all(serde_json::Value::is_object)
                }
                _ => false,
            };
            if !valid {
                return Err(ClientError::Input(
                    "collection create takes a JSON object or a non-empty array of objects".into(),
                ));
            }
            Request::new(
                Method::Post,
                format!("/collections/{}", segment("collection name", name)?),
            )
            .with_json(text.trim().to_owned())
        }
        CollectionCommand::Get {
            name,
            doc_id,
            show_deleted,
        } => Request::get(document_path(name, doc_id)?).with_flag("show_deleted", *show_deleted),
        CollectionCommand::Update {
            name,
            doc_id,
            patch,
            file,
        } => {
            let text = inline_or_file(patch.as_deref(), file.as_deref())?;
            if !parse_json("patch", &text)?.is_object() {
                return Err(ClientError::Input("the patch must be a JSON object".into()));
            }
            Request::new(Method::Patch, document_path(name, doc_id)?)
                .with_json(text.trim().to_owned())
        }
        CollectionCommand::Delete { name, doc_id } => {
            Request::new(Method::Delete, document_path(name, doc_id)?)
        }
        CollectionCommand::DocIds { name, show_deleted } => Request::get(format!(
            "/collections/{}/docIDs",
            segment("collection name", name)?
        ))
        .with_flag("show_deleted", *show_deleted),
        CollectionCommand::List { name: None, .. } | CollectionCommand::Describe { name: None } => {
            Request::get("/collections")
        }
        CollectionCommand::List {
            name: Some(name),
            show_deleted,
            filter,
            limit,
        } => {
            let mut request = Request::get(format!(
                "/collections/{}/documents",
                segment("collection name", name)?
            ))
            .with_flag("show_deleted", *show_deleted);
            if let Some(filter) = filter {
                if !parse_json("filter", filter)?.is_object() {
                    return Err(ClientError::Input(
                        "the filter must be a JSON object".into(),
                    ));
                }
                request = request.with_query("filter", filter.trim());
            }
            if let Some(limit) = limit {
                request = request.with_query("limit", limit.to_string());
            }
            request
        }
        CollectionCommand::Describe { name: Some(name) } => Request::get(format!(
            "/collections/{}",
            segment("collection name", name)?
        )),
    })
}

fn build_p2p_request(command: &P2pCommand) -> Result<Request, ClientError> {
    Ok(match command {
        P2pCommand::Info => Request::get("/p2p/info"),
        P2pCommand::Peers => Request::get("/p2p/peers"),
        P2pCommand::Connect { address } => Request::new(Method::Post, "/p2p/peers".into())
            .with_json(serde_json::json!({ "address": address }).to_string()),
        P2pCommand::Disconnect { peer_id } => Request::new(
            Method::Delete,
            format!("/p2p/peers/{}", segment("peer ID", peer_id)?),
        ),
        P2pCommand::Replicator { command } => match command {
            ReplicatorCommand::Set {
                collections,
                docs,
                address,
            } => set_replicator(address, collections, docs),
            ReplicatorCommand::Delete {
                collections,
                docs,
                peer,
            } => Request::new(Method::Delete, "/p2p/replicators".into()).with_json(
                serde_json::json!({ "peer": peer, "collections": collections, "docIDs": docs })
                    .to_string(),
            ),
            ReplicatorCommand::Getall => Request::get("/p2p/replicators"),
        },
        P2pCommand::Collection { command } => match command {
            P2pCollectionCommand::Add { names } => {
                list_request(Method::Post, "/p2p/collections", names)
            }
            P2pCollectionCommand::Remove { names } => {
                list_request(Method::Delete, "/p2p/collections", names)
            }
            P2pCollectionCommand::Getall => Request::get("/p2p/collections"),
            P2pCollectionCommand::Sync { names } => {
                list_request(Method::Post, "/p2p/collections/sync", names)
            }
        },
        P2pCommand::Document { command } => match command {
            P2pDocumentCommand::Add { doc_ids } => {
                list_request(Method::Post, "/p2p/documents", doc_ids)
            }
            P2pDocumentCommand::Remove { doc_ids } => {
                list_request(Method::Delete, "/p2p/documents", doc_ids)
            }
            P2pDocumentCommand::Getall => Request::get("/p2p/documents"),
            P2pDocumentCommand::Sync { doc_ids } => {
                list_request(Method::Post, "/p2p/documents/sync", doc_ids)
            }
        },
    })
}

/// `POST /p2p/replicators {"address", "collections", "docIDs"}`.
fn set_replicator(address: &str, collections: &[String], docs: &[String]) -> Request {
    Request::new(Method::Post, "/p2p/replicators".into()).with_json(
        serde_json::json!({ "address": address, "collections": collections, "docIDs": docs })
            .to_string(),
    )
}

/// A request whose body is a JSON array of strings.
fn list_request(method: Method, path: &str, items: &[String]) -> Request {
    Request::new(method, path.into()).with_json(serde_json::json!(items).to_string())
}

fn document_path(name: &str, doc_id: &str) -> Result<String, ClientError> {
    Ok(format!(
        "/collections/{}/documents/{}",
        segment("collection name", name)?,
        segment("docID", doc_id)?
    ))
}

/// Percent-encodes one path segment; refuses empty, `.` and `..` segments.
fn segment(what: &str, value: &str) -> Result<String, ClientError> {
    if value.is_empty() || value == "." || value == ".." {
        return Err(ClientError::Input(format!("invalid {what}: {value:?}")));
    }
    Ok(percent_encode(value))
}

/// Percent-encodes every byte but RFC 3986's unreserved characters (`A-Z a-z 0-9 - . _ ~`).
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, ClientError> {
    serde_json::from_str(text)
        .map_err(|e| ClientError::Input(format!("the {what} are not valid JSON: {e}")))
}

/// The inline argument, or the contents of `file` (stdin for `-`); clap ensures exactly one.
fn inline_or_file(inline: Option<&str>, file: Option<&Path>) -> Result<String, ClientError> {
    match (inline, file) {
        (Some(text), _) => Ok(text.to_owned()),
        (None, Some(path)) => read_input(path),
        (None, None) => Err(ClientError::Input(
            "give the input as an argument or with -f FILE".into(),
        )),
    }
}

/// Reads a UTF-8 input file (stdin for `-`) of at most [`BODY_LIMIT`] bytes.
fn read_input(path: &Path) -> Result<String, ClientError> {
    let read_error = |source| ClientError::ReadFile {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    if path.as_os_str() == "-" {
        io::stdin()
            .lock()
            .take(BODY_LIMIT + 1)
            .read_to_string(&mut text)
    } else {
        File::open(path).and_then(|file| file.take(BODY_LIMIT + 1).read_to_string(&mut text))
    }
    .map_err(read_error)?;
    if text.len() as u64 > BODY_LIMIT {
        return Err(ClientError::Input(format!(
            "{} is larger than the client's limit of {} MiB",
            path.display(),
            BODY_LIMIT / (1024 * 1024)
        )));
    }
    Ok(text)
}

/// `--url`: `host:port` or `http://host:port` (a trailing `/` is dropped) → `http://host:port`.
fn parse_base_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    let authority = match value.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported scheme {scheme:?}: the client speaks http:// only"
            ));
        }
        None => value,
    };
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    if authority.is_empty()
        || authority
            .chars()
            .any(|c| matches!(c, '/' | '?' | '#' | '@') || c.is_whitespace())
    {
        return Err(format!(
            "expected host:port or http://host:port, got {value:?}"
        ));
    }
    Ok(format!("http://{authority}"))
}

/// A multiaddr: starts with `/`.
fn parse_multiaddr(value: &str) -> Result<String, String> {
    if value.starts_with('/') && value.len() > 1 && !value.chars().any(char::is_whitespace) {
        Ok(value.to_owned())
    } else {
        Err(format!(
            "expected a multiaddr such as /ip4/127.0.0.1/tcp/9171/p2p/<peer ID>, got {value:?}"
        ))
    }
}

/// A multiaddr that names its peer: contains `/p2p/<peer ID>`.
fn parse_peer_multiaddr(value: &str) -> Result<String, String> {
    let address = parse_multiaddr(value)?;
    let names_peer = address
        .split_once("/p2p/")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
    if names_peer {
        Ok(address)
    } else {
        Err(format!("the multiaddr {value:?} lacks /p2p/<peer ID>"))
    }
}

/// Joins a message's lines so `Error: …` stays on one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The node's API as the client reaches it.
struct Connection {
    /// `http://host:port`.
    base: String,
    /// Sent as `Authorization: Bearer …`.
    token: Option<String>,
    /// Timeout of each whole request.
    timeout_secs: u64,
}

impl Connection {
    fn agent(&self) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(self.timeout_secs)))
            .user_agent(concat!("hypha-client/", env!("CARGO_PKG_VERSION")))
            .build();
        ureq::Agent::new_with_config(config)
    }

    /// Executes `request`; writes its result to `out`.
    fn send(&self, request: &Request, out: &mut dyn Write) -> Result<(), ClientError> {
        let url = format!("{}{}", self.base, request.target());
        let mut builder = ureq::http::Request::builder()
            .method(request.method.as_str())
            .uri(&url);
        if let Some(token) = &self.token {
            let value =
                ureq::http::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                    ClientError::Input(
                        "the API token contains characters not allowed in a header".into(),
                    )
                })?;
            builder = builder.header("authorization", value);
        }
        let accept = match request.output {
            Output::Json => "application/json",
            Output::Text => "text/plain, */*",
            Output::Raw | Output::File(_) => "*/*",
        };
        builder = builder.header("accept", accept);
        let invalid =
            |e: ureq::http::Error| ClientError::Input(format!("invalid request to {url}: {e}"));
        let agent = self.agent();
        let result = match &request.body {
            RequestBody::Empty => agent.run(builder.body(()).map_err(invalid)?),
            RequestBody::Json(json) => agent.run(
                builder
                    .header("content-type", "application/json")
                    .body(json.as_str())
                    .map_err(invalid)?,
            ),
            RequestBody::Text(text) => agent.run(
                builder
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(text.as_str())
                    .map_err(invalid)?,
            ),
            RequestBody::CarFile(path) => {
                let file = File::open(path).map_err(|source| ClientError::ReadFile {
                    path: path.clone(),
                    source,
                })?;
                agent.run(
                    builder
                        .header("content-type", CAR_MEDIA_TYPE)
                        .body(file)
                        .map_err(invalid)?,
                )
            }
        };
        let mut response = result.map_err(|e| self.transport_error(e, true))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status, response.body_mut()));
        }
        let body = response.body_mut();
        match &request.output {
            Output::Json => {
                let bytes = self.read_body(body, request.body_limit())?;
                print_json(&bytes, out)
            }
            Output::Text | Output::Raw => {
                let bytes = self.read_body(body, request.body_limit())?;
                out.write_all(&bytes).map_err(ClientError::Output)
            }
            Output::File(path) => {
                let bytes = self.stream_to_file(body, request.body_limit(), path)?;
                let summary =
                    serde_json::json!({ "file": path.display().to_string(), "bytes": bytes });
                print_json(summary.to_string().as_bytes(), out)
            }
        }
    }

    fn read_body(&self, body: &mut ureq::Body, limit: u64) -> Result<Vec<u8>, ClientError> {
        body.with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| self.transport_error(e, false))
    }

    /// Streams `body` into `path.tmp`, then renames it to `path`; returns the byte count.
    fn stream_to_file(
        &self,
        body: &mut ureq::Body,
        limit: u64,
        path: &Path,
    ) -> Result<u64, ClientError> {
        let mut tmp = OsString::from(path.as_os_str());
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write_error = |source| ClientError::WriteFile {
            path: tmp.clone(),
            source,
        };
        let mut file = File::create(&tmp).map_err(write_error)?;
        let mut reader = body.with_config().limit(limit).reader();
        let mut buffer = vec![0; 64 * 1024];
        let mut total = 0u64;
        let copied = loop {
            match reader.read(&mut buffer) {
                Ok(0) => break file.sync_all().map_err(write_error),
                Ok(n) => {
                    if let Err(e) = file.write_all(&buffer[..n]) {
                        break Err(write_error(e));
                    }
                    total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(self.transport_error(ureq::Error::from(e), false)),
            }
        };
        drop(file);
        let renamed = copied.and_then(|()| {
            fs::rename(&tmp, path).map_err(|source| ClientError::WriteFile {
                path: path.to_owned(),
                source,
            })
        });
        if renamed.is_err() {
            // The partial file is useless; failing to remove it changes nothing for the user.
            let _ = fs::remove_file(&tmp);
        }
        renamed.map(|()| total)
    }

    /// The error for a failed exchange; `connecting` is true until the response head arrived.
    fn transport_error(&self, error: ureq::Error, connecting: bool) -> ClientError {
        const START_HINT: &str = "is `hypha start` running?";
        const URL_HINT: &str = "check --url (or HYPHA_URL) and that `hypha start` is running";
        let unreachable = |reason: String, hint| ClientError::Unreachable {
            url: self.base.clone(),
            reason,
            hint,
        };
        match error {
            ureq::Error::Io(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                unreachable("connection refused".into(), START_HINT)
            }
            ureq::Error::Io(e) if connecting => unreachable(e.to_string(), URL_HINT),
            ureq::Error::ConnectionFailed => unreachable("connection failed".into(), START_HINT),
            ureq::Error::HostNotFound => unreachable("host not found".into(), URL_HINT),
            ureq::Error::Timeout(_) => ClientError::Timeout {
                url: self.base.clone(),
                secs: self.timeout_secs,
            },
            ureq::Error::BodyExceedsLimit(limit) => ClientError::TooLarge { limit },
            other => ClientError::Transport {
                url: self.base.clone(),
                detail: other.to_string(),
            },
        }
    }
}

/// The error for a 4xx/5xx answer: the body's `{"error": …}` message if it has one.
fn status_error(status: ureq::http::StatusCode, body: &mut ureq::Body) -> ClientError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        error: String,
    }
    let bytes = body
        .with_config()
        .limit(ERROR_BODY_LIMIT)
        .read_to_vec()
        .unwrap_or_default();
    if let Ok(ErrorBody { error }) = serde_json::from_slice(&bytes)
        && !error.trim().is_empty()
    {
        return ClientError::Api(error);
    }
    let text = one_line(&String::from_utf8_lossy(&bytes));
    let detail = if text.is_empty() {
        String::new()
    } else {
        format!(": {}", text.chars().take(200).collect::<String>())
    };
    ClientError::Status {
        status: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned(),
        detail,
    }
}

/// Re-prints a JSON body pretty (keys sorted, as the node sends them); prints a non-JSON body
/// as is.
fn print_json(bytes: &[u8], out: &mut dyn Write) -> Result<(), ClientError> {
    let text = String::from_utf8_lossy(bytes);
    if text.trim().is_empty() {
        return Ok(());
    }
    let written = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value) => serde_json::to_writer_pretty(&mut *out, &value)
            .map_err(io::Error::from)
            .and_then(|()| writeln!(out)),
        Err(_) if text.ends_with('\n') => out.write_all(text.as_bytes()),
        Err(_) => writeln!(out, "{text}"),
    };
    written.map_err(ClientError::Output)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};
    use std::thread::{self, JoinHandle};

    use clap::{CommandFactory, Parser};
    use serde_json::{Value, json};

    use super::*;

    const PEER: &str = "12D3KooWEpS6NfWZzUSUsdcKVvLy1qkdxS4gnusqSMvNYhDx8C5X";

    /// `hypha client` as the node binary mounts it.
    #[derive(Parser, Debug)]
    #[command(name = "hypha-client")]
    struct TestCli {
        #[command(flatten)]
        args: ClientArgs,
    }

    fn try_parse(argv: &[&str]) -> Result<ClientArgs, clap::Error> {
        TestCli::try_parse_from(std::iter::once("hypha-client").chain(argv.iter().copied()))
            .map(|cli| cli.args)
    }

    fn parse(argv: &[&str]) -> ClientArgs {
        try_parse(argv).unwrap_or_else(|e| panic!("{argv:?} does not parse: {e}"))
    }

    fn request(argv: &[&str]) -> Request {
        build_request(&parse(argv).command).unwrap()
    }

    fn usage_error(argv: &[&str]) -> clap::error::ErrorKind {
        try_parse(argv).expect_err("a usage error").kind()
    }

    fn json_body(request: &Request) -> Value {
        match &request.body {
            RequestBody::Json(text) => serde_json::from_str(text).unwrap(),
            other => panic!("not a JSON body: {other:?}"),
        }
    }

    /// A file in the system's temporary directory, removed when dropped.
    struct ScratchFile(PathBuf);

    impl ScratchFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("hypha-client-test-{}-{name}", std::process::id()));
            fs::write(&path, contents).unwrap();
            ScratchFile(path)
        }

        fn path(&self) -> &str {
            self.0.to_str().unwrap()
        }
    }

    impl Drop for ScratchFile {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        TestCli::command().debug_assert();
    }

    #[test]
    fn global_flags() {
        let args = parse(&["health"]);
        if std::env::var_os("HYPHA_URL").is_none() {
            assert_eq!(args.url, "http://127.0.0.1:9181");
        }
        assert_eq!(args.timeout, 30);
        let args = parse(&[
            "--url",
            "http://10.1.2.3:9000/",
            "--timeout",
            "5",
            "health",
            "--api-token",
            "s3cret",
        ]);
        assert_eq!(args.url, "http://10.1.2.3:9000");
        assert_eq!(args.timeout, 5);
        assert_eq!(args.api_token.as_deref(), Some("s3cret"));
        assert_eq!(
            parse(&["--url", "localhost:1", "health"]).url,
            "http://localhost:1"
        );
        for bad in ["https://x:1", "x:1/api", ""] {
            assert_eq!(
                usage_error(&["--url", bad, "health"]),
                clap::error::ErrorKind::ValueValidation,
                "{bad}"
            );
        }
        assert_eq!(
            usage_error(&["--timeout", "0", "health"]),
            clap::error::ErrorKind::ValueValidation
        );
    }

    #[test]
    fn schema_add() {
        let sdl = "type Books { name: String }";
        let request = request(&["schema", "add", sdl]);
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.target(), "/api/v0/schema");
        assert_eq!(request.body, RequestBody::Text(sdl.into()));

        let file = ScratchFile::new("schema.graphql", sdl.as_bytes());
        let from_file = super::tests::request(&["schema", "add", "-f", file.path()]);
        assert_eq!(from_file.body, RequestBody::Text(sdl.into()));

        use clap::error::ErrorKind;
        assert_eq!(
            usage_error(&["schema", "add"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            usage_error(&["schema", "add", sdl, "-f", "x"]),
            ErrorKind::ArgumentConflict
        );
        let empty = build_request(&parse(&["schema", "add", "  "]).command).unwrap_err();
        assert_eq!(empty.to_string(), "the schema definition is empty");
        let missing =
            build_request(&parse(&["schema", "add", "-f", "/nonexistent/x"]).command).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read /nonexistent/x: "),
            "{missing}"
        );
    }

    #[test]
    fn collection_create() {
        let request = request(&[
            "collection",
            "create",
            "--name",
            "Books",
            r#"{"name":"Dune"}"#,
        ]);
        assert_eq!(request.method, Method::Post);
        assert_eq!(request.target(), "/api/v0/collections/Books");
        assert_eq!(json_body(&request), json!({"name": "Dune"}));
        assert_eq!(request.output, Output::Json);

        let many = r#"[{"name":"Dune"},{"name":"Emma"}]"#;
        let file = ScratchFile::new("docs.json", many.as_bytes());
        let from_file =
            super::tests::request(&["collection", "create", "-n", "Books", "-f", file.path()]);
        assert_eq!(
            json_body(&from_file),
            json!([{"name": "Dune"}, {"name": "Emma"}])
        );

        for bad in ["{", "42", "[]", "[1]"] {
            let error =
                build_request(&parse(&["collection", "create", "--name", "Books", bad]).command)
                    .unwrap_err();
            assert!(matches!(error, ClientError::Input(_)), "{bad}: {error}");
        }
        assert_eq!(
            usage_error(&["collection", "create", r#"{"a":1}"#]),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn collection_documents() {
        let get = request(&["collection", "get", "--name", "Books", "bae-123"]);
        assert_eq!(
            (get.method, get.target()),
            (
                Method::Get,
                "/api/v0/collections/Books/documents/bae-123".into()
            )
        );
        let get = request(&[
            "collection",
            "get",
            "--name",
            "Books",
            "bae-123",
            "--show-deleted",
        ]);
        assert_eq!(
            get.target(),
            "/api/v0/collections/Books/documents/bae-123?show_deleted=true"
        );

        let update = request(&[
            "collection",
            "update",
            "--name",
            "Books",
            "bae-123",
            r#"{"name":"Emma"}"#,
        ]);
        assert_eq!(update.method, Method::Patch);
        assert_eq!(
            update.target(),
            "/api/v0/collections/Books/documents/bae-123"
        );
        assert_eq!(json_body(&update), json!({"name": "Emma"}));
        assert!(
            build_request(&parse(&["collection", "update", "-n", "Books", "bae-1", "[]"]).command)
                .is_err()
        );

        let delete = request(&["collection", "delete", "--name", "Books", "bae-123"]);
        assert_eq!(delete.method, Method::Delete);
        assert_eq!(
            delete.target(),
            "/api/v0/collections/Books/documents/bae-123"
        );
        assert_eq!(delete.body, RequestBody::Empty);

        let ids = request(&["collection", "docIDs", "--name", "Books"]);
        assert_eq!(
            (ids.method, ids.target()),
            (Method::Get, "/api/v0/collections/Books/docIDs".into())
        );
        let ids = request(&["collection", "docIDs", "--name", "Books", "--show-deleted"]);
        assert_eq!(
            ids.target(),
            "/api/v0/collections/Books/docIDs?show_deleted=true"
        );
    }

    #[test]
    fn collection_list_and_describe() {
        assert_eq!(
            request(&["collection", "list"]).target(),
            "/api/v0/collections"
        );
        assert_eq!(
            request(&["collection", "describe"]).target(),
            "/api/v0/collections"
        );
        assert_eq!(
            request(&["collection", "describe", "--name", "Books"]).target(),
            "/api/v0/collections/Books"
        );
        assert_eq!(
            request(&["collection", "list", "--name", "Books"]).target(),
            "/api/v0/collections/Books/documents"
        );
        let list = request(&[
            "collection",
            "list",
            "--name",
            "Books",
            "--show-deleted",
            "--filter",
            r#"{"name":"John"}"#,
            "--limit",
            "10",
        ]);
        assert_eq!(list.method, Method::Get);
        assert_eq!(
            list.query,
            vec![
                ("show_deleted", "true".to_owned()),
                ("filter", r#"{"name":"John"}"#.to_owned()),
                ("limit", "10".to_owned())
            ]
        );
        assert_eq!(
            list.target(),
            "/api/v0/collections/Books/documents?show_deleted=true\
             &filter=%7B%22name%22%3A%22John%22%7D&limit=10"
        );
        assert!(
            build_request(
                &parse(&["collection", "list", "--name", "Books", "--filter", "[1]"]).command
            )
            .is_err()
        );
        // Document options without a collection are usage errors.
        assert_eq!(
            usage_error(&["collection", "list", "--limit", "3"]),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn path_segments_and_query_values_are_percent_encoded() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(
            percent_encode("a b/c?d#e%f&g=h"),
            "a%20b%2Fc%3Fd%23e%25f%26g%3Dh"
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
        let get = request(&["collection", "get", "--name", "My Books", "a/b"]);
        assert_eq!(
            get.target(),
            "/api/v0/collections/My%20Books/documents/a%2Fb"
        );
        for bad in ["", ".", ".."] {
            let error = build_request(&parse(&["collection", "get", "-n", "Books", bad]).command)
                .unwrap_err();
            assert!(error.to_string().starts_with("invalid docID"), "{error}");
        }
    }

    #[test]
    fn p2p_peers() {
        assert_eq!(request(&["p2p", "info"]).target(), "/api/v0/p2p/info");
        assert_eq!(request(&["p2p", "peers"]).target(), "/api/v0/p2p/peers");
        let address = format!("/ip4/10.0.0.2/tcp/9171/p2p/{PEER}");
        let connect = request(&["p2p", "connect", &address]);
        assert_eq!(
            (connect.method, connect.target()),
            (Method::Post, "/api/v0/p2p/peers".into())
        );
        assert_eq!(json_body(&connect), json!({ "address": address }));
        assert_eq!(
            usage_error(&["p2p", "connect", "10.0.0.2:9171"]),
            clap::error::ErrorKind::ValueValidation
        );
        let disconnect = request(&["p2p", "disconnect", PEER]);
        assert_eq!(disconnect.method, Method::Delete);
        assert_eq!(disconnect.target(), format!("/api/v0/p2p/peers/{PEER}"));
    }

    #[test]
    fn p2p_replicators() {
        let address = format!("/ip4/0.0.0.0/tcp/9172/p2p/{PEER}");
        let set = request(&[
            "p2p",
            "replicator",
            "set",
            "-c",
            "Books",
            "-c",
            "More,Authors",
            "--doc",
            "bae-1",
            &address,
        ]);
        assert_eq!(
            (set.method, set.target()),
            (Method::Post, "/api/v0/p2p/replicators".into())
        );
        assert_eq!(
            json_body(&set),
            json!({
                "address": address,
                "collections": ["Books", "More", "Authors"],
                "docIDs": ["bae-1"],
            })
        );
        let only_docs = request(&["p2p", "replicator", "set", "--doc", "bae-1", &address]);
        assert_eq!(
            json_body(&only_docs),
            json!({ "address": address, "collections": [], "docIDs": ["bae-1"] })
        );

        use clap::error::ErrorKind;
        assert_eq!(
            usage_error(&["p2p", "replicator", "set", &address]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            usage_error(&[
                "p2p",
                "replicator",
                "set",
                "-c",
                "Books",
                "/ip4/0.0.0.0/tcp/9172"
            ]),
            ErrorKind::ValueValidation
        );

        let delete = request(&["p2p", "replicator", "delete", PEER]);
        assert_eq!(
            (delete.method, delete.target()),
            (Method::Delete, "/api/v0/p2p/replicators".into())
        );
        assert_eq!(
            json_body(&delete),
            json!({ "peer": PEER, "collections": [], "docIDs": [] })
        );
        let narrow = request(&[
            "p2p",
            "replicator",
            "delete",
            "-c",
            "Books",
            "--doc",
            "bae-2",
            &address,
        ]);
        assert_eq!(
            json_body(&narrow),
            json!({ "peer": address, "collections": ["Books"], "docIDs": ["bae-2"] })
        );

        let all = request(&["p2p", "replicator", "getall"]);
        assert_eq!(
            (all.method, all.target()),
            (Method::Get, "/api/v0/p2p/replicators".into())
        );
    }

    #[test]
    fn rpc_addreplicator_is_replicator_set() {
        let address = format!("/ip4/0.0.0.0/tcp/9172/p2p/{PEER}");
        let rpc = request(&["rpc", "addreplicator", "Books", &address]);
        assert_eq!(
            rpc,
            request(&["p2p", "replicator", "set", "-c", "Books", &address])
        );
        assert_eq!(
            json_body(&rpc),
            json!({ "address": address, "collections": ["Books"], "docIDs": [] })
        );
        assert_eq!(
            usage_error(&["rpc", "addreplicator", "Books"]),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn p2p_subscriptions() {
        for (kind, path, items) in [
            (
                "collection",
                "/api/v0/p2p/collections",
                ["Books", "Authors"],
            ),
            ("document", "/api/v0/p2p/documents", ["bae-1", "bae-2"]),
        ] {
            for (verb, method) in [("add", Method::Post), ("remove", Method::Delete)] {
                let request = request(&["p2p", kind, verb, items[0], items[1]]);
                assert_eq!(
                    (request.method, request.target()),
                    (method, path.to_owned())
                );
                assert_eq!(json_body(&request), json!(items));
            }
            let sync = request(&["p2p", kind, "sync", items[0]]);
            assert_eq!(
                (sync.method, sync.target()),
                (Method::Post, format!("{path}/sync"))
            );
            assert_eq!(json_body(&sync), json!([items[0]]));
            let all = request(&["p2p", kind, "getall"]);
            assert_eq!((all.method, all.target()), (Method::Get, path.to_owned()));
            assert_eq!(
                usage_error(&["p2p", kind, "add"]),
                clap::error::ErrorKind::MissingRequiredArgument
            );
        }
    }

    #[test]
    fn blocks_history_status_health_metrics() {
        let cid = "bafyreigh2akiscaildc";
        let json = request(&["block", "get", cid]);
        assert_eq!(json.target(), format!("/api/v0/blocks/{cid}?format=json"));
        assert_eq!(json.output, Output::Json);
        let raw = request(&["block", "get", cid, "--raw"]);
        assert_eq!(raw.target(), format!("/api/v0/blocks/{cid}"));
        assert_eq!(raw.output, Output::Raw);

        assert_eq!(
            request(&["dag", "bae-1"]).target(),
            "/api/v0/documents/bae-1/history"
        );
        assert_eq!(
            request(&["dag", "bae-1", "--limit", "5"]).target(),
            "/api/v0/documents/bae-1/history?limit=5"
        );
        assert_eq!(
            request(&["document", "status", "bae-1"]).target(),
            "/api/v0/documents/bae-1/sync"
        );
        let health = request(&["health"]);
        assert_eq!(
            (health.method, health.target()),
            (Method::Get, "/api/v0/health".into())
        );
        let metrics = request(&["metrics"]);
        assert_eq!(metrics.target(), "/api/v0/metrics");
        assert_eq!(metrics.output, Output::Text);
    }

    #[test]
    fn backups() {
        let export = request(&["backup", "export", "db.car"]);
        assert_eq!(
            (export.method, export.target()),
            (Method::Get, "/api/v0/backup/export".into())
        );
        assert_eq!(export.output, Output::File("db.car".into()));
        assert_eq!(export.body_limit(), BACKUP_LIMIT);
        let import = request(&["backup", "import", "db.car"]);
        assert_eq!(
            (import.method, import.target()),
            (Method::Post, "/api/v0/backup/import".into())
        );
        assert_eq!(import.body, RequestBody::CarFile("db.car".into()));
        assert_eq!(import.body_limit(), BODY_LIMIT);
    }

    #[test]
    fn pretty_json() {
        let mut out = Vec::new();
        print_json(br#"{"a":[true,null,-2.5,"x"],"m":{},"z":1}"#, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n  \"a\": [\n    true,\n    null,\n    -2.5,\n    \"x\"\n  ],\n  \"m\": {},\n  \"z\": 1\n}\n"
        );
        let mut out = Vec::new();
        print_json(b"not json", &mut out).unwrap();
        assert_eq!(out, b"not json\n");
        let mut out = Vec::new();
        print_json(b"", &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn error_lines() {
        let mut err = Vec::new();
        let code = report(Err(ClientError::Api("two\nlines".into())), &mut err);
        assert_eq!(code, ExitCode::FAILURE);
        assert_eq!(String::from_utf8(err).unwrap(), "Error: two lines\n");
        let mut err = Vec::new();
        assert_eq!(report(Ok(()), &mut err), ExitCode::SUCCESS);
        assert!(err.is_empty());
    }

    /// Accepts one connection within 10 s (so a test fails rather than hangs); the stream has a
    /// 10 s read timeout.
    fn accept_within(listener: &TcpListener) -> TcpStream {
        listener.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    return stream;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no client connected");
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// A one-shot HTTP/1.1 server on 127.0.0.1: answers the first request with `response` and
    /// hands back that request (head and body) as text.
    fn serve_once(response: Vec<u8>) -> (String, JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let stream = accept_within(&listener);
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut content_length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    content_length = value.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).unwrap();
            let mut stream: TcpStream = reader.into_inner();
            stream.write_all(&response).unwrap();
            stream.flush().unwrap();
            head + &String::from_utf8_lossy(&body)
        });
        (address, server)
    }

    fn http_response(status: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
        let mut response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        response.extend_from_slice(body);
        response
    }

    /// Runs `argv` against the one-shot server; returns stdout, the result and the request.
    fn exchange(argv: &[&str], response: Vec<u8>) -> (Vec<u8>, Result<(), ClientError>, String) {
        let (address, server) = serve_once(response);
        let mut full = vec!["--url", &address];
        full.extend_from_slice(argv);
        let mut out = Vec::new();
        let result = execute(&parse(&full), &mut out);
        (out, result, server.join().unwrap())
    }

    #[test]
    fn an_ok_body_is_printed_and_the_request_is_as_built() {
        let (out, result, request) = exchange(
            &[
                "--api-token",
                "s3cret",
                "collection",
                "create",
                "--name",
                "Books",
                r#"{"name":"Dune"}"#,
            ],
            http_response(
                "200 OK",
                "application/json",
                br#"{"_docID":"bae-1","name":"Dune"}"#,
            ),
        );
        result.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n  \"_docID\": \"bae-1\",\n  \"name\": \"Dune\"\n}\n"
        );
        assert!(
            request.starts_with("POST /api/v0/collections/Books HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nauthorization: bearer s3cret\r\n"),
            "{request}"
        );
        assert!(
            lower.contains("\r\ncontent-type: application/json\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with("\r\n\r\n{\"name\":\"Dune\"}"),
            "{request}"
        );
    }

    #[test]
    fn a_delete_with_a_body_sends_it() {
        let (_, result, request) = exchange(
            &["p2p", "replicator", "delete", PEER],
            http_response("204 No Content", "application/json", b""),
        );
        result.unwrap();
        assert!(
            request.starts_with("DELETE /api/v0/p2p/replicators HTTP/1.1\r\n"),
            "{request}"
        );
        let body = request.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            json!({ "peer": PEER, "collections": [], "docIDs": [] })
        );
    }

    #[test]
    fn an_api_error_becomes_one_line_and_exit_code_1() {
        let (out, result, request) = exchange(
            &["collection", "get", "--name", "Books", "bae-1"],
            http_response(
                "404 Not Found",
                "application/json",
                br#"{"error":"unknown collection Books"}"#,
            ),
        );
        assert!(out.is_empty());
        assert!(request.starts_with("GET /api/v0/collections/Books/documents/bae-1 HTTP/1.1\r\n"));
        let mut err = Vec::new();
        assert_eq!(report(result, &mut err), ExitCode::FAILURE);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "Error: unknown collection Books\n"
        );
    }

    #[test]
    fn an_error_without_a_message_names_the_status() {
        let (_, result, _) = exchange(
            &["health"],
            http_response("502 Bad Gateway", "text/plain", b"upstream\nfailed"),
        );
        assert_eq!(
            result.unwrap_err().to_string(),
            "the hypha node answered 502 Bad Gateway: upstream failed"
        );
    }

    #[test]
    fn a_refused_connection_names_the_node() {
        let address = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string()
        };
        let mut out = Vec::new();
        let error = execute(&parse(&["--url", &address, "health"]), &mut out).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot reach the hypha node at http://{address}: connection refused \
                 — is `hypha start` running?"
            )
        );
    }

    #[test]
    fn raw_and_text_bodies_are_written_as_they_are() {
        let bytes = [0u8, 159, 146, 150, 10];
        let (out, result, request) = exchange(
            &["block", "get", "bafy1", "--raw"],
            http_response("200 OK", "application/octet-stream", &bytes),
        );
        result.unwrap();
        assert_eq!(out, bytes);
        assert!(request.starts_with("GET /api/v0/blocks/bafy1 HTTP/1.1\r\n"));

        let metrics = b"# TYPE hypha_docs gauge\nhypha_docs 3\n";
        let (out, result, _) =
            exchange(&["metrics"], http_response("200 OK", "text/plain", metrics));
        result.unwrap();
        assert_eq!(out, metrics);
    }

    #[test]
    fn backup_export_streams_to_the_file_and_import_sends_it() {
        let car = b"\x3a\xa2car-bytes";
        let file = ScratchFile::new("export.car", b"old");
        let path = file.0.clone();
        let (out, result, _) = exchange(
            &["backup", "export", path.to_str().unwrap()],
            http_response("200 OK", CAR_MEDIA_TYPE, car),
        );
        result.unwrap();
        assert_eq!(fs::read(&path).unwrap(), car);
        assert!(!path.with_extension("car.tmp").exists());
        let summary: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            summary,
            json!({ "file": path.to_str().unwrap(), "bytes": car.len() })
        );

        let (_, result, request) = exchange(
            &["backup", "import", path.to_str().unwrap()],
            http_response("200 OK", "application/json", b"{}"),
        );
        result.unwrap();
        assert!(request.starts_with("POST /api/v0/backup/import HTTP/1.1\r\n"));
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: application/vnd.ipld.car")
        );
        assert!(request.ends_with(&String::from_utf8_lossy(car).into_owned()));
    }

    #[test]
    fn a_failed_export_leaves_no_file() {
        let path = std::env::temp_dir().join(format!("hypha-missing-{}.car", std::process::id()));
        let (_, result, _) = exchange(
            &["backup", "export", path.to_str().unwrap()],
            http_response(
                "500 Internal Server Error",
                "application/json",
                br#"{"error":"disk"}"#,
            ),
        );
        assert_eq!(result.unwrap_err().to_string(), "disk");
        assert!(!path.exists());
    }

    #[test]
    fn bodies_past_the_limit_are_refused() {
        let connection = Connection {
            base: "http://127.0.0.1:1".into(),
            token: None,
            timeout_secs: 30,
        };
        let mut body = ureq::Body::builder().data(vec![b'x'; 11]);
        let error = connection.read_body(&mut body, 10).unwrap_err();
        assert!(
            matches!(error, ClientError::TooLarge { limit: 10 }),
            "{error}"
        );
        let mut body = ureq::Body::builder().data(vec![b'x'; 10]);
        assert_eq!(connection.read_body(&mut body, 10).unwrap().len(), 10);
    }

    #[test]
    fn a_slow_node_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        // Accepts, never answers, and lets go once the client has given up.
        let server = thread::spawn(move || {
            let mut stream = accept_within(&listener);
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        });
        let mut out = Vec::new();
        let error = execute(
            &parse(&["--url", &address, "--timeout", "1", "health"]),
            &mut out,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the hypha node at http://{address} did not answer within 1 s (raise --timeout?)"
            )
        );
        server.join().unwrap();
    }
}
