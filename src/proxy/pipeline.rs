//! The decision pipeline of SPEC §2 in three stages, shared by the data plane and `explain`:
//!
//! 1. [`before_body`]: the key's own state, then the client IP, then the origin — everything
//!    that can refuse a request before keygate reads a byte of its body.
//! 2. [`route_request`]: the preset named by `assistant_id` (which sets the model and the
//!    upstream), the route, its scope, the key's allowed models.
//! 3. [`limit`]: the request and token buckets, then the quotas. In [`Mode::Take`] (the data
//!    plane) units are taken; in [`Mode::Peek`] (`explain`) the same buckets are only read.
//!
//! The data plane reads the body between stages 1 and 2 when a decision needs it; `explain`
//! is given the model instead. Neither has a second copy of the rules or their order.

use std::net::IpAddr;
use std::time::Duration;

use http::Method;

use super::decide::{self, Denied};
use super::error::Code;
use crate::config::{Preset, Route, Snapshot};
use crate::keyring::{KeyPolicy, KeyState};
use crate::limits::{self, Applicable, Granted, Layer};
use crate::usage::quota::QuotaLevel;

/// Stage 1. `ip` is `None` only for an `explain` that names no IP (the check is then skipped).
pub fn before_body(
    policy: &KeyPolicy,
    now_ms: i64,
    ip: Option<IpAddr>,
    origin: Option<&str>,
) -> Result<(), Denied> {
    decide::check_status(policy, now_ms)?;
    if let Some(ip) = ip {
        decide::check_ip(policy, ip)?;
    }
    decide::check_origin(policy, origin)
}

/// What stage 2 decided.
#[derive(Debug, Clone)]
pub struct Routed<'a, 'm> {
    pub route_index: usize,
    pub route: &'a Route,
    /// The model the request will use: the body's, or the preset's.
    pub model: Option<&'m str>,
    pub preset: Option<&'a Preset>,
    /// Where the request goes: the preset's upstream, else the route's.
    pub upstream: &'a str,
}

/// Stage 2.
pub fn route_request<'a: 'm, 'm>(
    config: &'a Snapshot,
    order: &[usize],
    policy: &KeyPolicy,
    method: &Method,
    path: &str,
    model: Option<&'m str>,
    assistant_id: Option<&str>,
) -> Result<Routed<'a, 'm>, Denied> {
    let preset = match assistant_id {
        None => None,
        Some(id) => Some(config.presets.get(id).ok_or_else(|| {
            Denied::new(Code::AssistantNotFound, format!("no preset named {id:?}"))
        })?),
    };
    let model = preset.map(|p| p.model.as_str()).or(model);
    let (route_index, route) = decide::select_route(config, order, method, path, model)?;
    decide::check_scope(policy, route)?;
    decide::check_model(policy, model)?;
    Ok(Routed {
        route_index,
        route,
        model,
        preset,
        upstream: preset.map_or(route.upstream.as_str(), |p| p.upstream.as_str()),
    })
}

/// Take units (the data plane) or only look (`explain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Take,
    Peek,
}

/// What stage 3 found: the bucket levels to report and the quotas' use.
#[derive(Debug, Clone)]
pub struct Limited {
    pub applicable: Applicable,
    pub granted: Granted,
    pub quotas: Vec<(Layer, QuotaLevel)>,
}

/// A stage-3 refusal: the denial, the levels for the headers, and when to retry.
#[derive(Debug, Clone)]
pub struct LimitRefusal {
    pub denied: Denied,
    pub granted: Granted,
    pub retry_after: Option<Duration>,
    pub quotas: Vec<(Layer, QuotaLevel)>,
}

/// Stage 3: request and token buckets, then quotas. In `Take` mode a quota refusal gives the
/// bucket units back, and an admitted request counts against its quotas at once, so that
/// parallel requests cannot all pass a nearly used-up quota.
#[allow(clippy::too_many_arguments)]
pub fn limit(
    config: &Snapshot,
    key: &KeyState,
    policy: &KeyPolicy,
    mode: Mode,
    reserve: u64,
    mono_ns: u64,
    now_ms: i64,
) -> Result<Limited, Box<LimitRefusal>> {
    let applicable = Applicable::new(&config.limits, policy, &policy.account.limits());
    let quotas = decide::quotas(key, policy, now_ms);
    let rate = match mode {
        Mode::Take => limits::take(&applicable, key, &policy.account, mono_ns, reserve),
        Mode::Peek => limits::peek(&applicable, key, &policy.account, mono_ns),
    };
    let granted = rate.map_err(|refused| {
        let layer = match refused.layer {
            Layer::Key => "key",
            Layer::Account => "account",
        };
        let unit = match refused.unit {
            limits::Unit::Requests => "request",
            limits::Unit::Tokens => "token",
        };
        Box::new(LimitRefusal {
            denied: Denied::new(
                Code::RateLimitExceeded,
                format!(
                    "the {layer}'s {unit} bucket is empty; a unit is back in {}",
                    crate::config::format_duration(refused.retry_after)
                ),
            ),
            granted: refused.report,
            retry_after: Some(refused.retry_after),
            quotas: quotas.clone(),
        })
    })?;
    if let Err((denied, wait)) = decide::check_quotas(&quotas, now_ms) {
        if mode == Mode::Take {
            limits::refund(&applicable, key, &policy.account, mono_ns, &granted);
        }
        return Err(Box::new(LimitRefusal {
            denied,
            granted,
            retry_after: wait,
            quotas,
        }));
    }
    if mode == Mode::Take {
        for counters in [key.quota.load_full(), policy.account.quota.load_full()]
            .into_iter()
            .flatten()
        {
            counters.add_request(now_ms);
        }
    }
    Ok(Limited {
        applicable,
        granted,
        quotas,
    })
}

/// Gives back what [`limit`] took for a request refused after it (a body over the limit).
pub fn release(key: &KeyState, policy: &KeyPolicy, limited: &Limited, mono_ns: u64, now_ms: i64) {
    limits::refund(
        &limited.applicable,
        key,
        &policy.account,
        mono_ns,
        &limited.granted,
    );
    for counters in [key.quota.load_full(), policy.account.quota.load_full()]
        .into_iter()
        .flatten()
    {
        counters.undo_request(now_ms);
    }
}
