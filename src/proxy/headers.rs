//! Header work of the data plane: what is stripped going up and coming down, the rate-limit
//! headers in the generic form and in each upstream's own dialect (SPEC §2), and CORS.

use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::clock::rfc3339;
use crate::config::ErrorStyle;
use crate::limits::Granted;

/// `x-api-key`, the other place a client puts its key. (Names made once: a name given as a
/// string is parsed and checked at every use.)
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `x-request-id`, keygate's id of a request, sent both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the proxy ones: never forwarded either way.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names is cheaper than nine removals,
    // each of which hashes its name. (A name `Connection` lists is only hop-by-hop with it.)
    let any = headers
        .keys()
        .any(|k| k == header::TRANSFER_ENCODING || HOP_BY_HOP.contains(k));
    if !any {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Prepares the client's headers for the upstream: no client credential, no hop-by-hop
/// headers, no `Host` (the client sets it from the upstream URL), no headers with underscores
/// (which some servers fold into dashes, a smuggling vector), and keygate's request id.
pub fn for_upstream(headers: &mut HeaderMap, request_id: &str) {
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(X_API_KEY);
    headers.remove(header::HOST);
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for name in underscored {
        headers.remove(name);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
}

/// Rate-limit header names keygate owns: removed from upstream responses before its own are set.
const OWNED_PREFIXES: [&str; 2] = ["x-ratelimit-", "anthropic-ratelimit-"];

/// The rate-limit header names, made once: `[limit, remaining, reset]` per family and unit.
static GENERIC: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit"),
    HeaderName::from_static("x-ratelimit-remaining"),
    HeaderName::from_static("x-ratelimit-reset"),
];
static OPENAI: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("x-ratelimit-limit-requests"),
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ],
    [
        HeaderName::from_static("x-ratelimit-limit-tokens"),
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ],
];
static ANTHROPIC: [[HeaderName; 3]; 2] = [
    [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ],
    [
        HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ],
];

/// Sets the rate-limit headers of SPEC §2 for the levels of `granted`, replacing any of the
/// same family from the upstream. `now_ms` dates the reset times.
pub fn rate_limits(headers: &mut HeaderMap, granted: &Granted, style: ErrorStyle, now_ms: i64) {
    if headers
        .keys()
        .any(|k| OWNED_PREFIXES.iter().any(|p| k.as_str().starts_with(p)))
    {
        let theirs: Vec<HeaderName> = headers
            .keys()
            .filter(|k| OWNED_PREFIXES.iter().any(|p| k.as_str().starts_with(p)))
            .cloned()
            .collect();
        for name in theirs {
            headers.remove(name);
        }
    }
    let mut values = Values::new();
    if let Some(level) = granted.requests {
        let [limit, remaining, reset] = &GENERIC;
        values.number(limit, level.limit);
        values.number(remaining, level.remaining);
        values.number(reset, reset_unix(now_ms, level.reset));
    }
    for (unit, level) in [granted.requests, granted.tokens].into_iter().enumerate() {
        let Some(level) = level else { continue };
        let names = match style {
            ErrorStyle::OpenAi => &OPENAI[unit],
            ErrorStyle::Anthropic => &ANTHROPIC[unit],
        };
        values.number(&names[0], level.limit);
        values.number(&names[1], level.remaining);
        match style {
            ErrorStyle::OpenAi => write_go_duration(&mut values.buf, level.reset),
            ErrorStyle::Anthropic => {
                let ms = i64::try_from(level.reset.as_millis()).unwrap_or(i64::MAX);
                values
                    .buf
                    .extend_from_slice(rfc3339(now_ms.saturating_add(ms)).as_bytes());
            }
        }
        values.end(&names[2]);
    }
    values.set(headers);
}

/// The most rate-limit headers one response gets: the generic trio and two dialect trios.
const MAX_VALUES: usize = 9;

