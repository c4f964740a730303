//! `POST /api/explain`: what the data plane would decide for a request with a given key, and
//! why — without making the request or counting anything.
//!
//! It runs the data plane's own pipeline (`proxy::pipeline`): the same stages, in the same
//! order, with the limits only peeked at. The answer names the status, the code and the rule
//! that decided, and shows the buckets and quotas as they stand.

use std::net::IpAddr;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::input::Fields;
use super::{AdminResponse, ApiError, Ctx, json};
use crate::clock::rfc3339;
use crate::config::{ErrorStyle, Route};
use crate::limits::{Granted, Layer, Level};
use crate::proxy::decide::Denied;
use crate::proxy::error::Code;
use crate::proxy::pipeline::{self, Mode};
use crate::store::KeyRecord;
use crate::usage::quota::QuotaLevel;

pub async fn explain(ctx: &Ctx, body: &[u8]) -> Result<AdminResponse, ApiError> {
    let mut f = Fields::parse(body)?;
    let key_id = f
        .take::<String>("key_id")?
        .ok_or_else(|| ApiError::invalid("key_id", "key_id is required"))?;
    let method = match f.take::<String>("method")? {
        None => Method::POST,
        Some(m) => Method::from_bytes(m.to_ascii_uppercase().as_bytes())
            .map_err(|_| ApiError::invalid("method", format!("{m:?} is not an HTTP method")))?,
    };
    let path = f
        .take::<String>("path")?
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| ApiError::invalid("path", "path is required and starts with /"))?;
    let model = f.take::<String>("model")?;
    let assistant_id = f.take::<String>("assistant_id")?;
    let origin = f.take::<String>("origin")?;
    let ip = f
        .take::<String>("ip")?
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|_| ApiError::invalid("ip", format!("{ip:?} is not an IP address")))
        })
        .transpose()?;
    f.finish()?;

    let owned = key_id.clone();
    let record: Option<KeyRecord> = ctx
        .app
        .blocking(move |app| app.store.read(|tx| tx.key(&owned)))
        .await
        .map_err(ApiError::from)?;
    let app = &ctx.app;
    let live = app.live();
    let config = &live.config;
    let now_ms = app.clock.now_ms();
    let style = crate::proxy::route::style_for(&config.routes, &live.route_order, &method, &path);
    let key = record
        .as_ref()
        .filter(|r| r.revoked_at_ms.is_none())
        .and_then(|r| app.keyring.find_key(r));
    let Some(key) = key else {
        let reason = match record {
            None => format!("no key has id {key_id}"),
            Some(_) => format!("key {key_id} is revoked"),
        };
        let denied = Denied::new(Code::InvalidApiKey, reason);
        return Ok(answer(denied_json(&denied, style), None, None));
    };
    let policy = key.policy();
    if let Err(denied) = pipeline::before_body(&policy, now_ms, ip, origin.as_deref()) {
        return Ok(answer(denied_json(&denied, style), None, None));
    }
    let routed = match pipeline::route_request(
        config,
        &live.route_order,
        &policy,
        &method,
        &path,
        model.as_deref(),
        assistant_id.as_deref(),
    ) {
        Ok(r) => r,
        Err(denied) => return Ok(answer(denied_json(&denied, style), None, None)),
    };
    let route = Some(route_json(routed.route));
    let upstream = Some(Value::String(routed.upstream.to_owned()));
    let mut extra = Map::new();
    if let Some(model) = routed.model {
        extra.insert("model".into(), Value::String(model.to_owned()));
    }
    let reserve = config.limits.reserve_tokens;
    let mono_ns = app.clock.mono_ns();
    let (mut decision, granted, quotas) =
        match pipeline::limit(config, &key, &policy, Mode::Peek, reserve, mono_ns, now_ms) {
            Ok(l) => {
                let reason = format!(
                    "route {} (scope {}) → upstream {}",
                    routed.route.path, routed.route.scope, routed.upstream
                );
                let d = json!({"allowed": true, "status": 200, "code": null, "reason": reason});
                (d, l.granted, l.quotas)
            }
            Err(r) => (
                denied_json(&r.denied, routed.route.errors),
                r.granted,
                r.quotas,
            ),
        };
    limits_json(&mut extra, &granted, &quotas);
    if let Some(d) = decision.as_object_mut() {
        d.extend(extra);
    }
    Ok(answer(decision, route, upstream))
}

fn denied_json(denied: &Denied, style: ErrorStyle) -> Value {
    let code = denied.code;
    let kind = match style {
        ErrorStyle::OpenAi => code.openai_type(),
        ErrorStyle::Anthropic => code.anthropic_type(),
    };
    json!({"allowed": false, "status": code.status().as_u16(), "code": code.as_str(),
        "type": kind, "reason": denied.reason})
}

fn route_json(route: &Route) -> Value {
    json!({
        "path": route.path,
        "methods": route.methods.as_ref().map(|m| m.iter().map(|m| m.to_string()).collect::<Vec<_>>()),
        "scope": route.scope,
        "errors": match route.errors { ErrorStyle::OpenAi => "openai", ErrorStyle::Anthropic => "anthropic" },
        "models": route.models,
        "upstream": route.upstream,
    })
}

fn level_json(level: Level) -> Value {
    json!({"limit": level.limit, "remaining": level.remaining,
        "full_in": crate::config::format_duration(level.reset)})
}

fn limits_json(out: &mut Map<String, Value>, granted: &Granted, quotas: &[(Layer, QuotaLevel)]) {
    if let Some(l) = granted.requests {
        out.insert("rate_limit_requests".into(), level_json(l));
    }
    if let Some(l) = granted.tokens {
        out.insert("rate_limit_tokens".into(), level_json(l));
    }
    for (layer, q) in quotas {
        let name = match layer {
            Layer::Key => "quota_key",
            Layer::Account => "quota_account",
        };
        out.insert(
            name.into(),
            json!({
                "period": q.quota.period.as_str(),
                "requests_used": q.used_requests,
                "requests_limit": q.quota.requests,
                "tokens_used": q.used_tokens,
                "tokens_limit": q.quota.tokens,
                "resets_at": q.resets_at_ms.map(rfc3339),
            }),
        );
    }
}

/// The answer: the decision with the route and upstream it reached (`null` before routing).
fn answer(mut decision: Value, route: Option<Value>, upstream: Option<Value>) -> AdminResponse {
    if let Some(d) = decision.as_object_mut() {
        d.insert("route".into(), route.unwrap_or(Value::Null));
        d.insert("upstream".into(), upstream.unwrap_or(Value::Null));
    }
    json(StatusCode::OK, &decision)
}
