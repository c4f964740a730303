//! The data plane (SPEC §2): authenticate, apply the key's policy, route, forward, relay.
//!
//! [`handle`] never fails: every refusal or fault becomes a response in the route's error
//! style, with `x-request-id` always and the rate-limit headers once the key is known. The
//! steps run in SPEC §2's order (`decide` holds them, shared with `explain`); the body is read
//! only when a decision or a rewrite needs it, bounded by `server.max_body_bytes`, and is
//! streamed otherwise. Nothing here touches the disk.

pub mod body;
mod complete;
pub mod decide;
pub mod error;
mod forward;
pub mod guard;
pub mod headers;
pub mod inspect;
pub mod pipeline;
pub mod pool;
mod refusal;
pub mod route;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};

use self::body::{RequestBody, ResponseBody};
use self::decide::Denied;
use self::error::Code;
use self::inspect::JsonBody;
use self::pipeline::Mode;
use self::refusal::{Refusal, drain, refuse};
use crate::app::{App, Live};
use crate::config::ErrorStyle;
use crate::keyring::{KeyPolicy, KeyState};
use crate::limits::{Applicable, Granted};

/// Facts about the connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// The per-request state once the key is known, carried into forwarding and logging.
pub struct Admitted {
    pub key: Arc<KeyState>,
    pub policy: Arc<KeyPolicy>,
    pub route_index: usize,
    pub granted: Granted,
    pub applicable: Applicable,
    /// The request uses tokens (its JSON body names a model).
    pub tokens_expected: bool,
    /// Input tokens guessed from the body's size, for when usage never arrives.
    pub input_estimate: u64,
    /// keygate asked an OpenAI stream for its usage chunk; the client did not.
    pub drop_usage_chunk: bool,
}