/// Rate-limit header values, written one after another into one buffer and handed out as
/// slices of it: one allocation for all of them, where a `HeaderValue` made from a number or a
/// string allocates once or twice each.
struct Values<'n> {
    buf: BytesMut,
    /// Each value's name and where it ends in `buf` (it starts where the one before ends).
    set: [Option<(&'n HeaderName, usize)>; MAX_VALUES],
    len: usize,
}

impl<'n> Values<'n> {
    fn new() -> Values<'n> {
        Values {
            buf: BytesMut::with_capacity(128),
            set: [None; MAX_VALUES],
            len: 0,
        }
    }

    fn number(&mut self, name: &'n HeaderName, n: u64) {
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.end(name);
    }

    /// What was written since the last value is `name`'s value.
    fn end(&mut self, name: &'n HeaderName) {
        debug_assert!(
            self.len < MAX_VALUES,
            "at most {MAX_VALUES} rate-limit headers"
        );
        if let Some(slot) = self.set.get_mut(self.len) {
            *slot = Some((name, self.buf.len()));
            self.len += 1;
        }
    }

    fn set(self, headers: &mut HeaderMap) {
        headers.reserve(self.len);
        let all = self.buf.freeze();
        let mut start = 0;
        for (name, end) in self.set.into_iter().flatten() {
            // Digits, letters and the punctuation of a timestamp: always a valid value.
            if let Ok(v) = HeaderValue::from_maybe_shared(all.slice(start..end)) {
                headers.insert(name, v);
            }
            start = end;
        }
    }
}

/// `retry-after` in whole seconds, rounded up, at least 1.
pub fn retry_after(headers: &mut HeaderMap, wait: Duration) {
    let secs = wait.as_millis().div_ceil(1000).max(1);
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
    );
}

