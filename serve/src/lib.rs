//! `cf-host serve`: the agents over HTTP, on the same core as the CLI (a [`Host`]),
//! with tenants, live events and metrics.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /v1/agents` | the agents the tenant may run |
//! | `POST /v1/runs` | a run: waits for its result (the fields of `cf-host run --json`, and `id`), or answers `202` with its `id` when the body says `"async": true` or the request `Prefer: respond-async` |
//! | `GET /v1/runs/{id}` | a run's status, and its result once done |
//! | `GET /v1/runs/{id}/events` | its events as server-sent events from the start: `delta` (emitted output), `tool`, then `result` |
//! | `POST /v1/batches` | a batch from a JSON array or JSONL (`application/x-ndjson`) of items → `202` with its `id` |
//! | `GET /v1/batches/{id}` | its progress |
//! | `GET /v1/batches/{id}/results?order=input\|finished` | its results as NDJSON, streamed until the last |
//! | `GET /v1/batches/{id}/events` | its events (with each item's `index`) as server-sent events, `done` last |
//! | `GET /healthz`, `GET /readyz` | alive; ready (`503` while shutting down) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /openapi.json` | the OpenAPI document, generated from this code |
//!
//! `/v1/*` needs `Authorization: Bearer <token>`: the server knows tokens by their
//! SHA-256 (`[serve.tokens]`), each naming a tenant whose grant (`[serve.tenants]`)
//! says which agents, which models, what budget per day and how many runs at once.
//! Errors are `{"error": {"kind", "message"}}` with 400 (naming the field), 401, 403
//! (naming the capability), 404, 413, 415 or 503.
//!
//! [`Server::run`] shuts down gracefully: when `shutdown` resolves it stops accepting
//! connections, answers new requests with 503, lets running work finish for the grace
//! period, then cancels what is left (recorded as `cancelled`) and returns.

mod auth;
mod error;
mod metrics;
mod registry;

pub use auth::{Tenant, TenantGrant, Tokens, token_digest};
pub use error::{ApiError, ErrorBody, ErrorDetail};

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cf_front::render;
use cf_host::{
    Agent, BatchEventSink, BatchItem, BatchOptions, Budget, EventSink, Host, RunEvent, RunOptions,
    Source, Task,
};
use futures_util::Stream;
use registry::{Record, Registry, Status};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use utoipa::{OpenApi, ToSchema};

/// Default cap of a request body: 16 MiB (a batch of many items).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Default grace period of a shutdown.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Tenant → the SHA-256 of its token, 64 hex digits (`[serve.tokens]`). Empty:
    /// no authentication, every request is tenant `local` (allowed on a loopback
    /// address only: the front end checks).
    pub tokens: BTreeMap<String, String>,
    /// Tenant → its grant (`[serve.tenants]`).
    pub tenants: BTreeMap<String, TenantGrant>,
    /// The largest request body, in bytes; larger: 413.
    pub max_body_bytes: usize,
    /// How long running work may take to finish after a shutdown starts.
    pub grace: Duration,
    /// The operator's settings every run starts from (model, max_tokens, …).
    pub base_options: RunOptions,
    /// The fleet's concurrency limit on Redis the host shares, if any: `/readyz` says
    /// whether Redis answers, `/metrics` counts its errors.
    pub fleet: Option<cf_fleet::RedisLimit>,
    /// The work queue this server's worker takes items from (`serve --worker`), and
    /// what the worker did: `/readyz` says whether its Redis answers, `/metrics` shows
    /// the queue's depth and the worker's counts.
    pub worker: Option<(cf_fleet::WorkQueue, Arc<cf_front::queue::WorkerStats>)>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            tokens: BTreeMap::new(),
            tenants: BTreeMap::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            grace: DEFAULT_GRACE,
            base_options: RunOptions::default(),
            fleet: None,
            worker: None,
        }
    }
}

