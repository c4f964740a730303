//! Flag values: the small notations of SPEC §4 turned into the admin API's JSON shapes.
//!
//! Each parser here is a clap `value_parser`, so a bad value (`--rate 60`) is a usage error
//! that exits 2 with a message naming the flag and showing the expected form. The parsers use
//! the same checks the server applies (durations, CIDRs, origin patterns), so what passes here
//! is what the server accepts. The flag groups shared by several commands (`LimitArgs`,
//! `ClearLimitArgs`) live here too, with the code that writes them into a request body.

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::admin::api::{QuotaJson, RateLimitJson, TokenLimitJson};
use crate::config::{format_duration, parse_duration};
use crate::policy::{self, OriginPattern, QuotaPeriod};
use crate::scope::Scope;

/// `--rate`, `--tokens` and `--quota`: the three limits keys and accounts share.
#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// Request rate limit as REQUESTS/INTERVAL, e.g. 60/60s
    #[arg(long, value_name = "N/INTERVAL", value_parser = rate)]
    pub rate: Option<RateLimitJson>,
    /// Token rate limit as TOKENS/INTERVAL, e.g. 100000/60s
    #[arg(long, value_name = "N/INTERVAL", value_parser = tokens)]
    pub tokens: Option<TokenLimitJson>,
    /// Quota per period, e.g. requests=1000,tokens=500000,period=month (period: day|month|total)
    #[arg(long, value_name = "requests=N,tokens=N,period=P", value_parser = quota)]
    pub quota: Option<QuotaJson>,
}

/// `--no-rate`, `--no-tokens`, `--no-quota`: clear a limit (PATCH with `null`).
#[derive(Debug, Clone, Default, Args)]
pub struct ClearLimitArgs {
    /// Remove the own rate limit (the config's default applies again)
    #[arg(long, conflicts_with = "rate")]
    pub no_rate: bool,
    /// Remove the own token limit
    #[arg(long, conflicts_with = "tokens")]
    pub no_tokens: bool,
    /// Remove the quota
    #[arg(long, conflicts_with = "quota")]
    pub no_quota: bool,
}

impl LimitArgs {
    /// Writes the limits that were given into `body`.
    pub fn write(&self, body: &mut Map<String, Value>) {
        put(body, "rate_limit", self.rate.as_ref());
        put(body, "token_limit", self.tokens.as_ref());
        put(body, "quota", self.quota.as_ref());
    }
}

impl ClearLimitArgs {
    /// Writes `null` for each limit to clear.
    pub fn write(&self, body: &mut Map<String, Value>) {
        for (clear, field) in [
            (self.no_rate, "rate_limit"),
            (self.no_tokens, "token_limit"),
            (self.no_quota, "quota"),
        ] {
            if clear {
                body.insert(field.to_owned(), Value::Null);
            }
        }
    }
}

/// Inserts `value` under `name` when it is given.
pub fn put<T: Serialize>(body: &mut Map<String, Value>, name: &str, value: Option<T>) {
    if let Some(value) = value {
        // Serializing plain data structs and strings into a Value cannot fail.
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        body.insert(name.to_owned(), value);
    }
}

/// `60/60s` → `{"requests":60,"interval":"60s"}`.
pub fn rate(input: &str) -> Result<RateLimitJson, String> {
    let (requests, interval) = per_interval(input, "REQUESTS/INTERVAL, e.g. 60/60s")?;
    Ok(RateLimitJson { requests, interval })
}

/// `100000/60s` → `{"tokens":100000,"interval":"60s"}`.
pub fn tokens(input: &str) -> Result<TokenLimitJson, String> {
    let (tokens, interval) = per_interval(input, "TOKENS/INTERVAL, e.g. 100000/60s")?;
    Ok(TokenLimitJson { tokens, interval })
}