/// The Unix second at which a bucket with `reset` to go is full again (rounded up).
fn reset_unix(now_ms: i64, reset: Duration) -> u64 {
    let at = now_ms.max(0) as u128 + reset.as_millis();
    u64::try_from(at.div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Writes a duration as OpenAI does: `20ms`, `1s`, `6m0s`, `1h2m3s` (Go's notation, with
/// seconds rounded up so a client that waits this long finds the unit back).
fn write_go_duration(out: &mut BytesMut, d: Duration) {
    let mut digits = itoa::Buffer::new();
    if d < Duration::from_secs(1) {
        let ms = d.as_millis().max(if d.is_zero() { 0 } else { 1 });
        out.extend_from_slice(digits.format(ms).as_bytes());
        out.extend_from_slice(b"ms");
        return;
    }
    let total = d.as_millis().div_ceil(1000);
    let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
    if h > 0 {
        out.extend_from_slice(digits.format(h).as_bytes());
        out.extend_from_slice(b"h");
    }
    if h > 0 || m > 0 {
        out.extend_from_slice(digits.format(m).as_bytes());
        out.extend_from_slice(b"m");
    }
    out.extend_from_slice(digits.format(s).as_bytes());
    out.extend_from_slice(b"s");
}

/// Adds `access-control-allow-origin: <origin>` and `vary: origin` to an allowed
/// cross-origin response.
pub fn allow_origin(headers: &mut HeaderMap, origin: &HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// The answer headers of a CORS preflight: the origin echoed, the requested method, and the
/// credential and content headers plus whatever the browser asked for.
pub fn preflight(request: &HeaderMap, out: &mut HeaderMap) {
    if let Some(origin) = request.get(header::ORIGIN) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if let Some(method) = request.get(header::ACCESS_CONTROL_REQUEST_METHOD) {
        out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, method.clone());
    }
    let mut allowed = String::from("authorization, x-api-key, content-type");
    if let Some(asked) = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        for name in asked.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let lower = name.to_ascii_lowercase();
            if !["authorization", "x-api-key", "content-type"].contains(&lower.as_str()) {
                allowed.push_str(", ");
                allowed.push_str(&lower);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&allowed) {
        out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    // Browsers cache the preflight for 10 minutes instead of asking before every request.
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    out.insert(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Level;

    fn level(limit: u64, remaining: u64, reset_ms: u64) -> Level {
        Level {
            limit,
            remaining,
            reset: Duration::from_millis(reset_ms),
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // One hop-by-hop header among others, a non-standard name: found and removed alone.
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        assert!(!h.contains_key("proxy-connection"));

        // None at all: nothing changes.
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn the_client_credential_never_goes_upstream() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk-kg-secret"),
        );
        h.insert("x-api-key", HeaderValue::from_static("sk-kg-secret"));
        h.insert(header::HOST, HeaderValue::from_static("gateway"));
        h.insert("x_forwarded_for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-request-id", HeaderValue::from_static("client-chosen"));
        for_upstream(&mut h, "req_abc");
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-request-id"], "req_abc");
    }

    #[test]
    fn openai_routes_get_generic_and_openai_headers_replacing_the_upstreams() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-limit-requests",
            HeaderValue::from_static("99999"),
        );
        let granted = Granted {
            requests: Some(level(60, 59, 1000)),
            tokens: Some(level(1000, 500, 360_000)),
            reserved_tokens: 0,
        };
        rate_limits(&mut h, &granted, ErrorStyle::OpenAi, 1_700_000_000_000);
        assert_eq!(h["x-ratelimit-limit"], "60");
        assert_eq!(h["x-ratelimit-remaining"], "59");
        assert_eq!(h["x-ratelimit-reset"], "1700000001");
        assert_eq!(h["x-ratelimit-limit-requests"], "60");
        assert_eq!(h["x-ratelimit-reset-requests"], "1s");
        assert_eq!(h["x-ratelimit-remaining-tokens"], "500");
        assert_eq!(h["x-ratelimit-reset-tokens"], "6m0s");
        assert!(!h.contains_key("anthropic-ratelimit-requests-limit"));
    }

    #[test]
    fn anthropic_routes_get_rfc3339_resets() {
        let mut h = HeaderMap::new();
        h.insert(
            "anthropic-ratelimit-requests-limit",
            HeaderValue::from_static("4000"),
        );
        let granted = Granted {
            requests: Some(level(60, 10, 30_000)),
            tokens: None,
            reserved_tokens: 0,
        };
        rate_limits(&mut h, &granted, ErrorStyle::Anthropic, 1_700_000_000_000);
        assert_eq!(h["anthropic-ratelimit-requests-limit"], "60");
        assert_eq!(h["anthropic-ratelimit-requests-remaining"], "10");
        assert_eq!(
            h["anthropic-ratelimit-requests-reset"],
            "2023-11-14T22:13:50Z"
        );
        assert!(!h.contains_key("anthropic-ratelimit-tokens-limit"));
        assert!(!h.contains_key("x-ratelimit-limit-requests"));
    }

    fn go_duration(d: Duration) -> String {
        let mut out = BytesMut::new();
        write_go_duration(&mut out, d);
        String::from_utf8(out.to_vec()).expect("ASCII")
    }

    #[test]
    fn durations_are_written_the_go_way() {
        assert_eq!(go_duration(Duration::ZERO), "0ms");
        assert_eq!(go_duration(Duration::from_micros(300)), "1ms");
        assert_eq!(go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(go_duration(Duration::from_millis(1001)), "2s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let mut h = HeaderMap::new();
        retry_after(&mut h, Duration::from_millis(1200));
        assert_eq!(h["retry-after"], "2");
        retry_after(&mut h, Duration::ZERO);
        assert_eq!(h["retry-after"], "1");
    }

    #[test]
    fn a_preflight_echoes_origin_method_and_requested_headers() {
        let mut req = HeaderMap::new();
        req.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        req.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("Content-Type, X-Stainless-Lang"),
        );
        let mut out = HeaderMap::new();
        preflight(&req, &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], "POST");
        assert_eq!(
            out[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization, x-api-key, content-type, x-stainless-lang"
        );
    }
}
