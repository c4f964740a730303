//! The end of a proxied request: metering and the access log line.
//!
//! [`Completion`] rides along the relayed response body as its [`Tap`]. It reads token usage as
//! the body passes (cutting out the usage chunk keygate asked for on the client's behalf), and
//! when the body ends — completely, by an upstream failure, or because the client left — it
//! records the request with the meter, settles the token reservation, counts quota tokens and
//! writes one access log line. When the upstream never reported usage, tokens are estimated
//! from what was relayed and the record says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::body::{StreamEnd, Tap};
use super::upstream::UpstreamClient;
use crate::app::{App, Live};
use crate::keyring::{KeyPolicy, KeyState};
use crate::limits::{self, Applicable};
use crate::usage::Counts;
use crate::usage::parse::{Format, UsageReader};

/// What is known about a request when its response starts.
pub struct Completion {
    pub app: Arc<App>,
    pub request_id: Arc<str>,
    pub key: Arc<KeyState>,
    pub policy: Arc<KeyPolicy>,
    pub applicable: Applicable,
    /// Tokens reserved in the token buckets at admission.
    pub reserved_tokens: u64,
    /// Whether this request is one that uses tokens (its JSON body named a model).
    pub tokens_expected: bool,
    /// Input tokens guessed from the request body's size, if usage never arrives.
    pub input_estimate: u64,
    pub reader: UsageReader,
    /// The config generation the request was served under, for its route's path.
    pub live: Arc<Live>,
    pub route_index: usize,
    pub upstream: Arc<UpstreamClient>,
    pub method: http::Method,
    pub uri: http::Uri,
    pub status: http::StatusCode,
    pub peer: SocketAddr,
    pub started: Instant,
    pub upstream_ms: u64,
}

impl Completion {
    /// The response's format, from its `content-type`.
    pub fn format(content_type: Option<&str>) -> Format {
        match content_type {
            Some(ct) if ct.starts_with("text/event-stream") => Format::Sse,
            Some(ct) if ct.starts_with("application/json") => Format::Json,
            _ => Format::Other,
        }
    }

    fn counts(&mut self, outcome: StreamEnd) -> Counts {
        let tokens = self.reader.finish();
        let failed = outcome == StreamEnd::UpstreamFailed || self.status.as_u16() >= 400;
        let mut counts = Counts {
            requests: 1,
            forwarded: 1,
            errors: u64::from(failed),
            ..Counts::default()
        };
        // A JSON body whose usage could be parsed was whole, however it ended.
        let whole = outcome == StreamEnd::Complete || self.reader.format() == Format::Json;
        if tokens.is_known() && whole {
            counts.input_tokens = tokens.input.unwrap_or(0);
            counts.output_tokens = tokens.output.unwrap_or(0);
        } else if self.tokens_expected || tokens.is_known() {
            // Cut short, or never reported: what was seen, topped up by an estimate (an SSE
            // delta is about one token; for other bodies, about four bytes are).
            let relayed = match self.reader.format() {
                Format::Sse => self.reader.content_events(),
                _ => self.reader.bytes() / 4,
            };
            counts.input_tokens = tokens.input.unwrap_or(self.input_estimate);
            counts.output_tokens = tokens.output.unwrap_or(0).max(relayed);
            counts.estimated = 1;
        }
        // Otherwise the request uses no tokens (listing models, say): zero, and exact.
        counts
    }
}

impl Tap for Completion {
    fn data(&mut self, chunk: Bytes) -> Option<Bytes> {
        self.reader.feed(chunk)
    }

    fn end(&mut self, outcome: StreamEnd) -> Option<Bytes> {
        let counts = self.counts(outcome);
        let app = &self.app;
        let now_ms = app.clock.now_ms();
        let account = &self.policy.account;
        app.meter
            .record(self.key.id(), account.name(), now_ms, counts);
        let used = counts.tokens();
        if self.reserved_tokens > 0 || self.applicable.has_tokens() {
            limits::settle_tokens(
                &self.applicable,
                &self.key,
                account,
                app.clock.mono_ns(),
                self.reserved_tokens,
                used,
            );
        }
        for counters in [self.key.quota.load_full(), account.quota.load_full()]
            .into_iter()
            .flatten()
        {
            counters.add_tokens(now_ms, used);
        }
        app.count_request();
        let served_by = self.live.config.routes.get(self.route_index);
        let route = served_by.map_or("-", |r| r.path.as_str());
        let upstream = self.upstream.config.name.as_str();
        let labelled = || {
            app.metrics
                .requests
                .with_label_values(&[route, self.status.as_str(), upstream])
        };
        let own_upstream = served_by.is_some_and(|r| r.upstream == upstream);
        match self.live.route_ok.get(self.route_index) {
            Some(ok) if own_upstream && self.status == http::StatusCode::OK => {
                ok.get_or_init(labelled).inc();
            }
            _ => labelled().inc(),
        }
        tracing::info!(
            target: "keygate::access",
            request_id = %self.request_id,
            key_id = self.key.id(),
            account = account.name(),
            method = %self.method,
            path = %self.uri.path(),
            route,
            upstream,
            client = %self.peer,
            status = self.status.as_u16(),
            upstream_ms = self.upstream_ms,
            input_tokens = counts.input_tokens,
            output_tokens = counts.output_tokens,
            estimated = counts.estimated == 1,
            bytes = self.reader.bytes(),
            outcome = ?outcome,
            duration_us = self.started.elapsed().as_micros() as u64,
            "proxied"
        );
        match outcome {
            StreamEnd::Complete => self.reader.rest(),
            _ => None,
        }
    }
}