/// Serves one data-plane request.
pub async fn handle(app: Arc<App>, conn: Conn, req: Request<Incoming>) -> Response<ResponseBody> {
    let started = Instant::now();
    let request_id = next_request_id();
    let live = app.live();
    let mut resp = if req.uri().path() == "/healthz" && req.method() == Method::GET {
        plain(StatusCode::OK, r#"{"status":"ok"}"#)
    } else if is_preflight(&req) {
        let mut resp = plain(StatusCode::NO_CONTENT, "");
        headers::preflight(req.headers(), resp.headers_mut());
        resp
    } else {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let outcome = if guard::path_is_clean(&path) {
            let (parts, incoming) = req.into_parts();
            let mut body = Some(incoming);
            let outcome = serve(&app, &live, conn, parts, &mut body, &request_id, started).await;
            if outcome.is_err()
                && let Some(unread) = body.take()
            {
                drain(unread).await;
            }
            outcome
        } else {
            Err(Refusal::from((
                Denied::new(
                    Code::InvalidRequest,
                    "the path has dot segments or encoded separators",
                ),
                ErrorStyle::OpenAi,
            )))
        };
        outcome.unwrap_or_else(|refusal| {
            refuse(
                &app,
                &live,
                refusal,
                &request_id,
                &method,
                &path,
                conn,
                started,
            )
        })
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(headers::X_REQUEST_ID, v);
    }
    resp
}

fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Decides and forwards one request. The body stays in `body` until a decision or the
/// forwarding needs it, so that a refusal can drain what it never read.
async fn serve(
    app: &Arc<App>,
    live: &Arc<Live>,
    conn: Conn,
    parts: http::request::Parts,
    body: &mut Option<Incoming>,
    request_id: &Arc<str>,
    started: Instant,
) -> Result<Response<ResponseBody>, Refusal> {
    let config = &live.config;
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let style = route::style_for(&config.routes, &live.route_order, &method, &path);
    let now_ms = app.clock.now_ms();

    let ip = decide::client_ip(
        conn.peer.ip(),
        &parts.headers,
        &config.server.trusted_proxies,
    );
    let failures = config.server.auth_failure_limit;
    if let Some(wait) = app.guard.blocked(ip, failures, app.clock.mono_ns()) {
        let denied = Denied::new(
            Code::RateLimitExceeded,
            format!("too many failed authentications from {ip}"),
        );
        return Err(Refusal {
            retry_after: Some(wait),
            ..Refusal::from((denied, style))
        });
    }
    // A failed authentication counts against the client's IP.
    let count_failure = |denied: &Denied| {
        if denied.code.status() == StatusCode::UNAUTHORIZED {
            app.guard.failed(ip, failures, app.clock.mono_ns());
        }
    };
    let auth_failed = |denied: Denied| {
        count_failure(&denied);
        Refusal::from((denied, style))
    };
    let presented = decide::credential(&parts.headers).map_err(auth_failed)?;
    let key = decide::authenticate(&app.keyring, presented, now_ms).map_err(auth_failed)?;
    let policy = key.policy();
    let with_key = |denied: Denied| Refusal {
        key: Some(Arc::clone(&key)),
        ..Refusal::from((denied, style))
    };
    let origin = decide::origin(&parts.headers).map(str::to_owned);
    pipeline::before_body(&policy, now_ms, Some(ip), origin.as_deref()).map_err(|denied| {
        count_failure(&denied);
        with_key(denied)
    })?;

    // The body is read only when a decision or a rewrite needs it.
    let max_body = config.server.max_body_bytes;
    let must_read = route::needs_model(&config.routes, &live.route_order, &method, &path)
        || decide::restricts_models(&policy);
    let want_read = must_read
        || (is_json(&parts.headers) && (!config.presets.is_empty() || wants_usage(&parts, style)))
        || Applicable::new(&config.limits, &policy, &policy.account.limits()).has_tokens();
    let mut payload = None;
    if want_read {
        let incoming = body
            .take()
            .expect("the body is taken once: to read it or to forward it");
        payload = Some(if incoming.is_end_stream() {
            Payload::Raw(Bytes::new())
        } else {
            let bytes = read_body(incoming, max_body, config.server.idle_timeout)
                .await
                .map_err(with_key)?;
            match JsonBody::parse(bytes.clone()) {
                Some(json) => Payload::Json(json),
                None if must_read => {
                    return Err(with_key(Denied::new(
                        Code::InvalidRequest,
                        "the body must be read to route or check its model and is not a JSON object",
                    )));
                }
                None => Payload::Raw(bytes),
            }
        });
    }
    let json = match &payload {
        Some(Payload::Json(json)) => Some(json),
        _ => None,
    };
    // A key limited to models sends a JSON body only with a model keygate can read: without
    // one (or with a number, or a string that does not decode) the upstream might pick a
    // default. Requests without a body (GET /v1/models) pass.
    if let Some(json) = json
        && decide::restricts_models(&policy)
        && json.model().is_none()
        && json.assistant_id().is_none()
    {
        return Err(with_key(Denied::new(
            Code::ModelNotAllowed,
            "the body names no model as a string, and this key is limited to models",
        )));
    }
    let pipeline::Routed {
        route_index,
        route,
        model,
        preset,
        upstream,
    } = pipeline::route_request(
        config,
        &live.route_order,
        &policy,
        &method,
        &path,
        json.and_then(JsonBody::model),
        json.and_then(JsonBody::assistant_id),
    )
    .map_err(with_key)?;
    // The request uses tokens when it names a model (its body's, or a preset's).
    let tokens_expected = model.is_some();
    let style = route.errors;
    let with_key = |denied: Denied| Refusal {
        key: Some(Arc::clone(&key)),
        route: Some(route_index),
        ..Refusal::from((denied, style))
    };

    let reserve = json
        .and_then(JsonBody::max_tokens)
        .unwrap_or(config.limits.reserve_tokens);
    let mono_ns = app.clock.mono_ns();
    let limited = pipeline::limit(config, &key, &policy, Mode::Take, reserve, mono_ns, now_ms)
        .map_err(|r| Refusal {
            granted: Some(r.granted),
            retry_after: r.retry_after,
            ..with_key(r.denied)
        })?;

    let content_length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if payload.is_none() && content_length.is_some_and(|n| n > max_body) {
        pipeline::release(&key, &policy, &limited, mono_ns, now_ms);
        return Err(Refusal {
            granted: Some(limited.granted),
            ..with_key(Denied::new(
                Code::RequestTooLarge,
                "the body is over server.max_body_bytes",
            ))
        });
    }

    let mut drop_usage_chunk = false;
    let mut input_estimate = content_length.unwrap_or(0) / 4;
    if let Some(Payload::Json(json)) = &mut payload {
        input_estimate = json.len() as u64 / 4;
        if let Some(preset) = preset
            && !json.apply_preset(preset, style == ErrorStyle::Anthropic)
        {
            return Err(with_key(Denied::new(
                Code::InvalidRequest,
                "the body cannot be rewritten for the preset: a member name does not decode",
            )));
        }
        if wants_usage(&parts, style) && json.is_stream() {
            drop_usage_chunk = json.request_stream_usage();
        }
    }
    let upstream_body = match payload {
        Some(Payload::Json(json)) => {
            RequestBody::Full(http_body_util::Full::new(json.into_bytes()))
        }
        Some(Payload::Raw(bytes)) => RequestBody::Full(http_body_util::Full::new(bytes)),
        None => {
            let incoming = body
                .take()
                .expect("the body is taken once: to read it or to forward it");
            RequestBody::streamed(incoming, max_body as usize, config.server.idle_timeout)
        }
    };
    let admitted = Admitted {
        key: Arc::clone(&key),
        policy,
        route_index,
        granted: limited.granted,
        applicable: limited.applicable,
        tokens_expected,
        input_estimate,
        drop_usage_chunk,
    };
    let ctx = forward::Forward {
        app,
        live,
        route,
        upstream,
        admitted: &admitted,
        request_id,
        origin: origin.as_deref(),
        started,
        peer: conn.peer,
    };
    ctx.send(parts, upstream_body)
        .await
        .map_err(|denied| Refusal {
            granted: Some(admitted.granted),
            ..with_key(denied)
        })
}

/// A request body keygate read.
enum Payload {
    /// Parsed as a JSON object.
    Json(JsonBody),
    /// Not a JSON object (or empty).
    Raw(Bytes),
}

/// Reads a request body keygate must see, up to `max` bytes and for at most `deadline` (the
/// idle timeout): a body sent slowly, or never, must not hold the connection (and a
/// connection slot) for ever.
async fn read_body(incoming: Incoming, max: u64, deadline: Duration) -> Result<Bytes, Denied> {
    let too_large = || {
        Denied::new(
            Code::RequestTooLarge,
            "the body is over server.max_body_bytes",
        )
    };
    if incoming.size_hint().lower() > max {
        return Err(too_large());
    }
    let read = tokio::time::timeout(deadline, Limited::new(incoming, max as usize).collect());
    let Ok(read) = read.await else {
        return Err(Denied::new(
            Code::InvalidRequest,
            "the request body did not arrive within server.idle_timeout",
        ));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Denied::new(
            Code::InvalidRequest,
            format!("the request body could not be read: {e}"),
        )),
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|ct| {
            const JSON: &[u8] = b"application/json";
            ct.trim_start()
                .as_bytes()
                .get(..JSON.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(JSON))
        })
}

/// OpenAI chat completions are read so that a streamed one can be asked for its usage chunk.
fn wants_usage(parts: &http::request::Parts, style: ErrorStyle) -> bool {
    style == ErrorStyle::OpenAi
        && parts.method == Method::POST
        && parts.uri.path().ends_with("/chat/completions")
}

fn plain(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    if !body.is_empty() {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    resp
}

/// `req_` + 24 hex digits: a per-process random base plus a counter, so ids are unique
/// without a syscall per request. Made straight into the one allocation it lives in.
pub fn next_request_id() -> Arc<str> {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let base = *BASE.get_or_init(|| {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).map_or(0x5eed, |()| u64::from_le_bytes(b))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (high, low) = (base ^ n.rotate_left(32), n as u32);
    let mut id = *b"req_000000000000000000000000";
    for i in 0..16 {
        id[4 + i] = HEX[(high >> (60 - 4 * i) & 0xf) as usize];
    }
    for i in 0..8 {
        id[20 + i] = HEX[(low >> (28 - 4 * i) & 0xf) as usize];
    }
    Arc::from(std::str::from_utf8(&id).unwrap_or("req_invalid"))
}
