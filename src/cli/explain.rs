//! `keygate explain`: what the data plane would decide for a request with a given key,
//! without making the request or counting it.
//!
//! Sends `POST /api/explain` with `{"key_id","method","path","model","origin","ip"}` and prints
//! the decision on one line — `allowed: 200 — route /v1/ → upstream openai` or
//! `denied: 403 origin_not_allowed — <the server's reason>` — followed by any other fields of the
//! answer (remaining buckets, quotas) as indented lines. The exit code is 1 when denied, so a
//! script can test a policy with `if keygate explain …`.

use std::net::IpAddr;

use clap::Args;
use serde_json::{Value, json};

use super::Done;
use super::client::Client;
use super::error::CliError;
use super::output::{self, clean, print_out};

/// Fields of the answer that the first line already shows.
const HEADLINE_FIELDS: [&str; 6] = ["allowed", "status", "code", "reason", "route", "upstream"];

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The key's id (key_…)
    pub id: String,
    /// Request path, e.g. /v1/chat/completions
    #[arg(long, value_parser = request_path)]
    pub path: String,
    /// Request method
    #[arg(long, default_value = "POST", value_parser = method)]
    pub method: String,
    /// The body's model
    #[arg(long)]
    pub model: Option<String>,
    /// The Origin header, e.g. https://app.example.com
    #[arg(long, value_name = "ORIGIN")]
    pub origin: Option<String>,
    /// The client IP address
    #[arg(long, value_name = "ADDR")]
    pub ip: Option<IpAddr>,
    /// Print the server's JSON (the exit code is still 1 when denied)
    #[arg(long)]
    pub json: bool,
}

fn request_path(input: &str) -> Result<String, String> {
    if input.starts_with('/') && !input.chars().any(|c| c.is_control() || c == ' ') {
        Ok(input.to_owned())
    } else {
        Err("a request path starts with / and has no spaces, e.g. /v1/chat/completions".into())
    }
}

fn method(input: &str) -> Result<String, String> {
    http::Method::from_bytes(input.to_ascii_uppercase().as_bytes())
        .map(|m| m.to_string())
        .map_err(|_| format!("{input:?} is not an HTTP method"))
}

/// The request body.
pub fn body(args: &ExplainArgs) -> Value {
    json!({
        "key_id": args.id,
        "method": args.method,
        "path": args.path,
        "model": args.model,
        "origin": args.origin,
        "ip": args.ip.map(|ip| ip.to_string()),
    })
}

pub async fn run(client: &Client, args: ExplainArgs) -> Result<Done, CliError> {
    let answer = client.post("/api/explain", &body(&args)).await?;
    let (allowed, text) = describe(&answer)?;
    if args.json {
        print_out(&output::pretty(&answer))?;
    } else {
        print_out(&text)?;
    }
    Ok(if allowed { Done::Ok } else { Done::Failed })
}

/// The decision and its human rendering.
pub fn describe(answer: &Value) -> Result<(bool, String), CliError> {
    let allowed = answer
        .get("allowed")
        .and_then(Value::as_bool)
        .ok_or_else(|| CliError::Protocol("the explain answer has no \"allowed\"".into()))?;
    let status = answer
        .get("status")
        .and_then(Value::as_u64)
        .map_or_else(String::new, |s| format!("{s} "));
    let code = answer.get("code").and_then(Value::as_str);
    let reason = answer.get("reason").and_then(Value::as_str).unwrap_or("");
    let route = answer.get("route").and_then(|r| name(r, "path"));
    let upstream = answer.get("upstream").and_then(|u| name(u, "name"));
    let mut text = if allowed {
        match (route, upstream) {
            (Some(route), Some(upstream)) => {
                format!("allowed: {status}— route {route} → upstream {upstream}")
            }
            _ => format!("allowed: {status}— {reason}"),
        }
    } else {
        let code = code.map_or_else(String::new, |c| format!("{c} "));
        format!("denied: {status}{code}— {reason}")
    };
    text = clean(text.trim_end());
    text.push('\n');
    if let Some(object) = answer.as_object() {
        for (key, value) in object {
            if HEADLINE_FIELDS.contains(&key.as_str()) || value.is_null() {
                continue;
            }
            text.push_str(&format!("  {}: {}\n", clean(key), clean(&inline(value))));
        }
    }
    Ok((allowed, text))
}

/// A route or upstream: a string, or an object's `field`.
fn name(value: &Value, field: &str) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get(field).and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// A value on one line: scalars as they are, an object of scalars as `k=v k=v`, anything
/// deeper as compact JSON.
fn inline(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.values().all(|v| !v.is_object() && !v.is_array()) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowed_request_names_route_and_upstream() {
        let answer = json!({"allowed": true, "status": 200, "code": null, "reason": "ok",
            "route": {"path": "/v1/", "scope": "chat"}, "upstream": "openai",
            "rate_limit": {"limit": 60, "remaining": 59}, "quota": null});
        let (allowed, text) = describe(&answer).unwrap();
        assert!(allowed);
        assert_eq!(
            text,
            "allowed: 200 — route /v1/ → upstream openai\n  rate_limit: limit=60 remaining=59\n"
        );
    }

    #[test]
    fn a_denied_request_shows_status_code_and_reason() {
        let answer = json!({"allowed": false, "status": 403, "code": "origin_not_allowed",
            "reason": "origin https://evil.com does not match any of *.example.com",
            "route": null, "upstream": null});
        let (allowed, text) = describe(&answer).unwrap();
        assert!(!allowed);
        assert_eq!(
            text,
            "denied: 403 origin_not_allowed — origin https://evil.com does not match any of *.example.com\n"
        );
    }

    #[test]
    fn an_answer_without_a_decision_is_an_error() {
        assert!(matches!(
            describe(&json!({"status": 200})),
            Err(CliError::Protocol(_))
        ));
    }

    #[test]
    fn the_body_has_every_field() {
        let args = ExplainArgs {
            id: "key_0000000100000001".into(),
            path: "/v1/chat/completions".into(),
            method: method("post").unwrap(),
            model: Some("gpt-4o".into()),
            origin: None,
            ip: Some("10.0.0.1".parse().unwrap()),
            json: false,
        };
        assert_eq!(
            body(&args),
            json!({"key_id": "key_0000000100000001", "method": "POST",
                   "path": "/v1/chat/completions", "model": "gpt-4o", "origin": null, "ip": "10.0.0.1"})
        );
        assert!(request_path("v1/x").is_err());
        assert!(method("GE T").is_err());
    }
}