#[derive(Debug)]
struct AppState {
    host: Host,
    tokens: Tokens,
    /// The tenant of every request when no token is configured.
    open: Option<Arc<Tenant>>,
    registry: Arc<Registry>,
    metrics: metrics::Metrics,
    agents: tokio::sync::Mutex<HashMap<String, Agent>>,
    base_options: RunOptions,
    grace: Duration,
    shutting_down: AtomicBool,
    fleet: Option<cf_fleet::RedisLimit>,
    worker: Option<(cf_fleet::WorkQueue, Arc<cf_front::queue::WorkerStats>)>,
}

/// The HTTP server over a [`Host`].
#[derive(Debug, Clone)]
pub struct Server {
    state: Arc<AppState>,
    max_body_bytes: usize,
}

impl Server {
    /// A server over `host`; fails on a token that is not a SHA-256 digest or a grant
    /// of a tenant without a token.
    pub fn new(host: Host, config: ServeConfig) -> Result<Self, String> {
        if config.tokens.is_empty()
            && let Some(other) = config.tenants.keys().find(|t| *t != "local")
        {
            return Err(format!(
                "[serve.tenants.{other}] names a tenant, but there is no [serve.tokens]: without tokens every request is tenant `local`"
            ));
        }
        let checked = if config.tokens.is_empty() {
            BTreeMap::new()
        } else {
            config.tenants.clone()
        };
        let tokens = Tokens::new(&config.tokens, &checked)?;
        let open = tokens.is_empty().then(|| {
            let open = BTreeMap::from([("local".to_owned(), token_digest(""))]);
            let grants = config
                .tenants
                .get("local")
                .map(|g| BTreeMap::from([("local".to_owned(), g.clone())]))
                .unwrap_or_default();
            Tokens::new(&open, &grants).ok().and_then(|t| t.tenant(""))
        });
        Ok(Self {
            state: Arc::new(AppState {
                host,
                tokens,
                open: open.flatten(),
                registry: Arc::new(Registry::default()),
                metrics: metrics::Metrics::default(),
                agents: tokio::sync::Mutex::new(HashMap::new()),
                base_options: config.base_options,
                grace: config.grace,
                shutting_down: AtomicBool::new(false),
                fleet: config.fleet,
                worker: config.worker,
            }),
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// Whether requests need a token.
    pub fn authenticates(&self) -> bool {
        !self.state.tokens.is_empty()
    }

    /// The routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/agents", get(list_agents))
            .route("/v1/runs", post(post_run))
            .route("/v1/runs/{id}", get(get_run))
            .route("/v1/runs/{id}/events", get(run_events))
            .route("/v1/batches", post(post_batch))
            .route("/v1/batches/{id}", get(get_batch))
            .route("/v1/batches/{id}/results", get(batch_results))
            .route("/v1/batches/{id}/events", get(batch_events))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(self.max_body_bytes))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves, then shuts down gracefully
    /// (see the crate's docs).
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let server = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .into_future();
        let server = tokio::spawn(server);
        shutdown.await;
        state.shutting_down.store(true, Ordering::SeqCst);
        let _ = stop.send(true);
        let running = state.registry.running();
        tracing::info!(
            running,
            grace_secs = state.grace.as_secs_f64(),
            "shutting down: no new work; running work gets the grace period"
        );
        if tokio::time::timeout(state.grace, state.registry.idle())
            .await
            .is_err()
        {
            tracing::warn!(
                running = state.registry.running(),
                "the grace period ended: cancelling what still runs"
            );
            state.registry.cancel_all();
        }
        state.host.flush().await;
        match server.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

// ---- extractors ---------------------------------------------------------------------

/// The tenant of a request with a valid bearer token.
#[derive(Debug)]
struct Authed(Arc<Tenant>);

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let refuse = |e: ApiError| {
            state.metrics.refused(e.kind());
            e.into_response()
        };
        if state.shutting_down.load(Ordering::SeqCst) {
            return Err(refuse(ApiError::Unavailable(
                "the server is shutting down".into(),
            )));
        }
        if let Some(open) = &state.open {
            return Ok(Self(open.clone()));
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(refuse(ApiError::Unauthorized(
                "no token: send `Authorization: Bearer <token>`".into(),
            )));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        match state.tokens.tenant(token) {
            Some(tenant) if !token.is_empty() => Ok(Self(tenant)),
            _ => Err(refuse(ApiError::Unauthorized(
                "the bearer token is not one this server knows".into(),
            ))),
        }
    }
}

/// A JSON body whose rejections are API errors (400 naming the field, 413, 415).
#[derive(Debug)]
struct ApiJson<T>(T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(rejection.body_text()),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(rejection.body_text()),
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

// ---- types --------------------------------------------------------------------------

/// A run to start.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// A built-in agent's name, or a plugin path the tenant's grant lists.
    pub agent: String,
    /// The task.
    pub task: String,
    /// Key-value context for the agent.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// The model of every call (within the tenant's grant).
    pub model: Option<String>,
    /// `max_tokens` of every call, at least 1.
    pub max_tokens: Option<u32>,
    /// The temperature of every call, in [0, 1].
    pub temperature: Option<f32>,
    /// The run's deadline, in seconds, in (0, 86400].
    pub deadline_secs: Option<f64>,
    /// What the run may spend, in US dollars.
    pub budget_usd: Option<f64>,
    /// Answer `202` with the run's id at once instead of waiting for its result.
    #[serde(default, rename = "async")]
    pub run_async: bool,
}

/// One item of a batch (a JSON array of them, or one per line).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItemRequest {
    /// The caller's name for the item, echoed in its result; default its position
    /// from 1.
    pub id: Option<String>,
    /// A built-in agent's name, or a plugin path the tenant's grant lists.
    pub agent: String,
    /// The task.
    pub task: String,
    /// Key-value context for the agent.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// The model of the item's calls.
    pub model: Option<String>,
    /// `max_tokens` of its calls.
    pub max_tokens: Option<u32>,
    /// The temperature of its calls, in [0, 1].
    pub temperature: Option<f32>,
}

/// A run's or an item's result: the fields of `cf-host run --json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunResult {
    /// The run's id (`POST /v1/runs`) or the item's (batches, with `index`).
    pub id: Option<String>,
    /// The agent.
    pub agent: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// Its answer, when it succeeded.
    pub output: Option<String>,
    /// The agent's metadata.
    pub metadata: BTreeMap<String, String>,
    /// Why it failed: `{"kind", "message"}`.
    pub error: Option<ErrorDetail>,
    /// Whether every model call was answered by the cache.
    pub cached: bool,
    /// Model calls answered by the cache.
    pub cache_hits: u32,
    /// Model calls.
    pub llm_calls: u32,
    /// Attempts sent to the provider.
    pub attempts: u32,
    /// Wall time of the run, in milliseconds.
    pub latency_ms: f64,
    /// Where the time went (`total`, `instantiate`, `llm`, `queue_wait`).
    #[schema(value_type = Object)]
    pub timings: Value,
    /// Tokens in and out, cache reads and writes.
    #[schema(value_type = Object)]
    pub usage: Value,
    /// What it cost, in US dollars; null when a call's model has no price.
    pub cost_usd: Option<f64>,
    /// Calls whose model has no price.
    pub unpriced_calls: u32,
    /// What cached answers saved, in US dollars.
    pub saved_usd: f64,
    /// The model of the last answer.
    pub model: Option<String>,
}

