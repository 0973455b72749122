//! [`AnthropicProvider`]: one attempt of a Messages API call over HTTPS (reqwest with
//! rustls), classified for the service's retry loop.

use crate::provider::{BoxFuture, EventStream, Provider, ProviderError};
use crate::types::{LlmError, Request, Response};
use crate::wire::{self, MAX_ERROR_MESSAGE_CHARS, WireRequest};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url};
use std::fmt;
use std::time::{Duration, SystemTime};

/// The API's base URL when neither a flag nor `ANTHROPIC_BASE_URL` names one.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Default of [`AnthropicConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`AnthropicConfig::max_response_bytes`]: 8 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;
/// Idle connections kept per host: above the largest concurrency limit we expect
/// (200), so that a burst reuses its connections instead of reconnecting.
const MAX_IDLE_PER_HOST: usize = 512;
/// The most bytes of an error response read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// The environment variable holding the API key.
const API_KEY_VAR: &str = "ANTHROPIC_API_KEY";
/// The environment variable holding the base URL.
const BASE_URL_VAR: &str = "ANTHROPIC_BASE_URL";

/// An API key. It never appears in `Debug`, `Display`, logs or error messages: both
/// print `ApiKey(<redacted>)`.
///
/// ```
/// let key = cf_llm::ApiKey::new("sk-ant-secret");
/// assert_eq!(format!("{key:?} {key}"), "ApiKey(<redacted>) ApiKey(<redacted>)");
/// assert_eq!(key.expose_secret(), "sk-ant-secret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    /// The key in `ANTHROPIC_API_KEY`; an unset or empty variable is
    /// [`AnthropicConfigError::MissingApiKey`].
    pub fn from_env() -> Result<Self, AnthropicConfigError> {
        Self::from_env_value(std::env::var(API_KEY_VAR).ok())
    }

    fn from_env_value(value: Option<String>) -> Result<Self, AnthropicConfigError> {
        match value {
            Some(key) if !key.trim().is_empty() => Ok(Self(key.trim().to_owned())),
            _ => Err(AnthropicConfigError::MissingApiKey),
        }
    }

    /// The key itself, for the one place that sends it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The base URL to use: `flag` if given, else `ANTHROPIC_BASE_URL`, else
/// [`DEFAULT_BASE_URL`]. Empty values count as unset.
pub fn resolve_base_url(flag: Option<&str>) -> String {
    resolve_base_url_from(flag, std::env::var(BASE_URL_VAR).ok().as_deref())
}

fn resolve_base_url_from(flag: Option<&str>, env: Option<&str>) -> String {
    [flag, env]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(DEFAULT_BASE_URL)
        .to_owned()
}

/// Why an [`AnthropicProvider`] could not be built. Never contains the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnthropicConfigError {
    /// No API key: `ANTHROPIC_API_KEY` is unset or empty.
    #[error("no API key: set ANTHROPIC_API_KEY")]
    MissingApiKey,
    /// The key cannot be sent in an HTTP header (control characters, non-ASCII).
    #[error("the API key contains characters that cannot be sent in a header")]
    InvalidApiKey,
    /// The base URL is not an `http` or `https` URL.
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidBaseUrl {
        /// The URL as given (omitted when it holds credentials).
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    InvalidSetting(String),
    /// The HTTP client could not be built (e.g. TLS initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Settings of an [`AnthropicProvider`].
///
/// ```
/// use cf_llm::{AnthropicConfig, ApiKey, DEFAULT_CONNECT_TIMEOUT};
/// let config = AnthropicConfig::new("http://127.0.0.1:8080", ApiKey::new("k"));
/// assert_eq!(config.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct AnthropicConfig {
    /// Where the API is, without `/v1/messages` (see [`resolve_base_url`]).
    pub base_url: String,
    /// The key sent as `x-api-key`.
    pub api_key: ApiKey,
    /// Timeout of establishing a connection (TCP and TLS). Default 10 s. The whole
    /// attempt is bounded by the service's attempt timeout.
    pub connect_timeout: Duration,
    /// The largest response body accepted, counted while it streams in; a larger one
    /// is an [`LlmError::InvalidResponse`]. Default 8 MiB.
    pub max_response_bytes: usize,
    /// Ask for every answer as server-sent events (`"stream": true`), also those the
    /// caller wants whole ([`LlmService::complete`](crate::LlmService::complete)),
    /// and assemble them ([`SseReader`](crate::SseReader)). Default off: a whole
    /// answer is asked for whole. A streamed call
    /// ([`LlmService::stream`](crate::LlmService::stream)) always asks for a stream.
    pub stream_answers: bool,
    /// Told when the API's rate-limit headers ask for a pause (a fleet's limit, which
    /// pauses every host). Default: none.
    pub rate_observer: Option<std::sync::Arc<dyn crate::RateObserver>>,
}