/// `N/INTERVAL` with N ≥ 1 and a positive interval, which is returned normalised.
fn per_interval(input: &str, form: &str) -> Result<(u64, String), String> {
    let Some((count, interval)) = input.split_once('/') else {
        return Err(format!("expected {form}"));
    };
    let count = match count.trim().parse::<u64>() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(format!(
                "{count:?} is not a whole number of at least 1 (expected {form})"
            ));
        }
    };
    let interval = positive_duration(interval.trim())?;
    Ok((count, format_duration(interval)))
}

/// `requests=N,tokens=N,period=day|month|total`; the period and one of the counts are required.
pub fn quota(input: &str) -> Result<QuotaJson, String> {
    const FORM: &str = "requests=N,tokens=N,period=day|month|total";
    let mut requests = None;
    let mut tokens = None;
    let mut period = None;
    for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = part.split_once('=') else {
            return Err(format!("{part:?} is not NAME=VALUE (expected {FORM})"));
        };
        let count = || match value.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "{name}={value:?}: expected a whole number of at least 1"
            )),
        };
        let slot_taken = match name.trim() {
            "requests" => requests.replace(count()?).is_some(),
            "tokens" => tokens.replace(count()?).is_some(),
            "period" => period.replace(quota_period(value)?).is_some(),
            other => return Err(format!("unknown quota setting {other:?} (expected {FORM})")),
        };
        if slot_taken {
            return Err(format!("{name} is given twice"));
        }
    }
    let Some(period) = period else {
        return Err(format!("the period is required (expected {FORM})"));
    };
    if requests.is_none() && tokens.is_none() {
        return Err(format!("give requests, tokens or both (expected {FORM})"));
    }
    Ok(QuotaJson {
        requests,
        tokens,
        period,
    })
}

fn quota_period(value: &str) -> Result<QuotaPeriod, String> {
    match value.trim() {
        "day" => Ok(QuotaPeriod::Day),
        "month" => Ok(QuotaPeriod::Month),
        "total" => Ok(QuotaPeriod::Total),
        other => Err(format!("period {other:?} is not day, month or total")),
    }
}

/// `K=V` for `--meta`; the value may be empty and may contain `=`.
pub fn meta(input: &str) -> Result<(String, String), String> {
    match input.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE, e.g. team=search".to_owned()),
    }
}

/// Builds the metadata object from repeated `--meta K=V`; a key given twice is refused, since
/// one of the two values would be silently lost.
pub fn metadata(pairs: &[(String, String)]) -> Result<Map<String, Value>, String> {
    let mut object = Map::new();
    for (key, value) in pairs {
        if object
            .insert(key.clone(), Value::String(value.clone()))
            .is_some()
        {
            return Err(format!("--meta {key} is given twice"));
        }
    }
    Ok(object)
}

/// A duration such as `90d` or `24h`, which must be positive.
pub fn positive_duration(input: &str) -> Result<Duration, String> {
    let d = parse_duration(input)?;
    if d.is_zero() {
        return Err(format!("{input:?} must be longer than zero"));
    }
    Ok(d)
}

/// A duration flag sent to the server as text (`--expires-in`, `--grace`), normalised.
pub fn duration_text(input: &str) -> Result<String, String> {
    positive_duration(input).map(format_duration)
}

/// An RFC 3339 timestamp (`2026-01-31T00:00:00Z`), normalised to UTC.
pub fn timestamp(input: &str) -> Result<String, String> {
    input
        .parse::<jiff::Timestamp>()
        .map(|ts| ts.to_string())
        .map_err(|_| format!("{input:?} is not an RFC 3339 timestamp such as 2026-01-31T00:00:00Z"))
}

/// One scope of `--scopes chat,read`.
pub fn scope(input: &str) -> Result<Scope, String> {
    input.trim().parse::<Scope>().map_err(|e| e.to_string())
}

/// An `--origin` host pattern, as the server will store it.
pub fn origin(input: &str) -> Result<String, String> {
    OriginPattern::parse(input).map(|p| p.to_string())
}

/// An `--ip` address or CIDR, in CIDR notation.
pub fn ip(input: &str) -> Result<String, String> {
    policy::parse_net(input).map(|n| n.to_string())
}

