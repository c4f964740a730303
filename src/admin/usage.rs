//! `GET /api/usage?key=ID|account=NAME&from=&to=&granularity=hour|day`: usage buckets, flushed
//! and not yet flushed, oldest first.
//!
//! `to` defaults to now; `from` to one day (hourly) or thirty days (daily) before `to`. Buckets
//! with nothing in them are left out.

use http::StatusCode;
use serde::Serialize;

use super::{AdminResponse, ApiError, Ctx, Query, json};
use crate::clock::{parse_rfc3339, rfc3339};
use crate::usage::{account_subject, flush, key_subject};

/// Longest range one call may cover: a year of hourly buckets is 8,760 rows.
const MAX_RANGE_SECS: i64 = 366 * 86_400;

#[derive(Serialize)]
struct Bucket {
    start: String,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    errors: u64,
    /// Beyond SPEC: requests in this bucket whose tokens were estimated.
    estimated: u64,
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidQuery {
        param: param.to_owned(),
        message: message.into(),
    }
}

fn time(query: &Query, param: &str) -> Result<Option<i64>, ApiError> {
    query
        .get(param)
        .map(|v| {
            parse_rfc3339(v)
                .map(|ms| ms.div_euclid(1000))
                .ok_or_else(|| invalid(param, format!("{param} must be an RFC 3339 timestamp")))
        })
        .transpose()
}

pub async fn get(ctx: &Ctx, query: &Query) -> Result<AdminResponse, ApiError> {
    let (subject, exists) = match (query.get("key"), query.get("account")) {
        (Some(id), None) => (key_subject(id), Exists::Key(id.to_owned())),
        (None, Some(name)) => (account_subject(name), Exists::Account(name.to_owned())),
        _ => return Err(invalid("key", "give exactly one of key or account")),
    };
    let daily = match query.get("granularity").unwrap_or("hour") {
        "hour" => false,
        "day" => true,
        _ => return Err(invalid("granularity", "granularity must be hour or day")),
    };
    let now = ctx.app.clock.now_ms().div_euclid(1000);
    let to = time(query, "to")?.unwrap_or(now + 1);
    let span = if daily { 30 * 86_400 } else { 86_400 };
    let from = time(query, "from")?.unwrap_or(to - span);
    if from >= to || to - from > MAX_RANGE_SECS {
        return Err(invalid(
            "from",
            "from must be before to, at most 366 days apart",
        ));
    }
    let rows = ctx
        .app
        .blocking(move |app| {
            let known = app.store.read(|tx| match &exists {
                Exists::Key(id) => tx.key(id).map(|k| k.is_some()),
                Exists::Account(name) => tx.account(name).map(|a| a.is_some()),
            })?;
            if !known {
                return Ok(None);
            }
            flush::buckets(&app.store, &app.meter, &subject, from, to, daily).map(Some)
        })
        .await
        .map_err(ApiError::from)?;
    let Some(rows) = rows else {
        return Err(match (query.get("key"), query.get("account")) {
            (Some(id), _) => ApiError::not_found("key", id),
            (_, name) => ApiError::not_found("account", name.unwrap_or_default()),
        });
    };
    let buckets: Vec<Bucket> = rows
        .into_iter()
        .map(|(start, c)| Bucket {
            start: rfc3339(start * 1000),
            requests: c.requests,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            errors: c.errors,
            estimated: c.estimated,
        })
        .collect();
    Ok(json(StatusCode::OK, &buckets))
}

enum Exists {
    Key(String),
    Account(String),
}