impl AnthropicConfig {
    /// A config for `base_url` and `api_key` with the default timeouts and caps.
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        Self {
            base_url: base_url.into(),
            api_key,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            stream_answers: false,
            rate_observer: None,
        }
    }

    /// The config from the environment: the base URL from `flag`, then
    /// `ANTHROPIC_BASE_URL`, then the default; the key from `ANTHROPIC_API_KEY`.
    pub fn from_env(base_url_flag: Option<&str>) -> Result<Self, AnthropicConfigError> {
        Ok(Self::new(
            resolve_base_url(base_url_flag),
            ApiKey::from_env()?,
        ))
    }

    /// Checks every setting; [`AnthropicProvider::new`] calls it.
    pub fn validate(&self) -> Result<(), AnthropicConfigError> {
        self.messages_url().map(|_| ())?;
        if self.api_key.expose_secret().is_empty() {
            return Err(AnthropicConfigError::MissingApiKey);
        }
        HeaderValue::from_str(self.api_key.expose_secret())
            .map_err(|_| AnthropicConfigError::InvalidApiKey)?;
        if self.connect_timeout.is_zero() {
            return Err(AnthropicConfigError::InvalidSetting(
                "connect_timeout must be above zero".into(),
            ));
        }
        if self.max_response_bytes == 0 {
            return Err(AnthropicConfigError::InvalidSetting(
                "max_response_bytes must be above zero".into(),
            ));
        }
        Ok(())
    }

    /// `{base_url}/v1/messages`, checked.
    fn messages_url(&self) -> Result<Url, AnthropicConfigError> {
        let invalid = |url: &str, reason: &str| AnthropicConfigError::InvalidBaseUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let base = self.base_url.trim().trim_end_matches('/');
        let parsed = Url::parse(base).map_err(|e| invalid(base, &e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid(
                "<omitted>",
                "credentials in the base URL are not supported; use the API key",
            ));
        }
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(base, "the scheme must be http or https"));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid(base, "no host"));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(base, "a query or fragment is not allowed"));
        }
        Url::parse(&format!("{base}/v1/messages")).map_err(|e| invalid(base, &e.to_string()))
    }
}

/// Speaks the Anthropic Messages API: `POST {base}/v1/messages` with `x-api-key`,
/// `anthropic-version: 2023-06-01` and a JSON body. One attempt per
/// [`send`](Provider::send); the [`LlmService`](crate::LlmService) retries.
///
/// Failures are classified as the official SDKs do: connection errors, timeouts, 408,
/// 409, 429 and every status ≥ 500 (529 included) may be retried; 400, 401, 402, 403,
/// 404, 413 and 422 are not; a `x-should-retry: true|false` header overrides both.
/// The wait the API asks for comes from `retry-after-ms`, else `retry-after`
/// (seconds, or an HTTP date). Statuses map to errors as: 400/422 →
/// [`InvalidRequest`](LlmError::InvalidRequest), 401 →
/// [`Authentication`](LlmError::Authentication), 402 (billing) and 403 →
/// [`Permission`](LlmError::Permission) (402 is about the account, not the request:
/// another attempt cannot fix it and the operator must act), 404 →
/// [`NotFound`](LlmError::NotFound), 408 → [`Timeout`](LlmError::Timeout), 413 →
/// [`TooLarge`](LlmError::TooLarge), 429 → [`RateLimited`](LlmError::RateLimited),
/// 529 (or any `overloaded_error` body) → [`Overloaded`](LlmError::Overloaded), 409
/// and other 5xx → [`Server`](LlmError::Server), any other 4xx → `InvalidRequest`.
/// Messages are the API's `error.message` (cut to 500 characters), else the status
/// line.
///
/// One reqwest client per provider: connections are pooled and reused (up to 512
/// idle per host), `TCP_NODELAY` is on, redirects are not followed, and HTTP/2 is
/// used where the server offers it over TLS. A loopback base URL bypasses any
/// system proxy.
pub struct AnthropicProvider {
    client: reqwest::Client,
    base_url: String,
    messages_url: Url,
    headers: HeaderMap,
    max_response_bytes: usize,
    /// Ask for answers as server-sent events.
    stream_answers: bool,
    /// Kept to scrub it from what the upstream sends back.
    api_key: ApiKey,
    rate_observer: Option<std::sync::Arc<dyn crate::RateObserver>>,
}

