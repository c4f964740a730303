//! Refused requests: the [`Refusal`] a failed step returns, the error response built from it
//! (in the route's error style, with the rate-limit headers the key earned so far), its count
//! in the metrics and the usage of the key that made it, its access-log line, and the draining
//! of the body a refused request never had read.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};

use super::body::ResponseBody;
use super::decide::Denied;
use super::{Conn, error, headers};
use crate::app::{App, Live};
use crate::config::ErrorStyle;
use crate::keyring::KeyState;
use crate::limits::Granted;

/// A refusal on its way out: the denial plus whatever headers it earned so far.
pub(super) struct Refusal {
    pub(super) denied: Denied,
    pub(super) style: ErrorStyle,
    pub(super) granted: Option<Granted>,
    pub(super) retry_after: Option<std::time::Duration>,
    pub(super) key: Option<Arc<KeyState>>,
    /// The route, once chosen (for metrics).
    pub(super) route: Option<usize>,
}

impl From<(Denied, ErrorStyle)> for Refusal {
    fn from((denied, style): (Denied, ErrorStyle)) -> Refusal {
        Refusal {
            denied,
            style,
            granted: None,
            retry_after: None,
            key: None,
            route: None,
        }
    }
}

/// Most of a refused request's unread body that is read and discarded before answering.
const DRAIN_BYTES: usize = 1024 * 1024;
/// Longest wait for it.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and discards what is left of a refused request's body, so the client sees the answer
/// (an HTTP/2 stream is not reset under its upload, which some clients report as a failure
/// instead of the answer) and an HTTP/1 connection stays reusable. A body larger than
/// [`DRAIN_BYTES`] or slower than [`DRAIN_WAIT`] is left alone: the connection pays for it.
pub(super) async fn drain(mut body: Incoming) {
    if body.is_end_stream() || body.size_hint().lower() > DRAIN_BYTES as u64 {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_WAIT, async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Builds the error response of a refusal, counts and logs it.
#[allow(clippy::too_many_arguments)]
pub(super) fn refuse(
    app: &App,
    live: &Live,
    refusal: Refusal,
    request_id: &str,
    method: &Method,
    path: &str,
    conn: Conn,
    started: Instant,
) -> Response<ResponseBody> {
    let Refusal {
        denied,
        style,
        granted,
        retry_after,
        key,
        route,
    } = refusal;
    let code = denied.code;
    let route = route.and_then(|i| live.config.routes.get(i));
    let status = code.status();
    app.metrics
        .requests
        .with_label_values(&[
            route.map_or("-", |r| r.path.as_str()),
            status.as_str(),
            route.map_or("-", |r| r.upstream.as_str()),
        ])
        .inc();
    if status == StatusCode::UNAUTHORIZED {
        app.metrics
            .auth_failures
            .with_label_values(&[code.as_str()])
            .inc();
    }
    let body = error::body(style, code, code.default_message(), request_id);
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = code.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(granted) = granted {
        headers::rate_limits(resp.headers_mut(), &granted, style, app.clock.now_ms());
    }
    if let Some(wait) = retry_after {
        headers::retry_after(resp.headers_mut(), wait);
    }
    if let Some(key) = &key {
        // An authenticated request counts, refused or not.
        let counts = crate::usage::Counts {
            requests: 1,
            errors: 1,
            ..Default::default()
        };
        let account = key.policy().account.name().to_owned();
        app.meter
            .record(key.id(), &account, app.clock.now_ms(), counts);
    }
    app.count_request();
    tracing::info!(
        target: "keygate::access",
        request_id,
        key_id = key.as_ref().map(|k| k.id()),
        method = %method,
        path,
        client = %conn.peer,
        status = code.status().as_u16(),
        code = code.as_str(),
        reason = %denied.reason,
        duration_us = started.elapsed().as_micros() as u64,
        "refused"
    );
    resp
}