/// A run or batch started without waiting.
#[derive(Debug, Serialize, ToSchema)]
pub struct Started {
    /// Its id.
    pub id: String,
    /// `running`.
    pub status: String,
    /// Its items, for a batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<usize>,
}

/// A run's status.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunView {
    /// Its id.
    pub id: String,
    /// The agent.
    pub agent: String,
    /// `running`, `done` or `cancelled`.
    pub status: String,
    /// The result, once done.
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
}

/// A batch's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchView {
    /// Its id.
    pub id: String,
    /// `running`, `done` or `cancelled`.
    pub status: String,
    /// Items in all.
    pub total: usize,
    /// Items finished.
    pub done: usize,
    /// Items that succeeded.
    pub ok: usize,
    /// Items that failed.
    pub failed: usize,
}

/// What an agent says about itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// What it does.
    pub description: String,
    /// The model it prefers (empty: the host's default).
    pub default_model: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The contract version it was built for.
    pub contract: String,
}

/// `order` of `GET /v1/batches/{id}/results`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResultsQuery {
    /// `input` (default): in the batch's order, each as soon as every earlier one is
    /// there; `finished`: as they finish.
    order: Option<String>,
}

// ---- handlers -----------------------------------------------------------------------

/// A run's or an item's result as the API shows it.
fn result_value(
    id: Option<&str>,
    agent: &str,
    result: &Result<cf_host::RunOutput, cf_host::RunError>,
) -> Value {
    let mut value = render::result_json(agent, result);
    if let Value::Object(map) = &mut value {
        map.insert("id".into(), id.map_or(Value::Null, Value::from));
    }
    value
}