impl fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("base_url", &self.base_url)
            .field("api_key", &"ApiKey(<redacted>)")
            .field("max_response_bytes", &self.max_response_bytes)
            .finish_non_exhaustive()
    }
}

impl AnthropicProvider {
    /// A provider with `config`, validated; builds its HTTP client once.
    pub fn new(config: AnthropicConfig) -> Result<Self, AnthropicConfigError> {
        config.validate()?;
        let messages_url = config.messages_url()?;
        let mut key = HeaderValue::from_str(config.api_key.expose_secret())
            .map_err(|_| AnthropicConfigError::InvalidApiKey)?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("x-api-key"), key);
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(ANTHROPIC_VERSION),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cf-llm/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&messages_url) {
            builder = builder.no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| AnthropicConfigError::Client(describe(&e)))?;
        Ok(Self {
            client,
            base_url: config.base_url.trim().trim_end_matches('/').to_owned(),
            messages_url,
            headers,
            max_response_bytes: config.max_response_bytes,
            stream_answers: config.stream_answers,
            api_key: config.api_key,
            rate_observer: config.rate_observer,
        })
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// One attempt: a whole answer, or with `stream` the events of one (a server
    /// that answers a stream request with a whole JSON body is replayed).
    async fn post(&self, request: &Request, stream: bool) -> Result<EventStream, ProviderError> {
        let mut wire = WireRequest::from_request(request);
        wire.stream = stream;
        let body = wire.to_body().map_err(ProviderError::fatal)?;
        let mut headers = self.headers.clone();
        if stream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        let response = self
            .client
            .post(self.messages_url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        tracing::debug!(status = status.as_u16(), request_id = %request_id, model = %request.model, stream, "anthropic response");
        let hints = RetryHints::from_headers(response.headers(), SystemTime::now());
        if let Some(observer) = &self.rate_observer
            && let Some(wait) = api_pause(status, response.headers(), &hints, SystemTime::now())
        {
            observer.pause(wait);
        }
        let event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status.is_success() && event_stream {
            let key = self.api_key.expose_secret().as_bytes().to_vec();
            let reader = crate::SseReader::new(response.bytes_stream(), self.max_response_bytes);
            // Each event is scrubbed on its own. A delta's edge is a token's edge, so a
            // short key (as some gateways use) would be cut out of the answer's own
            // words wherever a delta starts with it: events are scrubbed only of keys
            // of at least MIN_STREAM_SCRUB bytes (the API's are about 100).
            let reader = if key.len() >= MIN_STREAM_SCRUB {
                reader.scrubbing(move |data| scrub(data, &key))
            } else {
                reader
            };
            return Ok(EventStream::sse(reader));
        }
        let mut body = if status.is_success() {
            Some(read_capped(response, self.max_response_bytes).await?)
        } else {
            // The body of an error only matters for its message: a bad one falls back
            // to the status line.
            read_capped(response, MAX_ERROR_BODY_BYTES).await.ok()
        };
        if let Some(body) = body.as_mut() {
            scrub(body, self.api_key.expose_secret().as_bytes());
        }
        interpret(status, &hints, body.as_deref()).map(EventStream::whole)
    }

    async fn send_once(&self, request: &Request) -> Result<Response, ProviderError> {
        let mut events = self.post(request, self.stream_answers).await?;
        while events.next().await?.is_some() {}
        events.answer()
    }
}

/// The shortest key scrubbed from streamed events (see `post`).
const MIN_STREAM_SCRUB: usize = 16;

