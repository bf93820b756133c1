//! The HTTP API (axum), under `/api/v0`.
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /health` | | `{"status": "ok", "peerId": …, "p2p": bool}` |
//! | `GET /metrics` | | Prometheus text |
//! | `POST /schema` | GraphQL SDL (text) | the collections it declared |
//! | `GET /collections`, `GET /collections/{name}` | | collections: name, IDs, fields |
//! | `POST /collections/{name}` | a JSON object, or an array of them | `{"docID", "cid"}` (or an array) once durable |
//! | `GET /collections/{name}/documents?show_deleted&filter={json}&limit&after` | | documents, docID order |
//! | `GET /collections/{name}/docIDs?show_deleted` | | docIDs |
//! | `GET /collections/{name}/documents/{docID}?show_deleted` | | the document: `{"_docID", "_deleted", …fields}` |
//! | `PATCH /collections/{name}/documents/{docID}` | fields to change | `{"docID", "cid"}` |
//! | `DELETE /collections/{name}/documents/{docID}` | | `{"docID", "cid"}` |
//! | `GET /blocks/{cid}` (`?format=json`) | | the block's DAG-CBOR bytes (or decoded) |
//! | `GET /documents/{docID}/history?limit` | | blocks, newest first |
//! | `GET /documents/{docID}/sync` | | heads, height, blocks, deleted, whether its history is complete |
//! | `GET /events` | | server-sent events: `change` `{"docID", "collection", "heads"}` |
//! | `GET /backup/export`, `POST /backup/import` | CAR v1 | every applied block / `{"blocks", "applied"}` |
//! | `GET /p2p/info` | | `{"id", "addresses"}` |
//! | `GET /p2p/peers`, `POST /p2p/peers`, `DELETE /p2p/peers/{peerID}` | `{"address": maddr/p2p/ID}` | connected peers / connect / disconnect |
//! | `GET`, `POST`, `DELETE /p2p/replicators` | `{"address" or "peer", "collections", "docIDs"}` (or DefraDB's `{"Info": {"ID", "Addrs"}, "Collections"}`) | replicators with their outbox / set (adds to the scope) / remove from the scope (all of it when none is named) |
//! | `GET`, `POST`, `DELETE /p2p/collections` | `["Books", …]` | followed collections |
//! | `GET`, `POST`, `DELETE /p2p/documents` | `["bae-…", …]` | followed documents |
//! | `POST /p2p/collections/sync`, `POST /p2p/documents/sync` | names / docIDs | `{"sessions": n}`: head exchanges started with connected peers |
//!
//! Errors are `{"error": "…"}`: 400 for input that does not parse or fit the schema (and for
//! p2p endpoints when the node runs with `--no-p2p`), 401 without the `--api-token` bearer
//! token, 404 for an unknown collection, document, block or peer, 413 past the body limit
//! ([`DEFAULT_MAX_BODY_BYTES`](crate::settings::DEFAULT_MAX_BODY_BYTES)) or a store limit, 503
//! when the store's queue is full, 500 when storage fails. A write is answered once it is
//! durable; nothing is written for a request that fails validation.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use hypha_crdt::{Cid, Collection, CollectionId, DocId, VerifiedBlock};
use hypha_store::{
    CommitError, Committed, Mutation, PeerKey, ReadError, Replicator, Store, Subscription,
};
use libp2p::{Multiaddr, PeerId};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::Metrics;
use crate::service::{Change, Request as NodeRequest};
use crate::settings;

/// Most documents one list answers.
pub(crate) const MAX_LIST: usize = 10_000;
/// Documents a list answers unless `limit` says otherwise.
pub(crate) const DEFAULT_LIST: usize = 1_000;
/// Most history blocks one request answers.
pub(crate) const MAX_HISTORY: usize = 10_000;
/// Most documents one create may carry.
pub(crate) const MAX_BATCH: usize = 10_000;

/// What every handler shares.
pub(crate) struct ApiState {
    pub(crate) store: Arc<Store>,
    /// The event loop; `None` with `--no-p2p`.
    pub(crate) node: Option<mpsc::Sender<NodeRequest>>,
    pub(crate) changes: broadcast::Sender<Change>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) token: Option<String>,
    pub(crate) namespace: String,
    pub(crate) peer_id: Option<PeerId>,
    /// Replicator changes read, modify and write the stored scope: one at a time.
    pub(crate) replicators: tokio::sync::Mutex<()>,
}

type Shared = State<Arc<ApiState>>;

/// The router.
pub(crate) fn router(state: Arc<ApiState>, max_body: usize) -> Router {
    let api = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/schema", post(add_schema))
        .route("/collections", get(list_collections))
        .route("/collections/{name}", get(get_collection).post(create))
        .route("/collections/{name}/documents", get(list_documents))
        .route("/collections/{name}/docIDs", get(doc_ids))
        .route(
            "/collections/{name}/documents/{doc}",
            get(get_document).patch(update).delete(delete),
        )
        .route("/blocks/{cid}", get(get_block))
        .route("/documents/{doc}/history", get(history))
        .route("/documents/{doc}/sync", get(sync_status))
        .route("/events", get(events))
        .route("/backup/export", get(export))
        .route("/backup/import", post(import))
        .route("/p2p/info", get(p2p_info))
        .route("/p2p/peers", get(peers).post(connect))
        .route("/p2p/peers/{peer}", axum::routing::delete(disconnect))
        .route(
            "/p2p/replicators",
            get(replicators)
                .post(set_replicator)
                .delete(delete_replicator),
        )
        .route(
            "/p2p/collections",
            get(followed_collections)
                .post(follow_collections)
                .delete(unfollow_collections),
        )
        .route(
            "/p2p/documents",
            get(followed_documents)
                .post(follow_documents)
                .delete(unfollow_documents),
        )
        .route("/p2p/collections/sync", post(sync_collections))
        .route("/p2p/documents/sync", post(sync_documents));
    Router::new()
        .nest("/api/v0", api)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The bearer token, and the request counters.
async fn guard(State(state): Shared, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            state
                .metrics
                .api_client_errors
                .fetch_add(1, Ordering::Relaxed);
            return ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
                .into_response();
        }
    }
    let response = next.run(request).await;
    let counter = match response.status().as_u16() {
        0..400 => &state.metrics.api_ok,
        400..500 => &state.metrics.api_client_errors,
        _ => &state.metrics.api_server_errors,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    response
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error answer: `{"error": message}` with `status`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }
    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    fn p2p_disabled() -> ApiError {
        ApiError::bad("p2p is disabled: the node was started with --no-p2p")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ReadError> for ApiError {
    fn from(e: ReadError) -> ApiError {
        ApiError::internal(chain(&e))
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> ApiError {
        let status = match &e {
            CommitError::UnknownCollection(_) | CommitError::UnknownDocument(_) => {
                StatusCode::NOT_FOUND
            }
            CommitError::Limit { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CommitError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            CommitError::Storage(_) | CommitError::Closed => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, chain(&e))
    }
}

/// `error: source: source…`, each cause once.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// A request body, its rejections (too large, unreadable) as JSON errors.
struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Body, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(Body)
            .map_err(|e: BytesRejection| ApiError::new(e.status(), e.body_text()))
    }
}

impl Body {
    fn json(&self) -> ApiResult<Value> {
        if self.0.is_empty() {
            return Err(ApiError::bad("the request needs a JSON body"));
        }
        serde_json::from_slice(&self.0).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))
    }

    fn strings(&self, what: &str) -> ApiResult<Vec<String>> {
        let value = self.json()?;
        let list = match &value {
            Value::Array(items) => items,
            Value::Object(o) => match o.get(what) {
                Some(Value::Array(items)) => items,
                _ => return Err(ApiError::bad(format!("expected a JSON array of {what}"))),
            },
            _ => return Err(ApiError::bad(format!("expected a JSON array of {what}"))),
        };
        let out = list
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    ApiError::bad(format!("expected a JSON array of {what} (strings)"))
                })
            })
            .collect::<ApiResult<Vec<_>>>()?;
        // An empty list is a no-op (SCENARIOS F3), not an error.
        Ok(out)
    }
}

/// Query parameters, a malformed query as a JSON error.
struct Params(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params, ApiError> {
        Query::<BTreeMap<String, String>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Params(q))
            .map_err(|e: QueryRejection| ApiError::bad(e.body_text()))
    }
}

impl Params {
    fn flag(&self, name: &str) -> ApiResult<bool> {
        match self.0.get(name).map(String::as_str) {
            None | Some("false" | "0") => Ok(false),
            Some("" | "true" | "1") => Ok(true),
            Some(other) => Err(ApiError::bad(format!(
                "{name}={other}: expected true or false"
            ))),
        }
    }

    fn number(&self, name: &str, default: usize, max: usize) -> ApiResult<usize> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(ApiError::bad(format!(
                    "{name}={v}: expected a number up to {max}"
                ))),
            },
        }
    }
}

fn parse_doc(s: &str) -> ApiResult<DocId> {
    s.parse()
        .map_err(|e: hypha_crdt::ParseDocIdError| ApiError::bad(e.to_string()))
}

fn parse_cid(s: &str) -> ApiResult<Cid> {
    Cid::try_from(s).map_err(|e| ApiError::bad(format!("invalid CID {s:?}: {e}")))
}

fn parse_peer(s: &str) -> ApiResult<PeerId> {
    s.parse()
        .map_err(|e| ApiError::bad(format!("invalid peer ID {s:?}: {e}")))
}

/// `maddr/p2p/ID` → (ID, dialable address).
fn parse_peer_address(s: &str) -> ApiResult<(PeerId, Multiaddr)> {
    let mut warnings = Vec::new();
    let (peer, address) = settings::peer_address("address", s, &mut warnings)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    for w in warnings {
        tracing::warn!(target: "hypha.api", "{w}");
    }
    Ok((peer, address))
}

impl ApiState {
    fn collection(&self, name: &str) -> ApiResult<Collection> {
        self.store
            .collection(name)?
            .ok_or_else(|| ApiError::not_found(format!("collection {name:?} not found")))
    }

    fn collection_names(&self) -> ApiResult<BTreeMap<CollectionId, String>> {
        Ok(self
            .store
            .collections()?
            .into_iter()
            .map(|c| (c.id(), c.name().to_string()))
            .collect())
    }

    fn node(&self) -> ApiResult<&mpsc::Sender<NodeRequest>> {
        self.node.as_ref().ok_or_else(ApiError::p2p_disabled)
    }

    /// Sends a request to the event loop and waits for its answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> NodeRequest) -> ApiResult<T> {
        let (tx, rx) = oneshot::channel();
        self.node()?.send(make(tx)).await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down")
        })?;
        rx.await.map_err(|_| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down")
        })
    }

    /// Commits `mutation` — through the coordinator when p2p runs (so it is published and
    /// replicated), straight to the store otherwise — and waits until it is durable.
    async fn commit(&self, mutation: Mutation) -> ApiResult<Committed> {
        self.commit_all(vec![mutation])
            .await
            .pop()
            .unwrap_or_else(|| Err(ApiError::internal("a commit went unanswered")))
    }

    /// Commits `mutations` in order, all queued before any is waited for, so they share group
    /// commits (one fsync for many) instead of paying one each. Answers in the same order.
    async fn commit_all(&self, mutations: Vec<Mutation>) -> Vec<ApiResult<Committed>> {
        if self.node.is_some() {
            let mut waiting = Vec::with_capacity(mutations.len());
            for mutation in mutations {
                let (tx, rx) = oneshot::channel();
                let sent = match self.node() {
                    Ok(node) => node.send(NodeRequest::Submit(mutation, tx)).await.is_ok(),
                    Err(_) => false,
                };
                waiting.push(sent.then_some(rx));
            }
            let mut out = Vec::with_capacity(waiting.len());
            for rx in waiting {
                let shutting_down =
                    || ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
                out.push(match rx {
                    Some(rx) => match rx.await {
                        Ok(result) => result.map_err(ApiError::from),
                        Err(_) => Err(shutting_down()),
                    },
                    None => Err(shutting_down()),
                });
            }
            out
        } else {
            let store = Arc::clone(&self.store);
            let results = tokio::task::spawn_blocking(move || {
                let tickets: Vec<_> = mutations.into_iter().map(|m| store.submit(m)).collect();
                tickets.into_iter().map(|t| t.wait()).collect::<Vec<_>>()
            })
            .await;
            match results {
                Ok(results) => results
                    .into_iter()
                    .map(|r| {
                        let receipt = r?;
                        if let Committed::Local { block, .. } = &receipt.committed {
                            let _ = self.changes.send(Change {
                                doc: block.doc_id(),
                                collection: block.block().delta.collection,
                                heads: vec![block.cid()],
                            });
                        }
                        Ok(receipt.committed)
                    })
                    .collect(),
                Err(e) => vec![Err(ApiError::internal(e.to_string()))],
            }
        }
    }

    /// Reads of a document make it hot (followed for a while).
    fn touch(&self, doc: DocId, collection: CollectionId) {
        if let Some(node) = &self.node {
            // Best effort: a full queue skips it.
            let _ = node.try_send(NodeRequest::Touch(doc, collection));
        }
    }
}

fn written(committed: &Committed) -> Value {
    match committed {
        Committed::Local { block, .. } => {
            json!({ "docID": block.doc_id().to_string(), "cid": block.cid().to_string() })
        }
        _ => json!({}),
    }
}

fn collection_json(c: &Collection) -> Value {
    let fields: Vec<Value> = c
        .fields()
        .map(|f| json!({ "name": f.name, "kind": format!("{:?}", f.kind), "crdt": f.crdt.name() }))
        .collect();
    json!({
        "name": c.name(),
        "collectionId": c.id().to_string(),
        "schemaVersionId": c.version().to_string(),
        "fields": fields,
        "sdl": c.to_sdl(),
    })
}

async fn health(State(state): Shared) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "peerId": state.peer_id.map(|p| p.to_string()),
        "p2p": state.node.is_some(),
    }))
}

async fn metrics(State(state): Shared) -> Response {
    let node = match &state.node {
        Some(_) => state.ask(NodeRequest::Stats).await.ok(),
        None => None,
    };
    let store = state.store.stats().ok();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(node.as_ref(), store.as_ref()),
    )
        .into_response()
}

async fn add_schema(State(state): Shared, body: Body) -> ApiResult {
    let sdl = std::str::from_utf8(&body.0)
        .map_err(|_| ApiError::bad("the schema must be UTF-8 GraphQL SDL"))?
        .to_string();
    if sdl.trim().is_empty() {
        return Err(ApiError::bad("the request needs a GraphQL SDL body"));
    }
    // Parse first, for the names (and a clear error without a round trip to the store).
    let declared =
        hypha_crdt::parse_sdl(&state.namespace, &sdl).map_err(|e| ApiError::bad(chain(&e)))?;
    state.commit(Mutation::AddSchema { sdl }).await?;
    let mut out = Vec::new();
    for c in declared {
        out.push(collection_json(&state.collection(c.name())?));
    }
    Ok(Json(Value::Array(out)))
}

async fn list_collections(State(state): Shared) -> ApiResult {
    Ok(Json(Value::Array(
        state
            .store
            .collections()?
            .iter()
            .map(collection_json)
            .collect(),
    )))
}

async fn get_collection(State(state): Shared, Path(name): Path<String>) -> ApiResult {
    Ok(Json(collection_json(&state.collection(&name)?)))
}

async fn create(State(state): Shared, Path(name): Path<String>, body: Body) -> ApiResult {
    let collection = state.collection(&name)?;
    let value = body.json()?;
    let (documents, many) = match value {
        Value::Array(items) => (items, true),
        object @ Value::Object(_) => (vec![object], false),
        _ => {
            return Err(ApiError::bad(
                "expected a JSON object or an array of objects",
            ));
        }
    };
    if documents.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} documents in one request, at most {MAX_BATCH}",
                documents.len()
            ),
        ));
    }
    if let Some(i) = documents.iter().position(|d| !d.is_object()) {
        return Err(ApiError::bad(format!("item {i} is not a JSON object")));
    }
    // Validate every document before committing any: a bad item writes nothing.
    for (i, document) in documents.iter().enumerate() {
        if let Err(e) = hypha_crdt::document::validate(&collection, document) {
            let message = chain(&e);
            return Err(ApiError::bad(if many {
                format!("item {i}: {message}")
            } else {
                message
            }));
        }
    }
    let mutations = documents
        .into_iter()
        .map(|document| Mutation::Create {
            collection: name.clone(),
            document,
        })
        .collect();
    // Validated above; what the store may still refuse (a size limit) fails the request at
    // the first such item, the ones before it committed (each is its own mutation).
    let mut out = Vec::new();
    for (i, result) in state.commit_all(mutations).await.into_iter().enumerate() {
        match result {
            Ok(committed) => out.push(written(&committed)),
            Err(e) if many => {
                return Err(ApiError::new(e.status, format!("item {i}: {}", e.message)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Json(if many {
        Value::Array(out)
    } else {
        out.pop().unwrap_or_default()
    }))
}

/// The document as the API shows it, if it is in `collection` (and not deleted, unless
/// `show_deleted`).
fn read_document(
    state: &ApiState,
    collection: &Collection,
    doc: DocId,
    show_deleted: bool,
) -> ApiResult<Option<Value>> {
    let Some(doc_state) = state.store.state(&doc)? else {
        return Ok(None);
    };
    if doc_state.collection != collection.id() || (doc_state.deleted && !show_deleted) {
        return Ok(None);
    }
    let Some(fields) = state.store.document(&doc)? else {
        return Ok(None);
    };
    let mut out = Map::new();
    out.insert("_docID".into(), doc.to_string().into());
    out.insert("_deleted".into(), doc_state.deleted.into());
    out.extend(fields);
    Ok(Some(Value::Object(out)))
}

async fn get_document(
    State(state): Shared,
    Path((name, doc)): Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let collection = state.collection(&name)?;
    let doc = parse_doc(&doc)?;
    let show_deleted = params.flag("show_deleted")?;
    let document = read_document(&state, &collection, doc, show_deleted)?
        .ok_or_else(|| ApiError::not_found(format!("document {doc} not found in {name}")))?;
    state.touch(doc, collection.id());
    Ok(Json(document))
}

async fn list_documents(
    State(state): Shared,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult {
    let collection = state.collection(&name)?;
    let show_deleted = params.flag("show_deleted")?;
    let limit = params.number("limit", DEFAULT_LIST, MAX_LIST)?;
    let filter = match params.0.get("filter") {
        None => Map::new(),
        Some(f) => match serde_json::from_str(f) {
            Ok(Value::Object(o)) => o,
            _ => {
                return Err(ApiError::bad(
                    "filter must be a JSON object of field values, e.g. {\"name\":\"John\"}",
                ));
            }
        },
    };
    for field in filter.keys() {
        if collection.field(field).is_none() && !field.starts_with('_') {
            return Err(ApiError::bad(format!(
                "filter: {name} has no field {field:?}"
            )));
        }
    }
    let mut after = params.0.get("after").map(|a| parse_doc(a)).transpose()?;
    let mut out = Vec::new();
    'pages: while out.len() < limit {
        let page = state
            .store
            .documents(collection.id(), show_deleted, after, 256)?;
        let Some(last) = page.last().copied() else {
            break;
        };
        for doc in page {
            if let Some(document) = read_document(&state, &collection, doc, show_deleted)?
                && filter.iter().all(|(k, v)| document.get(k) == Some(v))
            {
                out.push(document);
                if out.len() == limit {
                    break 'pages;
                }
            }
        }
        after = Some(last);
    }
    Ok(Json(Value::Array(out)))
}

async fn doc_ids(State(state): Shared, Path(name): Path<String>, params: Params) -> ApiResult {
    let collection = state.collection(&name)?;
    let show_deleted = params.flag("show_deleted")?;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .documents(collection.id(), show_deleted, after, 4096)?;
        let Some(last) = page.last().copied() else {
            break;
        };
        out.extend(page.iter().map(|d| Value::from(d.to_string())));
        after = Some(last);
    }
    Ok(Json(Value::Array(out)))
}

/// The document `doc` of collection `name`, for an update or delete.
fn existing(state: &ApiState, name: &str, doc: &str) -> ApiResult<DocId> {
    let collection = state.collection(name)?;
    let doc = parse_doc(doc)?;
    match state.store.state(&doc)? {
        Some(s) if s.collection == collection.id() => Ok(doc),
        _ => Err(ApiError::not_found(format!(
            "document {doc} not found in {name}"
        ))),
    }
}

async fn update(
    State(state): Shared,
    Path((name, doc)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    let doc_id = existing(&state, &name, &doc)?;
    let patch = body.json()?;
    if !patch.is_object() {
        return Err(ApiError::bad(
            "expected a JSON object of the fields to change",
        ));
    }
    let committed = state.commit(Mutation::Update { doc_id, patch }).await?;
    Ok(Json(written(&committed)))
}

async fn delete(State(state): Shared, Path((name, doc)): Path<(String, String)>) -> ApiResult {
    let doc_id = existing(&state, &name, &doc)?;
    let committed = state.commit(Mutation::Delete { doc_id }).await?;
    Ok(Json(written(&committed)))
}

fn block_json(block: &VerifiedBlock) -> Value {
    let b = block.block();
    let fields: Map<String, Value> = b
        .delta
        .fields
        .iter()
        .map(|(name, op)| {
            let op = match op {
                hypha_crdt::FieldOp::Lww { priority, value } => json!({
                    "crdt": "lww",
                    "priority": priority,
                    "value": serde_json::to_value(value).unwrap_or(Value::Null),
                }),
                hypha_crdt::FieldOp::Counter { crdt, value, nonce } => json!({
                    "crdt": crdt.name(),
                    "value": value,
                    "nonce": nonce,
                }),
            };
            (name.clone(), op)
        })
        .collect();
    json!({
        "cid": block.cid().to_string(),
        "docID": b.delta.doc_id.to_string(),
        "collectionId": b.delta.collection.to_string(),
        "schemaVersionId": b.delta.schema_version.to_string(),
        "priority": b.delta.priority,
        "status": format!("{:?}", b.delta.status),
        "parents": b.heads.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "fields": fields,
        "author": b.author.map(|a| a.0.iter().map(|x| format!("{x:02x}")).collect::<String>()),
        "signed": b.signature.is_some(),
    })
}

async fn get_block(
    State(state): Shared,
    Path(cid): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let cid = parse_cid(&cid)?;
    let not_found = || ApiError::not_found(format!("block {cid} not found"));
    if params.0.get("format").map(String::as_str) == Some("json") {
        let block = state.store.block(&cid)?.ok_or_else(not_found)?;
        return Ok(Json(block_json(&block)).into_response());
    }
    let bytes = state.store.block_bytes(&cid)?.ok_or_else(not_found)?;
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.ipld.dag-cbor")],
        bytes,
    )
        .into_response())
}

async fn history(State(state): Shared, Path(doc): Path<String>, params: Params) -> ApiResult {
    let doc = parse_doc(&doc)?;
    let limit = params.number("limit", DEFAULT_LIST, MAX_HISTORY)?;
    if state.store.state(&doc)?.is_none() {
        return Err(ApiError::not_found(format!("document {doc} not found")));
    }
    let (blocks, more) = state.store.history(&doc, limit)?;
    Ok(Json(json!({
        "docID": doc.to_string(),
        "blocks": blocks.iter().map(block_json).collect::<Vec<_>>(),
        "more": more,
    })))
}

async fn sync_status(State(state): Shared, Path(doc): Path<String>) -> ApiResult {
    let doc = parse_doc(&doc)?;
    let s = state
        .store
        .state(&doc)?
        .ok_or_else(|| ApiError::not_found(format!("document {doc} not found")))?;
    let names = state.collection_names()?;
    let followed = state.store.subscriptions()?;
    Ok(Json(json!({
        "docID": doc.to_string(),
        "collection": names.get(&s.collection),
        "collectionId": s.collection.to_string(),
        "heads": s.heads.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "height": s.height,
        "blocks": s.blocks,
        "deleted": s.deleted,
        "followed": followed.documents.contains(&doc) || followed.collections.contains(&s.collection),
        "pendingBlocks": state.store.stats()?.pending,
    })))
}

async fn events(State(state): Shared) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = state.changes.subscribe();
    let stream = futures::stream::unfold(
        (rx, state, BTreeMap::<CollectionId, String>::new()),
        |(mut rx, state, mut names)| async move {
            match rx.recv().await {
                Ok(change) => {
                    if !names.contains_key(&change.collection)
                        && let Ok(all) = state.collection_names()
                    {
                        names = all;
                    }
                    let data = json!({
                        "docID": change.doc.to_string(),
                        "collection": names.get(&change.collection),
                        "collectionId": change.collection.to_string(),
                        "heads": change.heads.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    });
                    let event = SseEvent::default().event("change").data(data.to_string());
                    Some((Ok(event), (rx, state, names)))
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let event = SseEvent::default()
                        .event("lagged")
                        .data(json!({ "missed": n }).to_string());
                    Some((Ok(event), (rx, state, names)))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn export(State(state): Shared) -> ApiResult<Response> {
    let store = Arc::clone(&state.store);
    let car = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ReadError> {
        let mut roots = Vec::new();
        let mut blocks = Vec::new();
        for collection in store.collections()? {
            let mut after = None;
            loop {
                let page = store.documents(collection.id(), true, after, 1024)?;
                let Some(last) = page.last().copied() else {
                    break;
                };
                for doc in page {
                    let (mut history, _) = store.history(&doc, usize::MAX)?;
                    if let Some(state) = store.state(&doc)? {
                        roots.extend(state.heads);
                    }
                    // Oldest first: an import applies each block as it comes.
                    history.reverse();
                    blocks.extend(history);
                }
                after = Some(last);
            }
        }
        Ok(crate::car::write(&roots, blocks))
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.ipld.car"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"hypha-backup.car\"",
            ),
        ],
        car,
    )
        .into_response())
}

async fn import(State(state): Shared, body: Body) -> ApiResult {
    // Read and verify the whole file before writing anything.
    let (_, blocks) = crate::car::read(&body.0).map_err(|e| ApiError::bad(e.to_string()))?;
    let collections: BTreeSet<CollectionId> = state
        .store
        .collections()?
        .iter()
        .map(Collection::id)
        .collect();
    if let Some(b) = blocks
        .iter()
        .find(|b| !collections.contains(&b.block().delta.collection))
    {
        return Err(ApiError::bad(format!(
            "block {} belongs to collection {}, which this node does not have: add its schema first",
            b.cid(),
            b.block().delta.collection
        )));
    }
    let total = blocks.len();
    let mut ingest = Vec::new();
    for block in blocks {
        if !state.store.contains(&block.cid())? {
            ingest.push(Mutation::Ingest { block });
        }
    }
    let mut applied = 0usize;
    for result in state.commit_all(ingest).await {
        if let Committed::Ingested { outcome } = result? {
            applied += usize::from(matches!(outcome, hypha_crdt::Outcome::Applied { .. }));
        }
    }
    Ok(Json(json!({ "blocks": total, "applied": applied })))
}

async fn p2p_info(State(state): Shared) -> ApiResult {
    let info = state.ask(NodeRequest::Info).await?;
    Ok(Json(serde_json::to_value(info).unwrap_or_default()))
}

async fn peers(State(state): Shared) -> ApiResult {
    let peers = state.ask(NodeRequest::Peers).await?;
    Ok(Json(serde_json::to_value(peers).unwrap_or_default()))
}

async fn connect(State(state): Shared, body: Body) -> ApiResult {
    let value = body.json()?;
    let address = value
        .get("address")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad("expected {\"address\": \"<multiaddr>/p2p/<peer ID>\"}"))?;
    let (peer, address) = parse_peer_address(address)?;
    state
        .ask(|tx| NodeRequest::Connect(peer, address, tx))
        .await?
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e))?;
    Ok(Json(json!({ "id": peer.to_string() })))
}

async fn disconnect(State(state): Shared, Path(peer): Path<String>) -> ApiResult {
    let peer = parse_peer(&peer)?;
    state.ask(|tx| NodeRequest::Disconnect(peer, tx)).await?;
    Ok(Json(json!({})))
}

fn peer_of(key: &PeerKey) -> Option<PeerId> {
    PeerId::from_bytes(&key.0).ok()
}

async fn replicators(State(state): Shared) -> ApiResult {
    state.node()?;
    let names = state.collection_names()?;
    let mut out = Vec::new();
    for (key, r) in state.store.replicators()? {
        let Some(peer) = peer_of(&key) else { continue };
        let outbox = state.store.outbox(&key, 0)?;
        out.push(json!({
            "id": peer.to_string(),
            "addresses": r.addresses.iter().filter_map(|a| Multiaddr::try_from(a.clone()).ok()).map(|a| a.to_string()).collect::<Vec<_>>(),
            "collections": r.collections.iter().map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect::<Vec<_>>(),
            "docIDs": r.documents.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "outbox": outbox.len,
            "catchUp": outbox.catch_up,
        }));
    }
    Ok(Json(Value::Array(out)))
}

/// A replicator request: the peer (and its address, to set), and the scope named.
struct ReplicatorRequest {
    peer: PeerId,
    address: Option<Multiaddr>,
    collections: Vec<String>,
    docs: Vec<DocId>,
}

fn replicator_request(value: &Value) -> ApiResult<ReplicatorRequest> {
    let strings = |v: Option<&Value>, what: &str| -> ApiResult<Vec<String>> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::bad(format!("{what} must be strings")))
                })
                .collect(),
            Some(_) => Err(ApiError::bad(format!("{what} must be an array"))),
        }
    };
    // DefraDB's shape: {"Info": {"ID": …, "Addrs": [...]}, "Collections": [...]}.
    if let Some(info) = value.get("Info") {
        let peer = parse_peer(info.get("ID").and_then(Value::as_str).unwrap_or_default())?;
        let address = strings(info.get("Addrs"), "Info.Addrs")?
            .first()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .map_err(|e| ApiError::bad(format!("invalid multiaddr {a:?}: {e}")))
            })
            .transpose()?
            .map(|a| settings::dialable(a, &mut Vec::new()));
        return Ok(ReplicatorRequest {
            peer,
            address,
            collections: strings(value.get("Collections"), "Collections")?,
            docs: Vec::new(),
        });
    }
    let (peer, address) = match (value.get("address"), value.get("peer")) {
        (Some(Value::String(a)), _) => {
            let (peer, address) = parse_peer_address(a)?;
            (peer, Some(address))
        }
        (_, Some(Value::String(p))) => match p.parse::<Multiaddr>() {
            Ok(a) if p.starts_with('/') => {
                let (peer, address) = parse_peer_address(&a.to_string())?;
                (peer, Some(address))
            }
            _ => (parse_peer(p)?, None),
        },
        _ => {
            return Err(ApiError::bad(
                "expected {\"address\": \"<multiaddr>/p2p/<peer ID>\", \"collections\": [...], \"docIDs\": [...]}",
            ));
        }
    };
    let docs = strings(value.get("docIDs"), "docIDs")?
        .iter()
        .map(|d| parse_doc(d))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(ReplicatorRequest {
        peer,
        address,
        collections: strings(value.get("collections"), "collections")?,
        docs,
    })
}

async fn set_replicator(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let request = replicator_request(&body.json()?)?;
    if request.collections.is_empty() && request.docs.is_empty() {
        return Err(ApiError::bad(
            "name at least one collection or docID to replicate",
        ));
    }
    let address = request.address.ok_or_else(|| {
        ApiError::bad("setting a replicator needs its address (<multiaddr>/p2p/<peer ID>)")
    })?;
    if Some(request.peer) == state.peer_id {
        return Err(ApiError::bad("a node cannot replicate to itself"));
    }
    let ids = request
        .collections
        .iter()
        .map(|name| state.collection(name).map(|c| c.id()))
        .collect::<ApiResult<Vec<_>>>()?;
    let _one_at_a_time = state.replicators.lock().await;
    let key = hypha_protocols::node::Peer::to_key(&request.peer);
    let mut replicator = state.store.replicators()?.remove(&key).unwrap_or_default();
    replicator.collections.extend(ids);
    replicator.documents.extend(request.docs);
    let bytes = address.to_vec();
    replicator.addresses.retain(|a| *a != bytes);
    replicator.addresses.insert(0, bytes);
    replicator.addresses.truncate(8);
    let scope = replicator_json(&state, request.peer, &replicator)?;
    state
        .commit(Mutation::SetReplicator {
            peer: key,
            replicator,
        })
        .await?;
    tracing::info!(target: "hypha.node", { "PeerId" = %request.peer, "Address" = %address }, "Replicator set");
    Ok(Json(scope))
}

fn replicator_json(state: &ApiState, peer: PeerId, r: &Replicator) -> ApiResult<Value> {
    let names = state.collection_names()?;
    Ok(json!({
        "id": peer.to_string(),
        "collections": r.collections.iter().map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect::<Vec<_>>(),
        "docIDs": r.documents.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))
}

async fn delete_replicator(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let request = replicator_request(&body.json()?)?;
    let _one_at_a_time = state.replicators.lock().await;
    let key = hypha_protocols::node::Peer::to_key(&request.peer);
    let Some(mut replicator) = state.store.replicators()?.remove(&key) else {
        return Err(ApiError::not_found(format!(
            "no replicator {}",
            request.peer
        )));
    };
    if request.collections.is_empty() && request.docs.is_empty() {
        state
            .commit(Mutation::DeleteReplicator { peer: key })
            .await?;
        return Ok(Json(
            json!({ "id": request.peer.to_string(), "deleted": true }),
        ));
    }
    for name in &request.collections {
        replicator.collections.remove(&state.collection(name)?.id());
    }
    for doc in &request.docs {
        replicator.documents.remove(doc);
    }
    let scope = replicator_json(&state, request.peer, &replicator)?;
    if replicator.collections.is_empty() && replicator.documents.is_empty() {
        state
            .commit(Mutation::DeleteReplicator { peer: key })
            .await?;
    } else {
        state
            .commit(Mutation::SetReplicator {
                peer: key,
                replicator,
            })
            .await?;
    }
    Ok(Json(scope))
}

async fn followed_collections(State(state): Shared) -> ApiResult {
    state.node()?;
    let names = state.collection_names()?;
    let subs = state.store.subscriptions()?;
    Ok(Json(Value::Array(
        subs.collections
            .iter()
            .map(|c| Value::from(names.get(c).cloned().unwrap_or_else(|| c.to_string())))
            .collect(),
    )))
}

async fn follow_collections(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let names = body.strings("collections")?;
    for name in &names {
        state.collection(name)?;
    }
    state
        .ask(|tx| NodeRequest::FollowCollections(names.clone(), tx))
        .await?
        .map_err(ApiError::bad)?;
    Ok(Json(json!(names)))
}

async fn unfollow_collections(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let names = body.strings("collections")?;
    let subs = names
        .iter()
        .map(|n| {
            state
                .collection(n)
                .map(|c| Subscription::Collection(c.id()))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    state
        .ask(|tx| NodeRequest::Unfollow(subs, tx))
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(json!(names)))
}

async fn followed_documents(State(state): Shared) -> ApiResult {
    state.node()?;
    let subs = state.store.subscriptions()?;
    Ok(Json(Value::Array(
        subs.documents
            .iter()
            .map(|d| Value::from(d.to_string()))
            .collect(),
    )))
}

fn doc_list(body: &Body) -> ApiResult<Vec<DocId>> {
    body.strings("docIDs")?
        .iter()
        .map(|d| parse_doc(d))
        .collect()
}

async fn follow_documents(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let docs = doc_list(&body)?;
    state
        .ask(|tx| NodeRequest::FollowDocuments(docs.clone(), tx))
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(json!(
        docs.iter().map(ToString::to_string).collect::<Vec<_>>()
    )))
}

async fn unfollow_documents(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let docs = doc_list(&body)?;
    let subs = docs.iter().copied().map(Subscription::Document).collect();
    state
        .ask(|tx| NodeRequest::Unfollow(subs, tx))
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(json!(
        docs.iter().map(ToString::to_string).collect::<Vec<_>>()
    )))
}

async fn sync_collections(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let names = body.strings("collections")?;
    if names.is_empty() {
        return Ok(Json(json!({ "sessions": 0 })));
    }
    for name in &names {
        state.collection(name)?;
    }
    let sessions = state
        .ask(|tx| NodeRequest::SyncCollections(names, tx))
        .await?
        .map_err(ApiError::bad)?;
    Ok(Json(json!({ "sessions": sessions })))
}

async fn sync_documents(State(state): Shared, body: Body) -> ApiResult {
    state.node()?;
    let docs = doc_list(&body)?;
    if docs.is_empty() {
        return Ok(Json(json!({ "sessions": 0 })));
    }
    let sessions = state.ask(|tx| NodeRequest::SyncDocuments(docs, tx)).await?;
    Ok(Json(json!({ "sessions": sessions })))
}

#[cfg(test)]
mod tests {
    //! The API in-process over real HTTP on 127.0.0.1, in `--no-p2p` mode (the store only):
    //! every route's answers and every error path. The p2p routes run in the end-to-end tests.

    use super::*;

    const U: &str = "type Users { Name: String  Age: Int }";

    struct Api {
        base: String,
        runtime: tokio::runtime::Runtime,
    }

    fn api(token: Option<&str>, max_body: usize) -> Api {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = Store::memory(hypha_store::Config::new(hypha_crdt::Author::unsigned(
            [9; 32],
        )))
        .unwrap();
        let state = Arc::new(ApiState {
            store: Arc::new(store),
            node: None,
            changes: broadcast::channel(16).0,
            metrics: Arc::default(),
            token: token.map(str::to_string),
            namespace: "hypha".into(),
            peer_id: None,
            replicators: tokio::sync::Mutex::new(()),
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let base = format!("http://{}/api/v0", listener.local_addr().unwrap());
        runtime.spawn(async move { axum::serve(listener, router(state, max_body)).await });
        Api { base, runtime }
    }

    /// (status, JSON body) of a request.
    fn call(api: &Api, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        call_with(api, method, path, body, None)
    }

    fn call_with(
        api: &Api,
        method: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let _ = &api.runtime;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{}{path}", api.base);
        let request = ureq::http::Request::builder().method(method).uri(&url);
        let request = match token {
            Some(t) => request.header("Authorization", format!("Bearer {t}")),
            None => request,
        };
        let mut response = agent
            .run(request.body(body.unwrap_or("").to_string()).unwrap())
            .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn error(v: &Value) -> &str {
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {v}"))
    }

    #[test]
    fn documents_round_trip() {
        let api = api(None, 1 << 20);
        let (s, v) = call(&api, "POST", "/schema", Some(U));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v[0]["name"], "Users");
        let (s, john) = call(
            &api,
            "POST",
            "/collections/Users",
            Some(r#"{"Name":"John","Age":21}"#),
        );
        assert_eq!(s, 200, "{john}");
        let doc = john["docID"].as_str().unwrap().to_string();
        let (s, many) = call(
            &api,
            "POST",
            "/collections/Users",
            Some(r#"[{"Name":"Andy","Age":74},{"Name":"Fred","Age":31}]"#),
        );
        assert_eq!(s, 200);
        assert_eq!(many.as_array().unwrap().len(), 2);

        let (s, v) = call(
            &api,
            "GET",
            &format!("/collections/Users/documents/{doc}"),
            None,
        );
        assert_eq!(s, 200);
        assert_eq!(
            (v["Name"].clone(), v["Age"].clone(), v["_deleted"].clone()),
            (json!("John"), json!(21), json!(false))
        );
        let (s, _) = call(
            &api,
            "PATCH",
            &format!("/collections/Users/documents/{doc}"),
            Some(r#"{"Age":60}"#),
        );
        assert_eq!(s, 200);
        let (_, v) = call(
            &api,
            "GET",
            "/collections/Users/documents?filter=%7B%22Age%22%3A60%7D",
            None,
        );
        assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v[0]["Name"], "John");

        let (s, deleted) = call(
            &api,
            "DELETE",
            &format!("/collections/Users/documents/{doc}"),
            None,
        );
        assert_eq!(s, 200);
        let (s, _) = call(
            &api,
            "GET",
            &format!("/collections/Users/documents/{doc}"),
            None,
        );
        assert_eq!(s, 404, "a deleted document is hidden");
        let (_, v) = call(
            &api,
            "GET",
            &format!("/collections/Users/documents/{doc}?show_deleted=true"),
            None,
        );
        assert_eq!(v["_deleted"], true);
        let (_, v) = call(&api, "GET", "/collections/Users/documents", None);
        assert_eq!(v.as_array().unwrap().len(), 2);
        let (_, v) = call(
            &api,
            "GET",
            "/collections/Users/docIDs?show_deleted=true",
            None,
        );
        assert_eq!(v.as_array().unwrap().len(), 3);
        let (_, v) = call(&api, "GET", "/collections/Users/documents?limit=1", None);
        assert_eq!(v.as_array().unwrap().len(), 1);

        // History: create, update, delete, newest first; each block re-hashes to its CID.
        let (s, h) = call(&api, "GET", &format!("/documents/{doc}/history"), None);
        assert_eq!(s, 200, "{h}");
        let blocks = h["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 3);
        assert_eq!(blocks[0]["cid"], deleted["cid"]);
        let cid = blocks[0]["cid"].as_str().unwrap();
        let (s, b) = call(&api, "GET", &format!("/blocks/{cid}?format=json"), None);
        assert_eq!((s, b["docID"].as_str()), (200, Some(doc.as_str())));
        let (s, status) = call(&api, "GET", &format!("/documents/{doc}/sync"), None);
        assert_eq!(s, 200);
        assert_eq!(status["heads"][0], cid);
        assert_eq!(status["deleted"], true);
    }

    #[test]
    fn raw_blocks_rehash_and_backups_restore() {
        let api = api(None, 1 << 20);
        call(&api, "POST", "/schema", Some(U));
        let (_, john) = call(
            &api,
            "POST",
            "/collections/Users",
            Some(r#"{"Name":"John","Age":21}"#),
        );
        let cid: Cid = parse_cid(john["cid"].as_str().unwrap()).unwrap();
        let agent = ureq::agent();
        let bytes = agent
            .get(&format!("{}/blocks/{cid}", api.base))
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        assert_eq!(
            VerifiedBlock::decode(&bytes, Some(&cid)).unwrap().cid(),
            cid
        );

        let car = agent
            .get(&format!("{}/backup/export", api.base))
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        let other = api_with_schema();
        let mut response = ureq::post(&format!("{}/backup/import", other.base))
            .send(&car[..])
            .unwrap();
        let v: Value = response.body_mut().read_json().unwrap();
        assert_eq!(
            (v["blocks"].clone(), v["applied"].clone()),
            (json!(1), json!(1))
        );
        let (_, listed) = call(&other, "GET", "/collections/Users/documents", None);
        assert_eq!(listed[0]["Name"], "John");
        // A damaged file writes nothing.
        let fresh = api_with_schema();
        let mut broken = car.clone();
        let last = broken.len() - 2;
        broken[last] ^= 1;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(&format!("{}/backup/import", fresh.base))
            .send(&broken[..])
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let v: Value = response.body_mut().read_json().unwrap();
        assert!(error(&v).contains("CAR section 0"), "{v}");
        let (_, listed) = call(&fresh, "GET", "/collections/Users/documents", None);
        assert_eq!(listed, json!([]));
    }

    fn api_with_schema() -> Api {
        let api = api(None, 1 << 20);
        call(&api, "POST", "/schema", Some(U));
        api
    }

    #[test]
    fn bad_input_gets_a_clear_error_and_writes_nothing() {
        let api = api_with_schema();
        let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
            (
                "POST",
                "/collections/Books",
                Some("{}"),
                404,
                "collection \"Books\" not found",
            ),
            (
                "POST",
                "/collections/Users",
                Some("{nope"),
                400,
                "malformed JSON",
            ),
            (
                "POST",
                "/collections/Users",
                Some(r#"{"Name":7}"#),
                400,
                "Name",
            ),
            (
                "POST",
                "/collections/Users",
                Some(r#"{"Shoe":7}"#),
                400,
                "Shoe",
            ),
            ("POST", "/collections/Users", Some("[1]"), 400, "item 0"),
            (
                "POST",
                "/collections/Users",
                Some(""),
                400,
                "needs a JSON body",
            ),
            (
                "GET",
                "/collections/Users/documents/bae-nope",
                None,
                400,
                "invalid docID",
            ),
            (
                "GET",
                "/collections/Users/documents/bae-00000000-0000-5000-8000-000000000000",
                None,
                404,
                "not found",
            ),
            ("GET", "/blocks/nope", None, 400, "invalid CID"),
            (
                "GET",
                "/collections/Users/documents?limit=x",
                None,
                400,
                "limit",
            ),
            (
                "GET",
                "/collections/Users/documents?filter=%5B%5D",
                None,
                400,
                "filter",
            ),
            (
                "GET",
                "/collections/Users/documents?filter=%7B%22Shoe%22%3A1%7D",
                None,
                400,
                "Shoe",
            ),
            ("POST", "/schema", Some("type {"), 400, "schema"),
            ("GET", "/p2p/info", None, 400, "p2p is disabled"),
            (
                "POST",
                "/p2p/replicators",
                Some("{}"),
                400,
                "p2p is disabled",
            ),
            ("GET", "/nope", None, 404, "no such endpoint"),
        ];
        for (method, path, body, status, needle) in cases {
            let (s, v) = call(&api, method, path, *body);
            assert_eq!(s, *status, "{method} {path}: {v}");
            assert!(error(&v).contains(needle), "{method} {path}: {v}");
        }
        let (s, v) = call(
            &api,
            "POST",
            "/collections/Users",
            Some(r#"[{"Name":"Ok","Age":1},{"Name":"Bad","Age":"x"}]"#),
        );
        assert_eq!(s, 400, "{v}");
        assert!(error(&v).contains("item 1"), "{v}");
        let (_, v) = call(&api, "GET", "/collections/Users/docIDs", None);
        assert_eq!(v, json!([]), "nothing was written");
    }

    #[test]
    fn bodies_past_the_limit_are_refused() {
        let api = api(None, 1024);
        call(&api, "POST", "/schema", Some(U));
        let big = format!(r#"{{"Name":"{}"}}"#, "x".repeat(4096));
        let (s, v) = call(&api, "POST", "/collections/Users", Some(&big));
        assert_eq!(s, 413, "{v}");
        error(&v);
    }

    #[test]
    fn the_token_guards_every_route() {
        let api = api(Some("s3cret"), 1 << 20);
        for path in ["/health", "/collections", "/metrics"] {
            let (s, v) = call(&api, "GET", path, None);
            assert_eq!(s, 401, "{path}: {v}");
            let (s, _) = call_with(&api, "GET", path, None, Some("wrong"));
            assert_eq!(s, 401);
            let (s, _) = call_with(&api, "GET", path, None, Some("s3cret"));
            assert_eq!(s, 200, "{path}");
        }
    }
}
