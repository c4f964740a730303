//! The policy checks of SPEC §2, in its order, as plain functions of the request's facts.
//!
//! The data plane calls these one by one as the facts become known (the body's `model` only
//! after the body is read); `explain` calls the very same functions with the facts it was
//! given. Each refusal is a [`Denied`]: the [`Code`] the client sees and a precise `reason`
//! for operators (logs and `explain`) that may name the rule; clients get only the code's
//! generic message, so a probe learns nothing about a key's allow-lists.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, header};
use ipnet::IpNet;

use super::error::Code;
use super::route;
use crate::config::{Route, Snapshot};
use crate::keyring::{KeyPolicy, KeyState, Keyring};
use crate::keys;
use crate::limits::Layer;
use crate::policy::{glob_match, host_of};
use crate::usage::quota::QuotaLevel;

/// A refusal: what the client is told, and why, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub code: Code,
    pub reason: String,
}

impl Denied {
    pub fn new(code: Code, reason: impl Into<String>) -> Denied {
        Denied {
            code,
            reason: reason.into(),
        }
    }
}

/// The key presented by a request: `Authorization: Bearer` or `x-api-key`, equal if both.
pub fn credential(headers: &HeaderMap) -> Result<&str, Denied> {
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .map_err(|_| invalid("the Authorization header is not text"))?;
            let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(invalid(
                    "the Authorization header does not use the Bearer scheme",
                ));
            }
            Some(token.trim())
        }
    };
    let api_key = match headers.get(super::headers::X_API_KEY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| invalid("the x-api-key header is not text"))?
                .trim(),
        ),
    };
    match (bearer, api_key) {
        (None, None) => Err(Denied::new(
            Code::MissingApiKey,
            "no Authorization or x-api-key header",
        )),
        (Some(a), Some(b)) if a != b => {
            Err(invalid("Authorization and x-api-key carry different keys"))
        }
        (Some(k), _) | (None, Some(k)) => Ok(k),
    }
}

fn invalid(reason: &str) -> Denied {
    Denied::new(Code::InvalidApiKey, reason)
}

/// Finds the key a presented secret belongs to. Malformed, unknown, revoked and rotated-out
/// keys all get the same answer.
pub fn authenticate(
    keyring: &Keyring,
    presented: &str,
    now_ms: i64,
) -> Result<Arc<KeyState>, Denied> {
    let parsed =
        keys::parse(presented).map_err(|e| invalid(&format!("the key is malformed: {e}")))?;
    keyring
        .find(&parsed.hash(), now_ms)
        .ok_or_else(|| invalid("no active key has this secret (unknown, revoked or rotated out)"))
}

/// The key's own state: expiry, then the active flag.
pub fn check_status(policy: &KeyPolicy, now_ms: i64) -> Result<(), Denied> {
    if let Some(at) = policy.expires_at_ms()
        && at <= now_ms
    {
        return Err(Denied::new(
            Code::ExpiredApiKey,
            format!("the key expired at {}", crate::clock::rfc3339(at)),
        ));
    }
    if !policy.is_active {
        return Err(Denied::new(Code::ApiKeyDisabled, "the key is disabled"));
    }
    Ok(())
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the right-most
/// `x-forwarded-for` address that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // A garbled entry cannot be believed; stop at the last address that could.
            Err(_) => break,
        }
    }
    client
}

pub fn check_ip(policy: &KeyPolicy, ip: IpAddr) -> Result<(), Denied> {
    let Some(r) = policy.restrictions.as_deref().filter(|r| !r.ips.is_empty()) else {
        return Ok(());
    };
    if r.ips.iter().any(|net| net.contains(&ip)) {
        return Ok(());
    }
    let allowed: Vec<String> = r.ips.iter().map(ToString::to_string).collect();
    Err(Denied::new(
        Code::IpNotAllowed,
        format!(
            "client IP {ip} is not in allowed_ips ({})",
            allowed.join(", ")
        ),
    ))
}

/// The `Origin` header, or without it the `Referer`, as sent.
pub fn origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
}

/// A request with neither `Origin` nor `Referer` passes; one with a host outside
/// `allowed_origins` does not.
pub fn check_origin(policy: &KeyPolicy, origin: Option<&str>) -> Result<(), Denied> {
    let (Some(r), Some(origin)) = (
        policy
            .restrictions
            .as_deref()
            .filter(|r| !r.origins.is_empty()),
        origin,
    ) else {
        return Ok(());
    };
    let host = host_of(origin).unwrap_or_default();
    if r.origins.iter().any(|p| p.matches(&host)) {
        return Ok(());
    }
    let allowed: Vec<String> = r.origins.iter().map(ToString::to_string).collect();
    Err(Denied::new(
        Code::OriginNotAllowed,
        format!(
            "origin {origin} does not match any of {}",
            allowed.join(", ")
        ),
    ))
}

/// The route for this request; `model` is the body's, when it was read.
pub fn select_route<'a>(
    config: &'a Snapshot,
    order: &[usize],
    method: &Method,
    path: &str,
    model: Option<&str>,
) -> Result<(usize, &'a Route), Denied> {
    route::select(&config.routes, order, method, path, model)
        .map(|i| (i, &config.routes[i]))
        .ok_or_else(|| {
            Denied::new(
                Code::RouteNotFound,
                format!("no route matches {method} {path}"),
            )
        })
}