fn event_value(event: &RunEvent, index: Option<usize>) -> Value {
    render::event_json(event, index)
}

impl AppState {
    /// The agent `name` (loaded once), if the tenant may run it.
    async fn agent(&self, tenant: &Tenant, name: &str) -> Result<Agent, ApiError> {
        let source = Source::from(name);
        let builtin = matches!(source, Source::Builtin(_));
        tenant.may_run(name, builtin)?;
        if let Some(agent) = self.agents.lock().await.get(name) {
            return Ok(agent.clone());
        }
        let agent = self.host.load(source).await.map_err(|e| match e {
            cf_host::Error::UnknownAgent { .. } => ApiError::NotFound(e.to_string()),
            other => ApiError::BadRequest(format!("agent {name}: {other}")),
        })?;
        self.agents
            .lock()
            .await
            .insert(name.to_owned(), agent.clone());
        Ok(agent)
    }

    /// The options of a run from the operator's, the tenant's grant and the request.
    fn options(
        &self,
        tenant: &Tenant,
        model: Option<String>,
        max_tokens: Option<u32>,
        temperature: Option<f32>,
    ) -> Result<RunOptions, ApiError> {
        if max_tokens == Some(0) {
            return Err(ApiError::BadRequest(
                "max_tokens: must be at least 1".into(),
            ));
        }
        if let Some(t) = temperature
            && !(0.0..=1.0).contains(&t)
        {
            return Err(ApiError::BadRequest(format!(
                "temperature: {t} is outside [0, 1]"
            )));
        }
        let base = &self.base_options;
        Ok(RunOptions {
            model: tenant.model(model.or_else(|| base.model.clone()))?,
            max_tokens: max_tokens.or(base.max_tokens),
            temperature: temperature.or(base.temperature),
            ..base.clone()
        })
    }
}

/// Counts a run or batch as running until dropped (also when its task is aborted).
struct Running(Arc<Registry>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.ended();
    }
}

#[utoipa::path(get, path = "/v1/agents", security(("bearer" = [])),
    responses((status = 200, body = Vec<AgentView>), (status = 401, body = ErrorBody)))]
async fn list_agents(State(state): State<Arc<AppState>>, Authed(tenant): Authed) -> Response {
    let mut names: Vec<String> = cf_host::builtin_agents().map(str::to_owned).collect();
    if let Some(granted) = &tenant.grant.agents {
        names.retain(|n| granted.contains(n));
        names.extend(
            granted
                .iter()
                .filter(|g| !matches!(Source::from(g.as_str()), Source::Builtin(_)))
                .cloned(),
        );
    }
    let mut out = Vec::new();
    for name in names {
        if let Ok(agent) = state.agent(&tenant, &name).await {
            let info = agent.info();
            out.push(AgentView {
                name: info.name.clone(),
                version: info.version.clone(),
                description: info.description.clone(),
                default_model: info.default_model.clone(),
                tags: info.tags.clone(),
                contract: info.contract.clone(),
            });
        }
    }
    Json(out).into_response()
}