/// A `--model` glob.
pub fn model(input: &str) -> Result<String, String> {
    policy::parse_glob(input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rates_are_count_slash_interval() {
        let r = rate("60/60s").unwrap();
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            json!({"requests": 60, "interval": "60s"})
        );
        assert_eq!(
            rate("10/1m").unwrap().interval,
            "60s",
            "intervals are normalised"
        );
        let t = tokens("100000/60s").unwrap();
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            json!({"tokens": 100000, "interval": "60s"})
        );
    }

    #[test]
    fn bad_rates_say_what_is_expected() {
        assert!(rate("60").unwrap_err().contains("60/60s"));
        assert!(rate("0/60s").unwrap_err().contains("at least 1"));
        assert!(rate("x/60s").is_err());
        assert!(rate("60/60").unwrap_err().contains("missing unit"));
        assert!(rate("60/0s").unwrap_err().contains("longer than zero"));
        assert!(tokens("-5/1s").is_err());
    }

    #[test]
    fn quotas_need_a_period_and_a_count() {
        let q = quota("requests=1000,tokens=5000,period=month").unwrap();
        assert_eq!(
            serde_json::to_value(q).unwrap(),
            json!({"requests": 1000, "tokens": 5000, "period": "month"})
        );
        let q = quota("period=day,tokens=7").unwrap();
        assert_eq!(
            (q.requests, q.tokens, q.period),
            (None, Some(7), QuotaPeriod::Day)
        );
        assert!(
            quota("requests=5")
                .unwrap_err()
                .contains("period is required")
        );
        assert!(
            quota("period=total")
                .unwrap_err()
                .contains("requests, tokens or both")
        );
        assert!(
            quota("requests=5,period=week")
                .unwrap_err()
                .contains("day, month or total")
        );
        assert!(
            quota("requests=5,period=day,bytes=1")
                .unwrap_err()
                .contains("bytes")
        );
        assert!(
            quota("requests=5,requests=6,period=day")
                .unwrap_err()
                .contains("twice")
        );
        assert!(quota("requests=0,period=day").is_err());
        assert!(quota("requests,period=day").is_err());
    }

    #[test]
    fn meta_pairs_build_an_object_of_strings() {
        assert_eq!(
            meta("team=search").unwrap(),
            ("team".into(), "search".into())
        );
        assert_eq!(meta("url=a=b").unwrap(), ("url".into(), "a=b".into()));
        assert_eq!(meta("empty=").unwrap(), ("empty".into(), String::new()));
        assert!(meta("=x").is_err());
        assert!(meta("novalue").is_err());
        let pairs = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "x".to_owned()),
        ];
        assert_eq!(
            Value::Object(metadata(&pairs).unwrap()),
            json!({"a": "1", "b": "x"})
        );
        let twice = vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        assert!(metadata(&twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn other_values_are_checked_as_the_server_checks_them() {
        assert_eq!(duration_text("90d").unwrap(), "90d");
        assert!(duration_text("0s").is_err());
        assert_eq!(
            timestamp("2026-01-31T01:00:00+01:00").unwrap(),
            "2026-01-31T00:00:00Z"
        );
        assert!(timestamp("tomorrow").is_err());
        assert_eq!(scope("chat").unwrap(), Scope::Chat);
        assert!(scope("root").is_err());
        assert_eq!(
            origin("https://App.example.com").unwrap(),
            "app.example.com"
        );
        assert_eq!(ip("10.0.0.1").unwrap(), "10.0.0.1/32");
        assert!(ip("10.0.0.300").is_err());
        assert!(model("").is_err());
    }

    #[test]
    fn limits_write_values_and_clears_write_null() {
        let mut body = Map::new();
        LimitArgs {
            rate: Some(rate("5/1s").unwrap()),
            ..Default::default()
        }
        .write(&mut body);
        ClearLimitArgs {
            no_quota: true,
            ..Default::default()
        }
        .write(&mut body);
        assert_eq!(
            Value::Object(body),
            json!({"rate_limit": {"requests": 5, "interval": "1s"}, "quota": null})
        );
    }
}