/// Replaces every occurrence of `secret` in `body` with `[redacted]`. A proxy or
/// server that echoes the request's headers (some error pages do) would otherwise hand
/// the API key to the plugin, `--json` output and the logs. This catches verbatim
/// echoes (an API key's characters need no JSON escaping); a hostile upstream, which
/// has the key anyway, could still encode it.
///
/// Only whole tokens are replaced: an occurrence next to a character a key can hold
/// (letters, digits, `-`, `_`) is part of something else. A short key (`sk-1234`, as
/// some gateways use) is still scrubbed where it is echoed, and never cut out of the
/// answer's own words (a key `k` once turned `input_tokens` into `input_to[redacted]ens`).
pub(crate) fn scrub(body: &mut Vec<u8>, secret: &[u8]) {
    let part_of_token = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let whole = |at: usize| {
        let before = at.checked_sub(1).and_then(|i| body.get(i)).copied();
        let after = body.get(at + secret.len()).copied();
        !before.is_some_and(part_of_token) && !after.is_some_and(part_of_token)
    };
    if secret.is_empty() {
        return;
    }
    let hits: Vec<usize> = body
        .windows(secret.len())
        .enumerate()
        .filter(|(at, w)| *w == secret && whole(*at))
        .map(|(at, _)| at)
        .collect();
    if hits.is_empty() {
        return;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut from = 0;
    for at in hits {
        if at < from {
            continue;
        }
        out.extend_from_slice(&body[from..at]);
        out.extend_from_slice(b"[redacted]");
        from = at + secret.len();
    }
    out.extend_from_slice(&body[from..]);
    *body = out;
}

/// What an answer means: the [`Response`] of a success, else a classified failure.
/// `body` is `None` when an error's body could not be read.
pub(crate) fn interpret(
    status: StatusCode,
    hints: &RetryHints,
    body: Option<&[u8]>,
) -> Result<Response, ProviderError> {
    if status.is_success() {
        return wire::parse_response(body.unwrap_or_default()).map_err(ProviderError::fatal);
    }
    Err(classify(status, body, hints))
}

impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn endpoint(&self) -> &str {
        &self.base_url
    }

    fn send<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<Response, ProviderError>> {
        Box::pin(self.send_once(request))
    }

    fn open<'a>(
        &'a self,
        request: &'a Request,
    ) -> BoxFuture<'a, Result<EventStream, ProviderError>> {
        Box::pin(self.post(request, true))
    }
}

fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// Reads a body chunk by chunk, refusing it as soon as it passes `cap` bytes.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = |what: String| {
        ProviderError::fatal(LlmError::InvalidResponse(format!(
            "{what}, over the cap of {cap} bytes"
        )))
    };
    let declared = response.content_length();
    if let Some(len) = declared
        && len > cap as u64
    {
        return Err(too_large(format!("the response is {len} bytes")));
    }
    let mut body = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > cap {
            return Err(too_large(format!(
                "the response passed {} bytes",
                body.len() + chunk.len()
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport failure: timeouts and connection errors may be retried.
fn transport_error(e: reqwest::Error) -> ProviderError {
    let message = describe(&e);
    if e.is_timeout() {
        ProviderError::transient(LlmError::Timeout(message), None)
    } else if e.is_builder() {
        ProviderError::fatal(LlmError::InvalidRequest(message))
    } else {
        ProviderError::transient(LlmError::Connection(message), None)
    }
}

/// An error and its causes on one line, without the URL (which could carry
/// anything the operator put in it).
fn describe(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let head = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the response body could not be read"
    } else {
        "the request failed"
    };
    parts.push(head.to_owned());
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// What the response headers say about retrying.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RetryHints {
    /// `x-should-retry`.
    pub(crate) should_retry: Option<bool>,
    /// `retry-after-ms`, else `retry-after`.
    pub(crate) retry_after: Option<Duration>,
}

impl RetryHints {
    pub(crate) fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let should_retry = match text("x-should-retry") {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => None,
        };
        let positive = |secs: f64| {
            (secs.is_finite() && secs > 0.0)
                .then(|| Duration::try_from_secs_f64(secs).ok())
                .flatten()
        };
        let from_ms = text("retry-after-ms")
            .and_then(|v| v.parse::<f64>().ok())
            .and_then(|ms| positive(ms / 1000.0));
        let retry_after = from_ms.or_else(|| {
            let v = text("retry-after")?;
            match v.parse::<f64>() {
                Ok(secs) => positive(secs),
                Err(_) => httpdate::parse_http_date(v)
                    .ok()?
                    .duration_since(now)
                    .ok()
                    .filter(|d| !d.is_zero()),
            }
        });
        Self {
            should_retry,
            retry_after,
        }
    }
}

/// The rates of `anthropic-ratelimit-<rate>-{remaining,reset}`.
const RATES: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];

/// How long the API takes no request, by its headers: a 429's `retry-after`, or the
/// latest `-reset` (RFC 3339) of a rate whose `-remaining` is 0. `None` when it takes
/// requests now.
pub(crate) fn api_pause(
    status: StatusCode,
    headers: &HeaderMap,
    hints: &RetryHints,
    now: SystemTime,
) -> Option<Duration> {
    let text = |name: String| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let spent = RATES
        .iter()
        .filter(|rate| text(format!("anthropic-ratelimit-{rate}-remaining")) == Some("0"))
        .filter_map(|rate| {
            let reset =
                humantime::parse_rfc3339_weak(text(format!("anthropic-ratelimit-{rate}-reset"))?)
                    .ok()?;
            reset.duration_since(now).ok().filter(|d| !d.is_zero())
        })
        .max();
    let asked = (status == StatusCode::TOO_MANY_REQUESTS)
        .then_some(hints.retry_after)
        .flatten();
    spent.into_iter().chain(asked).max()
}

/// An `error` event of a streamed answer (`{"type": "error", "error": {"type": …}}`,
/// which may come after HTTP 200), classified as the status its type documents would
/// be: `overloaded_error` 529, `api_error` 500, `rate_limit_error` 429, …
pub(crate) fn stream_error(data: &[u8]) -> ProviderError {
    let code = match wire::parse_error_body(data).map(|e| e.kind) {
        Some(kind) => match kind.as_str() {
            "invalid_request_error" => 400,
            "authentication_error" => 401,
            "billing_error" => 402,
            "permission_error" => 403,
            "not_found_error" => 404,
            "request_too_large" => 413,
            "rate_limit_error" => 429,
            "timeout_error" => 504,
            "overloaded_error" => 529,
            _ => 500,
        },
        None => 500,
    };
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    classify(status, Some(data), &RetryHints::default())
}

/// Maps a non-success status (and its body) to a classified failure.
fn classify(status: StatusCode, body: Option<&[u8]>, hints: &RetryHints) -> ProviderError {
    let api = body.and_then(wire::parse_error_body);
    let message = match &api {
        Some(e) if !e.message.trim().is_empty() => {
            wire::truncate_chars(e.message.trim(), MAX_ERROR_MESSAGE_CHARS)
        }
        _ => format!("HTTP {}", status_line(status)),
    };
    let overloaded_body = api.as_ref().is_some_and(|e| e.kind == "overloaded_error");
    let code = status.as_u16();
    let error = match code {
        400 | 422 => LlmError::InvalidRequest(message),
        401 => LlmError::Authentication(message),
        402 => LlmError::Permission(format!("billing: {message}")),
        403 => LlmError::Permission(message),
        404 => LlmError::NotFound(message),
        408 => LlmError::Timeout(format!("the API timed out the request: {message}")),
        413 => LlmError::TooLarge(message),
        429 => LlmError::RateLimited {
            retry_after: hints.retry_after,
            message,
        },
        529 => LlmError::Overloaded(message),
        _ if overloaded_body => LlmError::Overloaded(message),
        409 | 500.. => LlmError::Server {
            status: code,
            message,
        },
        400..=499 => LlmError::InvalidRequest(format!("HTTP {code}: {message}")),
        _ => LlmError::InvalidResponse(format!("unexpected status HTTP {}", status_line(status))),
    };
    let retryable_by_status = matches!(code, 408 | 409 | 429) || code >= 500;
    ProviderError {
        error,
        retryable: hints.should_retry.unwrap_or(retryable_by_status),
        retry_after: hints.retry_after,
    }
}

fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// Regression: an upstream error that echoed the request headers handed the API
    /// key to the plugin, `--json` output and the logs.
    #[test]
    fn the_key_is_scrubbed_from_what_the_upstream_sends_back() {
        let key = b"sk-ant-0123456789";
        let mut body = br#"{"error":{"message":"bad header x-api-key: sk-ant-0123456789 (sk-ant-0123456789)"}}"#.to_vec();
        super::scrub(&mut body, key);
        let text = String::from_utf8(body).expect("utf-8");
        assert_eq!(
            text,
            r#"{"error":{"message":"bad header x-api-key: [redacted] ([redacted])"}}"#
        );
        let mut clean = b"nothing to see".to_vec();
        super::scrub(&mut clean, key);
        assert_eq!(clean, b"nothing to see");
    }

    /// Regression: a short key was cut out of the answer's own words (a key `k` broke
    /// every answer); skipping short keys instead would leak a gateway's `sk-1234`.
    #[test]
    fn short_keys_are_scrubbed_as_whole_tokens_only() {
        let answer = br#"{"usage":{"input_tokens":1,"output_tokens":2}}"#;
        let mut body = answer.to_vec();
        super::scrub(&mut body, b"k");
        assert_eq!(body, answer);
        let mut body = br#"{"error":"bad x-api-key: sk-1234","echo":"sk-1234"}"#.to_vec();
        super::scrub(&mut body, b"sk-1234");
        assert_eq!(
            body,
            br#"{"error":"bad x-api-key: [redacted]","echo":"[redacted]"}"#
        );
        let mut body = b"sk-12345 and xsk-1234".to_vec();
        super::scrub(&mut body, b"sk-1234");
        assert_eq!(body, b"sk-12345 and xsk-1234", "parts of other tokens");
    }

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn base_url_precedence_is_flag_then_env_then_default() {
        assert_eq!(
            resolve_base_url_from(Some("http://flag"), Some("http://env")),
            "http://flag"
        );
        assert_eq!(
            resolve_base_url_from(None, Some("http://env")),
            "http://env"
        );
        assert_eq!(resolve_base_url_from(Some(" "), Some("")), DEFAULT_BASE_URL);
        assert_eq!(resolve_base_url_from(None, None), DEFAULT_BASE_URL);
    }

    #[test]
    fn api_key_from_env_value() {
        assert!(matches!(
            ApiKey::from_env_value(None),
            Err(AnthropicConfigError::MissingApiKey)
        ));
        assert!(matches!(
            ApiKey::from_env_value(Some("  ".into())),
            Err(AnthropicConfigError::MissingApiKey)
        ));
        assert_eq!(
            ApiKey::from_env_value(Some("k\n".into()))
                .unwrap()
                .expose_secret(),
            "k"
        );
    }

    #[test]
    fn config_validation_obeyed_and_violated() {
        let key = ApiKey::new("sk-test");
        assert!(
            AnthropicConfig::new("https://api.anthropic.com/", key.clone())
                .validate()
                .is_ok()
        );
        assert_eq!(
            AnthropicConfig::new("http://h:1/proxy/", key.clone())
                .messages_url()
                .unwrap()
                .as_str(),
            "http://h:1/proxy/v1/messages"
        );
        for bad in [
            "ftp://h",
            "not a url",
            "http://user:pw@h",
            "http://h/?q=1",
            "",
        ] {
            let e = AnthropicConfig::new(bad, key.clone())
                .validate()
                .unwrap_err();
            assert!(
                matches!(e, AnthropicConfigError::InvalidBaseUrl { .. }),
                "{bad}: {e:?}"
            );
            assert!(!e.to_string().contains("pw"), "credentials echoed: {e}");
        }
        assert!(matches!(
            AnthropicConfig::new("http://h", ApiKey::new("a\nb")).validate(),
            Err(AnthropicConfigError::InvalidApiKey)
        ));
        assert!(matches!(
            AnthropicConfig::new("http://h", ApiKey::new("")).validate(),
            Err(AnthropicConfigError::MissingApiKey)
        ));
        let mut c = AnthropicConfig::new("http://h", key);
        c.max_response_bytes = 0;
        assert!(matches!(
            c.validate(),
            Err(AnthropicConfigError::InvalidSetting(_))
        ));
    }

    #[test]
    fn a_spent_rate_or_a_429_asks_for_a_pause_until_its_reset() {
        let now = humantime::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
        let pause = |status: u16, pairs: &[(&'static str, &str)]| {
            let h = headers(pairs);
            let hints = RetryHints::from_headers(&h, now);
            api_pause(StatusCode::from_u16(status).unwrap(), &h, &hints, now)
        };
        let spent = [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-12-02T10:00:02Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-12-02T10:00:05.500Z",
            ),
        ];
        assert_eq!(
            pause(200, &spent),
            Some(Duration::from_millis(5500)),
            "the latest reset"
        );
        let left = [
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", "2026-12-02T10:00:02Z"),
        ];
        assert_eq!(pause(200, &left), None, "requests remain");
        let past = [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-12-02T09:59:59Z"),
        ];
        assert_eq!(pause(200, &past), None, "the window has reset already");
        let garbled = [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "soon"),
        ];
        assert_eq!(pause(200, &garbled), None);
        assert_eq!(
            pause(429, &[("retry-after", "3")]),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            pause(503, &[("retry-after", "3")]),
            None,
            "only a 429 pauses the fleet"
        );
        assert_eq!(pause(429, &[]), None);
    }

    #[test]
    fn retry_hints_prefer_ms_then_seconds_then_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = |pairs: &[(&'static str, &str)]| RetryHints::from_headers(&headers(pairs), now);
        assert_eq!(
            h(&[("retry-after-ms", "250"), ("retry-after", "9")]).retry_after,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            h(&[("retry-after", "1.5")]).retry_after,
            Some(Duration::from_millis(1500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            h(&[("retry-after", date.as_str())]).retry_after,
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(h(&[("retry-after", past.as_str())]).retry_after, None);
        for junk in ["-1", "0", "NaN", "inf", "1e400", "soon"] {
            assert_eq!(h(&[("retry-after", junk)]).retry_after, None, "{junk}");
        }
        assert_eq!(h(&[("x-should-retry", "false")]).should_retry, Some(false));
        assert_eq!(h(&[("x-should-retry", "true")]).should_retry, Some(true));
        assert_eq!(h(&[("x-should-retry", "maybe")]).should_retry, None);
    }

    #[test]
    fn statuses_map_to_typed_errors_and_retry_rules() {
        let none = RetryHints::default();
        let body = |kind: &str, msg: &str| {
            format!(r#"{{"type":"error","error":{{"type":"{kind}","message":"{msg}"}}}}"#)
                .into_bytes()
        };
        let cases: Vec<(u16, &str, bool)> = vec![
            (400, "invalid_request", false),
            (401, "authentication", false),
            (402, "permission", false),
            (403, "permission", false),
            (404, "not_found", false),
            (408, "timeout", true),
            (409, "server_error", true),
            (413, "too_large", false),
            (422, "invalid_request", false),
            (429, "rate_limited", true),
            (418, "invalid_request", false),
            (500, "server_error", true),
            (503, "server_error", true),
            (529, "overloaded", true),
        ];
        for (code, kind, retryable) in cases {
            let p = classify(
                StatusCode::from_u16(code).unwrap(),
                Some(&body("x", "why")),
                &none,
            );
            assert_eq!(
                (p.error.kind(), p.retryable),
                (kind, retryable),
                "status {code}"
            );
            assert!(p.error.to_string().contains("why"), "{code}: {}", p.error);
        }
        let p = classify(
            StatusCode::from_u16(503).unwrap(),
            Some(&body("overloaded_error", "busy")),
            &none,
        );
        assert_eq!(p.error, LlmError::Overloaded("busy".into()));
        let p = classify(
            StatusCode::BAD_GATEWAY,
            Some(b"<html>bad gateway</html>"),
            &none,
        );
        assert_eq!(
            p.error,
            LlmError::Server {
                status: 502,
                message: "HTTP 502 Bad Gateway".into()
            }
        );
        let long = "é".repeat(2000);
        let p = classify(
            StatusCode::BAD_REQUEST,
            Some(&body("invalid_request_error", &long)),
            &none,
        );
        assert!(p.error.to_string().chars().count() < 600);
        let stop = RetryHints {
            should_retry: Some(false),
            retry_after: None,
        };
        assert!(!classify(StatusCode::INTERNAL_SERVER_ERROR, None, &stop).retryable);
        let go = RetryHints {
            should_retry: Some(true),
            retry_after: Some(Duration::from_secs(2)),
        };
        let p = classify(StatusCode::BAD_REQUEST, None, &go);
        assert!(p.retryable);
        assert_eq!(p.retry_after, Some(Duration::from_secs(2)));
        let p = classify(StatusCode::TOO_MANY_REQUESTS, None, &go);
        assert_eq!(
            p.error,
            LlmError::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
                message: "HTTP 429 Too Many Requests".into()
            }
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let secret = "sk-ant-very-secret-1234";
        let config = AnthropicConfig::new("http://127.0.0.1:9", ApiKey::new(secret));
        let provider = AnthropicProvider::new(config.clone()).unwrap();
        for text in [
            format!("{config:?}"),
            format!("{provider:?}"),
            format!("{:?}", provider.headers),
            config.api_key.to_string(),
        ] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