#[utoipa::path(post, path = "/v1/runs", security(("bearer" = [])), request_body = RunRequest,
    responses(
        (status = 200, description = "the result (also when the run failed: `ok` is false)", body = RunResult),
        (status = 202, description = "started; follow `/v1/runs/{id}`", body = Started),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn post_run(
    State(state): State<Arc<AppState>>,
    Authed(tenant): Authed,
    headers: HeaderMap,
    request: Result<ApiJson<RunRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let ApiJson(req) = request.inspect_err(|e| state.metrics.refused(e.kind()))?;
    let run = prepare_run(&state, &tenant, req.clone())
        .await
        .inspect_err(|e| state.metrics.refused(e.kind()))?;
    let wants_async = req.run_async
        || headers
            .get("prefer")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("respond-async"));
    let record = start_run(&state, &tenant, run);
    if wants_async {
        return Ok(accepted(&record, "runs", None));
    }
    let mut rx = record.watch();
    let _ = rx.wait_for(|_| record.status() != Status::Running).await;
    Ok(Json(result_of(&record).unwrap_or_else(|| json!({}))).into_response())
}

/// `202 Accepted` for a run or batch started without waiting, with its `Location`
/// (`/v1/{kind}/{id}`).
fn accepted(record: &Record, kind: &str, total: Option<usize>) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Started {
            id: record.id.clone(),
            status: "running".into(),
            total,
        }),
    )
        .into_response();
    if let Ok(value) = format!("/v1/{kind}/{}", record.id).parse() {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A run's result once it has ended: its last event without the event's `type`.
fn result_of(record: &Record) -> Option<Value> {
    let mut result = record.last_event()?;
    if let Value::Object(map) = &mut result {
        map.remove("type");
    }
    Some(result)
}

/// A run ready to start.
struct PreparedRun {
    agent: Agent,
    task: Task,
    options: RunOptions,
}

async fn prepare_run(
    state: &AppState,
    tenant: &Tenant,
    req: RunRequest,
) -> Result<PreparedRun, ApiError> {
    let agent = state.agent(tenant, &req.agent).await?;
    let mut options = state.options(tenant, req.model, req.max_tokens, req.temperature)?;
    if let Some(d) = req.deadline_secs {
        if !(d > 0.0 && d <= 86_400.0) {
            return Err(ApiError::BadRequest(format!(
                "deadline_secs: {d} is outside (0, 86400]"
            )));
        }
        options.deadline = Some(Duration::from_secs_f64(d));
    }
    if let Some(usd) = req.budget_usd {
        if !(usd >= 0.0 && usd.is_finite()) {
            return Err(ApiError::BadRequest(format!(
                "budget_usd: {usd} must be a finite amount of at least 0"
            )));
        }
        options.budget = Budget {
            usd: Some(usd),
            ..options.budget
        };
    }
    Ok(PreparedRun {
        agent,
        task: Task {
            text: req.task,
            context: req.context.into_iter().collect(),
        },
        options,
    })
}

fn start_run(state: &Arc<AppState>, tenant: &Arc<Tenant>, run: PreparedRun) -> Arc<Record> {
    let agent_name = run.agent.name().to_owned();
    let record = state
        .registry
        .start("run", &tenant.name, json!({ "agent": agent_name }), 0);
    let running = Running(state.registry.clone());
    let PreparedRun {
        agent,
        task,
        mut options,
    } = run;
    let events = record.clone();
    options.events = Some(EventSink::new(move |event| {
        events.push(event_value(&event, None));
    }));
    let cancelled = cf_host::RunError::from(cf_host::Error::Cancelled { started: true });
    let mut cancelled = result_value(Some(&record.id), &agent_name, &Err(cancelled));
    if let Value::Object(map) = &mut cancelled {
        map.insert("status".into(), "cancelled".into());
    }
    record.on_cancel(None, Some(cancelled));
    let (state2, tenant2, record2) = (state.clone(), tenant.clone(), record.clone());
    let task = tokio::spawn(async move {
        let _running = running;
        let _share = match &tenant2.share {
            Some(share) => share.clone().acquire_owned().await.ok(),
            None => None,
        };
        let ledger = tenant2.ledger();
        let result = agent.run_in(task, &options, &ledger).await;
        state2.metrics.run_ended(&result);
        let value = result_value(Some(&record2.id), &agent_name, &result);
        record2.finish(Status::Done, Some(value));
    });
    record.set_task(task.abort_handle());
    record
}

#[utoipa::path(get, path = "/v1/runs/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 200, body = RunView), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(state): State<Arc<AppState>>,
    Authed(tenant): Authed,
    Path(id): Path<String>,
) -> Result<Json<RunView>, ApiError> {
    let record = find(&state, &tenant, &id, "run")?;
    let (info, status, _) = record.view();
    let result = (status != Status::Running)
        .then(|| result_of(&record))
        .flatten();
    Ok(Json(RunView {
        id: record.id.clone(),
        agent: info["agent"].as_str().unwrap_or_default().to_owned(),
        status: status.as_str().into(),
        result,
    }))
}

