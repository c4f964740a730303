//! Forwarding an admitted request to its upstream and relaying the answer.
//!
//! The upstream URL is the upstream's `base_url` joined with the request's path and query; the
//! client's credential and hop-by-hop headers are replaced by the upstream's real credential
//! (in its `auth` style) and its default headers (only where the client sent none). Requests go
//! out as HTTP/1.1 whatever the client spoke, so an HTTP/2 client can reach an HTTP/1.1-only
//! upstream; the pool speaks HTTP/2 where the upstream chooses it by ALPN.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{Response, Uri, header, request::Parts};

use super::body::{BodyFault, BodyStalled, Relay, RequestBody, ResponseBody};
use super::complete::Completion;
use super::decide::Denied;
use super::error::Code;
use super::pool::SendError;
use super::{Admitted, headers};
use crate::app::{App, Live};
use crate::config::{Route, Upstream};
use crate::usage::parse::{Format, UsageReader};

/// One forwarding step's context.
pub struct Forward<'a> {
    pub app: &'a Arc<App>,
    pub live: &'a Arc<Live>,
    pub route: &'a Route,
    /// The upstream chosen for the request (a preset's, else the route's).
    pub upstream: &'a str,
    pub admitted: &'a Admitted,
    pub request_id: &'a Arc<str>,
    /// The request's `Origin`/`Referer`, already checked against the key.
    pub origin: Option<&'a str>,
    pub started: Instant,
    pub peer: SocketAddr,
}

impl Forward<'_> {
    pub async fn send(
        self,
        parts: Parts,
        body: RequestBody,
    ) -> Result<Response<ResponseBody>, Denied> {
        let upstream = self.live.upstreams.get(self.upstream).ok_or_else(|| {
            Denied::new(
                Code::UpstreamError,
                format!("upstream {} is not configured", self.upstream),
            )
        })?;
        let config = &upstream.config;
        let path = join(config, &parts.uri)?;
        let origin_header = parts.headers.get(header::ORIGIN).cloned();
        let mut out_headers = parts.headers;
        headers::for_upstream(&mut out_headers, self.request_id);
        if matches!(body, RequestBody::Full(_)) {
            // keygate read this body and may have rewritten it: hyper sets its real length.
            out_headers.remove(header::CONTENT_LENGTH);
        }
        if let Some((name, value)) = &upstream.credential {
            out_headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &config.headers {
            if !out_headers.contains_key(name) {
                out_headers.insert(name.clone(), value.clone());
            }
        }
        let failure = body.failure();
        let mut req = http::Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.headers_mut() = out_headers;

        let sent = Instant::now();
        let (resp, lease) =
            match tokio::time::timeout(config.timeout, upstream.pool().send(req, path)).await {
                Err(_) => {
                    return Err(Denied::new(
                        Code::UpstreamTimeout,
                        format!(
                            "upstream {} sent no response within {:?}",
                            config.name, config.timeout
                        ),
                    ));
                }
                Ok(Err(e)) => {
                    let fault = failure.and_then(|f| f.get().copied());
                    return Err(classify(&config.name, &e, fault));
                }
                Ok(Ok(resp)) => resp,
            };
        let latency = sent.elapsed();
        upstream
            .latency
            .get_or_init(|| {
                self.app
                    .metrics
                    .upstream_latency
                    .with_label_values(&[config.name.as_str()])
            })
            .observe(latency.as_secs_f64());
        let upstream_ms = latency.as_millis() as u64;
        let (mut resp_parts, incoming) = resp.into_parts();
        if super::pool::ambiguous(&resp_parts.headers) {
            // hyper read the body by its transfer coding; a length beside it is stale and, passed
            // on, would cut the client's copy short. (The pool does not reuse the connection.)
            resp_parts.headers.remove(header::CONTENT_LENGTH);
            tracing::warn!(upstream = %config.name, request_id = %self.request_id,
                "upstream sent Content-Length with Transfer-Encoding; dropping the length and the connection");
        }
        headers::strip_hop_by_hop(&mut resp_parts.headers);
        let now_ms = self.app.clock.now_ms();
        headers::rate_limits(
            &mut resp_parts.headers,
            &self.admitted.granted,
            self.route.errors,
            now_ms,
        );
        if let (Some(origin), Some(_)) = (origin_header.as_ref(), self.origin) {
            headers::allow_origin(&mut resp_parts.headers, origin);
        }
        let format = Completion::format(
            resp_parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let admitted = self.admitted;
        let drop_usage_chunk = admitted.drop_usage_chunk && format == Format::Sse;
        if drop_usage_chunk {
            // What reaches the client is shorter than what the upstream sent.
            resp_parts.headers.remove(header::CONTENT_LENGTH);
        }
        let tap = Completion {
            app: Arc::clone(self.app),
            request_id: Arc::clone(self.request_id),
            key: Arc::clone(&admitted.key),
            policy: Arc::clone(&admitted.policy),
            applicable: admitted.applicable,
            reserved_tokens: admitted.granted.reserved_tokens,
            tokens_expected: admitted.tokens_expected,
            input_estimate: admitted.input_estimate,
            reader: UsageReader::new(format, drop_usage_chunk),
            live: Arc::clone(self.live),
            route_index: self.admitted.route_index,
            upstream: Arc::clone(upstream),
            method: parts.method,
            uri: parts.uri,
            status: resp_parts.status,
            peer: self.peer,
            started: self.started,
            upstream_ms,
        };
        let mut relay = Relay::new(
            incoming,
            config.timeout,
            format == Format::Sse,
            drop_usage_chunk,
            self.route.errors,
            Arc::clone(self.request_id),
            Some(Box::new(tap)),
        );
        if let Some(lease) = lease {
            relay.return_on_end(lease);
        }
        Ok(Response::from_parts(
            resp_parts,
            ResponseBody::Upstream(Box::new(relay)),
        ))
    }
}

/// The request's path and query under `base_url`'s path.
fn join(upstream: &Upstream, original: &Uri) -> Result<PathAndQuery, Denied> {
    let prefix = upstream.path_prefix();
    let joined = match original.path_and_query() {
        Some(pq) if prefix.is_empty() => return Ok(pq.clone()),
        Some(pq) => PathAndQuery::try_from(format!("{prefix}{pq}")),
        None => PathAndQuery::try_from(format!("{prefix}/")),
    };
    joined.map_err(|e| {
        Denied::new(
            Code::UpstreamError,
            format!("cannot build the upstream URL: {e}"),
        )
    })
}

/// Maps a failed exchange to the refusal: a body over the limit is 413, a stalled body 400 (the
/// client's faults, whatever the upstream connection made of them), a timeout 504, the rest
/// 502. The cause goes to the log, never to the client.
fn classify(upstream: &str, error: &SendError, body: Option<BodyFault>) -> Denied {
    match body {
        Some(BodyFault::TooLarge) => {
            return Denied::new(
                Code::RequestTooLarge,
                "the body is over server.max_body_bytes",
            );
        }
        Some(BodyFault::Stalled) => {
            return Denied::new(Code::InvalidRequest, BodyStalled.to_string());
        }
        None => {}
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    let mut chain = Vec::new();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            let what = match error {
                SendError::Connect(_) => "connect timed out",
                _ => "timed out",
            };
            return Denied::new(
                Code::UpstreamTimeout,
                format!("upstream {upstream}: {what}"),
            );
        }
        chain.push(e.to_string());
        source = e.source();
    }
    Denied::new(
        Code::UpstreamError,
        format!("upstream {upstream}: {}", chain.join(": ")),
    )
}
