//! Endpoints whose server side is built elsewhere (`/api/usage`, `/api/explain`, the presets
//! of `/api/config`, a rejected reload), checked against `FakeAdmin`: it records the request the
//! CLI sends and answers with the shape SPEC §3 documents.

use serde_json::{Value, json};

use crate::common::cli::{FakeAdmin, TestServer};

#[test]
fn config_reload_reports_and_exits_1_when_rejected() {
    // A server on built-in defaults has no file to reload: ok, with a warning.
    let server = TestServer::start();
    let out = server.cli(&["config", "reload"]).ok();
    assert_eq!(out.stdout, "config reloaded (generation 1)\n");
    assert!(
        out.stderr.contains("warning: running on built-in defaults"),
        "{}",
        out.stderr
    );

    // A rejected file: the server answers 422 with the report.
    let fake = FakeAdmin::start(|_| {
        (
            422,
            json!({"at": "2025-01-01T00:00:00Z", "trigger": "api", "ok": false, "generation": 3,
            "errors": ["/etc/keygate/keygate.toml:7:1: limits.rte: unknown setting"],
            "restart_needed": [], "warnings": []}),
        )
    });
    let out = fake.cli(&["config", "reload"]).expect_code(1);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("the previous config keeps serving"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("/etc/keygate/keygate.toml:7:1: limits.rte: unknown setting\n"),
        "{}",
        out.stderr
    );
    let seen = fake.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/api/config/reload")
    );
    let json = fake
        .cli(&["config", "reload", "--json"])
        .expect_code(1)
        .json();
    assert_eq!(json["ok"], false);
}

fn usage_answer() -> Value {
    json!([
        {"start": "2025-01-09T13:00:00Z", "requests": 120, "input_tokens": 5000, "output_tokens": 700, "errors": 2},
        {"start": "2025-01-09T14:00:00Z", "requests": 0, "input_tokens": 0, "output_tokens": 0, "errors": 0},
        {"start": "2025-01-09T15:00:00Z", "requests": 30, "input_tokens": 10, "output_tokens": 1, "errors": 0}
    ])
}

#[test]
fn usage_asks_for_the_window_and_draws_a_bar_chart() {
    let fake = FakeAdmin::start(|_| (200, usage_answer()));
    let out = fake
        .cli(&[
            "usage",
            "--account",
            "acme",
            "--since",
            "2d",
            "--granularity",
            "hour",
        ])
        .ok();
    let seen = fake.requests();
    let url = url_query(&seen[0].uri);
    assert_eq!(seen[0].method, "GET");
    assert!(seen[0].uri.starts_with("/api/usage?"), "{}", seen[0].uri);
    assert_eq!(url("account").as_deref(), Some("acme"));
    assert_eq!(url("key"), None);
    assert_eq!(url("granularity").as_deref(), Some("hour"));
    let from = keygate::clock::parse_rfc3339(&url("from").unwrap()).unwrap();
    let to = keygate::clock::parse_rfc3339(&url("to").unwrap()).unwrap();
    assert_eq!(to - from, 2 * 86_400_000);

    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "START (UTC)       REQUESTS  INPUT TOKENS  OUTPUT TOKENS  ERRORS"
    );
    assert_eq!(
        lines[4],
        "total                  150          5010            701       2"
    );
    assert_eq!(lines[6], "requests per hour");
    assert_eq!(
        lines[7],
        format!("2025-01-09 13:00 │{} 120", "█".repeat(40))
    );
    assert_eq!(lines[8], format!("2025-01-09 14:00 │{} 0", " ".repeat(40)));
    assert_eq!(
        lines[9],
        format!("2025-01-09 15:00 │{}{} 30", "█".repeat(10), " ".repeat(30))
    );

    let json = fake
        .cli(&[
            "usage",
            "--key",
            "key_0000000000000001",
            "--since",
            "30d",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(json, usage_answer());
    let seen = fake.requests();
    let url = url_query(&seen[1].uri);
    assert_eq!(url("key").as_deref(), Some("key_0000000000000001"));
    assert_eq!(
        url("granularity").as_deref(),
        Some("day"),
        "long windows default to days"
    );
}

/// A lookup of one query parameter of `uri`.
fn url_query(uri: &str) -> impl Fn(&str) -> Option<String> {
    let query = uri.split_once('?').map_or("", |(_, q)| q).to_owned();
    move |name| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

#[test]
fn explain_prints_the_decision_and_exits_1_when_denied() {
    let fake = FakeAdmin::start(|seen| {
        if seen.body["origin"] == "https://evil.com" {
            (
                200,
                json!({"allowed": false, "status": 403, "code": "origin_not_allowed",
                "reason": "origin https://evil.com does not match any of *.example.com",
                "route": null, "upstream": null}),
            )
        } else {
            (
                200,
                json!({"allowed": true, "status": 200, "code": null, "reason": "allowed",
                "route": "/v1/", "upstream": "openai",
                "rate_limit": {"limit": 60, "remaining": 59}, "quota": null}),
            )
        }
    });
    let id = "key_0000000000000001";
    let out = fake
        .cli(&[
            "explain",
            id,
            "--path",
            "/v1/chat/completions",
            "--model",
            "gpt-4o",
            "--ip",
            "10.1.2.3",
        ])
        .ok();
    assert_eq!(
        out.stdout,
        "allowed: 200 — route /v1/ → upstream openai\n  rate_limit: limit=60 remaining=59\n"
    );
    let seen = fake.requests();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/api/explain")
    );
    assert_eq!(
        seen[0].body,
        json!({"key_id": id, "method": "POST", "path": "/v1/chat/completions",
               "model": "gpt-4o", "origin": null, "ip": "10.1.2.3"})
    );

    let out = fake
        .cli(&[
            "explain",
            id,
            "--path",
            "/v1/models",
            "--method",
            "get",
            "--origin",
            "https://evil.com",
        ])
        .expect_code(1);
    assert_eq!(
        out.stdout,
        "denied: 403 origin_not_allowed — origin https://evil.com does not match any of *.example.com\n"
    );
    assert_eq!(fake.requests()[1].body["method"], "GET");
    let json = fake
        .cli(&[
            "explain",
            id,
            "--path",
            "/v1/models",
            "--origin",
            "https://evil.com",
            "--json",
        ])
        .expect_code(1)
        .json();
    assert_eq!(json["code"], "origin_not_allowed");
}

#[test]
fn presets_list_reads_the_running_config() {
    let fake = FakeAdmin::start(|_| {
        (
            200,
            json!({"generation": 1, "source": null, "warnings": [], "last_reload": null,
            "config": {"presets": {
                "support-bot": {"upstream": "openai", "model": "gpt-4o-mini",
                    "system_prompt": "You are the support assistant of Example Inc. Answer briefly."},
                "coder": {"upstream": "anthropic", "model": "claude-sonnet-4", "system_prompt": ""}}}}),
        )
    });
    let out = fake.cli(&["presets", "list"]).ok();
    assert_eq!(
        out.stdout,
        "ID           UPSTREAM   MODEL            PROMPT\n\
         coder        anthropic  claude-sonnet-4\n\
         support-bot  openai     gpt-4o-mini      You are the support assistant of Example Inc. Ans…\n"
    );
    assert_eq!(fake.requests()[0].uri, "/api/config");
    let json = fake.cli(&["presets", "list", "--json"]).ok().json();
    assert_eq!(json["coder"]["model"], "claude-sonnet-4");
}