pub fn check_scope(policy: &KeyPolicy, route: &Route) -> Result<(), Denied> {
    if policy.scopes.contains(route.scope) {
        return Ok(());
    }
    let has: Vec<&str> = policy.scopes.iter().map(|s| s.as_str()).collect();
    Err(Denied::new(
        Code::InsufficientScope,
        format!(
            "route {} needs scope {}; the key has {}",
            route.path,
            route.scope,
            if has.is_empty() {
                "none".to_owned()
            } else {
                has.join(", ")
            }
        ),
    ))
}

/// The body's `model` against the key's `allowed_models`. No model passes here: requests
/// without a body (GET /v1/models) are fine, and the proxy refuses a JSON body without a
/// readable model for such a key before routing.
pub fn check_model(policy: &KeyPolicy, model: Option<&str>) -> Result<(), Denied> {
    let Some(r) = policy
        .restrictions
        .as_deref()
        .filter(|r| !r.models.is_empty())
    else {
        return Ok(());
    };
    let Some(model) = model else {
        return Ok(());
    };
    if r.models.iter().any(|g| glob_match(g, model)) {
        return Ok(());
    }
    Err(Denied::new(
        Code::ModelNotAllowed,
        format!(
            "model {model} does not match any of {}",
            r.models.join(", ")
        ),
    ))
}

/// The quotas that apply (the key's own, then its account's), with their use now.
pub fn quotas(key: &KeyState, policy: &KeyPolicy, now_ms: i64) -> Vec<(Layer, QuotaLevel)> {
    let account_limits = policy.account.limits();
    [
        (Layer::Key, policy.limits().quota, key.quota.load_full()),
        (
            Layer::Account,
            account_limits.quota,
            policy.account.quota.load_full(),
        ),
    ]
    .into_iter()
    .filter_map(|(layer, quota, counters)| Some((layer, counters?.level(quota?, now_ms))))
    .collect()
}

/// The first used-up quota, as a refusal and the time until its period ends (`None` for a
/// `total` quota, which never resets).
pub fn check_quotas(
    levels: &[(Layer, QuotaLevel)],
    now_ms: i64,
) -> Result<(), (Denied, Option<Duration>)> {
    let Some((layer, level)) = levels.iter().find(|(_, l)| l.exhausted()) else {
        return Ok(());
    };
    let q = level.quota;
    let what = match (q.requests, q.tokens) {
        (Some(n), _) if level.used_requests >= n => {
            format!("{} of {n} requests", level.used_requests)
        }
        (_, Some(n)) => format!("{} of {n} tokens", level.used_tokens),
        _ => "the quota".to_owned(),
    };
    let reason = format!(
        "the {layer:?} quota for this {} is used up ({what})",
        q.period.as_str()
    )
    .to_lowercase();
    let wait = level
        .resets_at_ms
        .map(|at| Duration::from_millis(u64::try_from(at - now_ms).unwrap_or(0)));
    Err((Denied::new(Code::QuotaExceeded, reason), wait))
}

/// Whether the key restricts models (so the body's model must be read).
pub fn restricts_models(policy: &KeyPolicy) -> bool {
    policy
        .restrictions
        .as_deref()
        .is_some_and(|r| !r.models.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_key_comes_from_bearer_or_x_api_key() {
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  abc ")])).unwrap(),
            "abc"
        );
        assert_eq!(
            credential(&headers(&[("x-api-key", "abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            credential(&headers(&[
                ("x-api-key", "abc"),
                ("authorization", "Bearer abc")
            ]))
            .unwrap(),
            "abc"
        );
    }

    #[test]
    fn missing_mismatched_and_foreign_credentials_are_refused() {
        assert_eq!(
            credential(&headers(&[])).unwrap_err().code,
            Code::MissingApiKey
        );
        let both = headers(&[("x-api-key", "a"), ("authorization", "Bearer b")]);
        assert_eq!(credential(&both).unwrap_err().code, Code::InvalidApiKey);
        let basic = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(credential(&basic).unwrap_err().code, Code::InvalidApiKey);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.5")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let outsider: IpAddr = "8.8.8.8".parse().unwrap();
        assert_eq!(client_ip(outsider, &h, &trusted), outsider);
        assert_eq!(client_ip(peer, &headers(&[]), &trusted), peer);
        let garbled = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(client_ip(peer, &garbled, &trusted), peer);
        let split = headers(&[
            ("x-forwarded-for", "7.7.7.7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(
            client_ip(peer, &split, &trusted),
            "7.7.7.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn origin_falls_back_to_referer() {
        assert_eq!(
            origin(&headers(&[("referer", "https://a.com/page")])),
            Some("https://a.com/page")
        );
        assert_eq!(
            origin(&headers(&[
                ("origin", "https://b.com"),
                ("referer", "https://a.com/")
            ])),
            Some("https://b.com")
        );
        assert_eq!(origin(&headers(&[])), None);
    }
}