fn find(state: &AppState, tenant: &Tenant, id: &str, what: &str) -> Result<Arc<Record>, ApiError> {
    let prefix = format!("{what}_");
    state
        .registry
        .get(id, &tenant.name)
        .filter(|r| r.id.starts_with(&prefix))
        .ok_or_else(|| {
            state.metrics.refused("not_found");
            ApiError::NotFound(format!("no {what} {id}"))
        })
}

#[utoipa::path(get, path = "/v1/runs/{id}/events", security(("bearer" = [])),
    params(("id" = String, Path, description = "the run's id")),
    responses((status = 200, description = "server-sent events: `delta` {text}, `tool` {id, name}, then `result` (the fields of the run's result)", content_type = "text/event-stream"),
        (status = 404, body = ErrorBody)))]
async fn run_events(
    State(state): State<Arc<AppState>>,
    Authed(tenant): Authed,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let record = find(&state, &tenant, &id, "run")?;
    Ok(sse(record))
}

/// A record's events as server-sent events, from the first, until it ends.
fn sse(record: Arc<Record>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(
        (record, 0usize, false),
        |(record, from, ended)| async move {
            if ended {
                return None;
            }
            let mut rx = record.watch();
            loop {
                let (events, over) = record.events_from(from);
                if !events.is_empty() || over {
                    let next = from + events.len();
                    let out: Vec<Result<Event, Infallible>> = events
                        .into_iter()
                        .map(|v| {
                            let kind = v["type"].as_str().unwrap_or("message").to_owned();
                            Ok(Event::default().event(kind).data(v.to_string()))
                        })
                        .collect();
                    return Some((futures_util::stream::iter(out), (record, next, over)));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    use futures_util::StreamExt as _;
    Sse::new(stream.flatten()).keep_alive(KeepAlive::default())
}

#[utoipa::path(post, path = "/v1/batches", security(("bearer" = [])),
    request_body(content = Vec<BatchItemRequest>, description = "a JSON array of items, or one item per line with `content-type: application/x-ndjson`"),
    responses((status = 202, body = Started), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn post_batch(
    State(state): State<Arc<AppState>>,
    Authed(tenant): Authed,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let refused = |e: ApiError| {
        state.metrics.refused(e.kind());
        e
    };
    let body = body.map_err(|r| {
        refused(if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(r.body_text())
        } else {
            ApiError::BadRequest(r.body_text())
        })
    })?;
    let items = parse_batch(&headers, &body).map_err(refused)?;
    let mut prepared = Vec::with_capacity(items.len());
    for (n, item) in items.into_iter().enumerate() {
        // Checked (and loaded) here; the batch loads it again by the name given.
        state
            .agent(&tenant, &item.agent)
            .await
            .map_err(|e| refused(at_item(n, e)))?;
        let options = state
            .options(&tenant, item.model, item.max_tokens, item.temperature)
            .map_err(|e| refused(at_item(n, e)))?;
        prepared.push(BatchItem {
            id: Some(item.id.unwrap_or_else(|| (n + 1).to_string())),
            agent: item.agent,
            task: Task {
                text: item.task,
                context: item.context.into_iter().collect(),
            },
            options,
        });
    }
    let total = prepared.len();
    let record = state
        .registry
        .start("batch", &tenant.name, json!({ "total": total }), total);
    let running = Running(state.registry.clone());
    let events = record.clone();
    let options = BatchOptions {
        events: Some(BatchEventSink::new(move |index, event| {
            events.push(event_value(&event, Some(index)));
        })),
        parent: Some(tenant.ledger()),
        // The tenant's runs at once, shared with its runs and other batches.
        share: tenant.share.clone(),
        // Stopping is the server's graceful shutdown's: its grace has passed when a
        // batch is cancelled.
        grace: Duration::ZERO,
        ..BatchOptions::default()
    };
    let mut batch = state.host.start_batch(prepared, options);
    let canceller = batch.canceller();
    record.on_cancel(Some(Box::new(move || canceller.cancel())), None);
    let (state2, record2) = (state.clone(), record.clone());
    let task = tokio::spawn(async move {
        let _running = running;
        let mut ok = 0usize;
        while let Some(item) = batch.next().await {
            state2.metrics.run_ended(&item.result);
            ok += usize::from(item.result.is_ok());
            let mut value = result_value(item.id.as_deref(), &item.agent, &item.result);
            if let Value::Object(map) = &mut value {
                map.insert("index".into(), Value::from(item.index));
            }
            record2.item_done(item.index, value);
        }
        record2.finish(
            Status::Done,
            Some(json!({ "id": record2.id, "total": total, "ok": ok, "failed": total - ok })),
        );
    });
    record.set_task(task.abort_handle());
    Ok(accepted(&record, "batches", Some(total)))
}

/// `e`, said of item `n` (from 0).
fn at_item(n: usize, e: ApiError) -> ApiError {
    match e {
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("item {}: {m}", n + 1)),
        ApiError::NotFound(m) => ApiError::NotFound(format!("item {}: {m}", n + 1)),
        other => other,
    }
}

/// The items of a batch body: a JSON array, or JSONL.
fn parse_batch(headers: &HeaderMap, body: &[u8]) -> Result<Vec<BatchItemRequest>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let items = match content_type.as_str() {
        "application/json" => serde_json::from_slice::<Vec<BatchItemRequest>>(body)
            .map_err(|e| ApiError::BadRequest(format!("the batch: {e}")))?,
        "application/x-ndjson" | "application/jsonl" | "application/json-seq" => {
            let text = std::str::from_utf8(body)
                .map_err(|e| ApiError::BadRequest(format!("the batch is not UTF-8: {e}")))?;
            let mut items = Vec::new();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                items.push(
                    serde_json::from_str::<BatchItemRequest>(line)
                        .map_err(|e| ApiError::BadRequest(format!("line {}: {e}", n + 1)))?,
                );
            }
            items
        }
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "a batch is `application/json` (an array of items) or `application/x-ndjson` (one per line), not {:?}",
                other
            )));
        }
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest("the batch has no item".into()));
    }
    Ok(items)
}

#[utoipa::path(get, path = "/v1/batches/{id}", security(("bearer" = [])),
    params(("id" = String, Path, description = "the batch's id")),
    responses((status = 200, body = BatchView), (status = 404, body = ErrorBody)))]
async fn get_batch(
    State(state): State<Arc<AppState>>,
    Authed(tenant): Authed,
    Path(id): Path<String>,
) -> Result<Json<BatchView>, ApiError> {
    let record = find(&state, &tenant, &id, "batch")?;
    let (info, status, done) = record.view();
    let (results, _) = record.results_from(0, false);
    let ok = results.iter().filter(|r| r["ok"] == true).count();
    Ok(Json(BatchView {
        id: record.id.clone(),
        status: status.as_str().into(),
        total: info["total"].as_u64().unwrap_or(0) as usize,
        done,
        ok,
        failed: done - ok,
    }))
}

#[utoipa::path(get, path = "/v1/batches/{id}/results", security(("bearer" = [])),
    params(("id" = String, Path, description = "the batch's id"),
        ("order" = Option<String>, Query, description = "`input` (default) or `finished`")),
    responses((status = 200, description = "one result per line (the fields of a run's result, with `id` and `index`), streamed until the last", content_type = "application/x-ndjson"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn batch_results(
    State(state): State<Arc<AppState>>,
    Authed(tenant): Authed,
    Path(id): Path<String>,
    query: Result<Query<ResultsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let input_order = match query.order.as_deref() {
        None | Some("input") => true,
        Some("finished") => false,
        Some(other) => {
            state.metrics.refused("bad_request");
            return Err(ApiError::BadRequest(format!(
                "order: {other:?} is not `input` or `finished`"
            )));
        }
    };
    let record = find(&state, &tenant, &id, "batch")?;
    let stream = futures_util::stream::unfold(
        (record, 0usize, false),
        move |(record, from, ended)| async move {
            if ended {
                return None;
            }
            let mut rx = record.watch();
            loop {
                let (results, over) = record.results_from(from, input_order);
                if !results.is_empty() || over {
                    let next = from + results.len();
                    let mut chunk = String::new();
                    for r in &results {
                        chunk.push_str(&r.to_string());
                        chunk.push('\n');
                    }
                    return Some((
                        Ok::<_, Infallible>(Bytes::from(chunk)),
                        (record, next, over),
                    ));
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/batches/{id}/events", security(("bearer" = [])),
    params(("id" = String, Path, description = "the batch's id")),
    responses((status = 200, description = "server-sent events: `delta`, `tool` and `result` with the item's `index`, then `done` {total, ok, failed}", content_type = "text/event-stream"),
        (status = 404, body = ErrorBody)))]
async fn batch_events(
    State(state): State<Arc<AppState>>,
    Authed(tenant): Authed,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let record = find(&state, &tenant, &id, "batch")?;
    Ok(sse(record))
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok\n"
}

#[utoipa::path(get, path = "/readyz",
    responses((status = 200, description = "ready: `{\"ready\": true, \"redis\": \"ok\" | \"degraded\" | \"none\", \"queue\": \"ok\" | \"unreachable\" | \"none\"}` (degraded: Redis is away and model calls go under this host's own limit, fail-open; queue: the work queue of `serve --worker`)"),
        (status = 503, body = ErrorBody)))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.shutting_down.load(Ordering::SeqCst) {
        return ApiError::Unavailable("the server is shutting down".into()).into_response();
    }
    let redis = match &state.fleet {
        None => "none",
        Some(fleet) if fleet.ping().await => "ok",
        Some(fleet) => {
            fleet
                .stats()
                .redis_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            fleet
                .stats()
                .degraded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            "degraded"
        }
    };
    if redis == "degraded" && !state.fleet.as_ref().is_some_and(|f| f.fails_open()) {
        return ApiError::Unavailable(
            "Redis is unreachable and model calls fail closed until it is back".into(),
        )
        .into_response();
    }
    let queue = match &state.worker {
        None => "none",
        Some((queue, _)) if queue.ping().await => "ok",
        // The worker waits for it; items stay in Redis (or come back after the lease).
        Some(_) => "unreachable",
    };
    Json(json!({ "ready": true, "redis": redis, "queue": queue })).into_response()
}

#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "the Prometheus text format", content_type = "text/plain")))]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let llm = state.host.llm();
    let worker = match &state.worker {
        Some((queue, stats)) => Some((queue.depth().await.ok(), stats.as_ref())),
        None => None,
    };
    let text = state.metrics.render(
        state.registry.running(),
        llm.calls_in_flight(),
        llm.calls_waiting(),
        state.fleet.as_ref().map(cf_fleet::RedisLimit::stats),
        worker,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[utoipa::path(get, path = "/openapi.json",
    responses((status = 200, description = "this document", content_type = "application/json")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see /openapi.json".into())
}

/// The OpenAPI document of the server.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "cf-host", description = "Sandboxed LLM agents over HTTP"),
    paths(list_agents, post_run, get_run, run_events, post_batch, get_batch, batch_results,
        batch_events, healthz, readyz, metrics, openapi),
    components(schemas(RunRequest, BatchItemRequest, RunResult, Started, RunView, BatchView,
        AgentView, ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
