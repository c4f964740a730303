//! Assistant presets (SPEC §2, §5) and `explain` (SPEC §3).
//!
//! Presets are checked in both API styles, streamed and not, with and without a system prompt
//! from the client. `explain` is checked against the data plane itself: one table of requests,
//! each sent for real and explained, must get the same status and code.

mod common;

use std::time::Duration;

use common::client::{self, get, post, send};
use common::upstream::FakeUpstream;
use common::{TestApp, upstream_config};
use http::{Method, StatusCode};
use keygate::clock::Clock;
use serde_json::{Value, json};

const PRESETS: &str = r#"
[presets.support-bot]
upstream = "openai"
model = "gpt-4o-mini"
system_prompt = "You are the support assistant of Example Inc."

[presets.claude-helper]
upstream = "anthropic"
model = "claude-preset"
system_prompt = "Answer briefly."

[presets.elsewhere]
upstream = "alt"
model = "alt-model"
system_prompt = ""
"#;

async fn setup() -> (TestApp, FakeUpstream, FakeUpstream, String) {
    let upstream = FakeUpstream::start().await;
    let alt = FakeUpstream::start().await;
    let config = format!(
        "{}\n[upstreams.alt]\nbase_url = \"http://{}\"\n{PRESETS}",
        upstream_config(upstream.addr),
        alt.addr
    );
    let app = TestApp::start(&config).await;
    let (_, key) = app.create_key(json!({"name": "p"})).await;
    (app, upstream, alt, key)
}

fn anthropic(
    app: &TestApp,
    key: &str,
    body: &Value,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = post(&app.url("/v1/messages"), None, body);
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    req
}

#[tokio::test]
async fn an_openai_preset_sets_model_and_puts_its_prompt_first() {
    let (app, upstream, _, key) = setup().await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    for stream in [false, true] {
        for client_system in [false, true] {
            let mut messages = vec![json!({"role": "user", "content": "hi"})];
            if client_system {
                messages.insert(0, json!({"role": "system", "content": "Be terse."}));
            }
            let body = json!({"assistant_id": "support-bot", "model": "ignored", "stream": stream, "messages": messages});
            let a = send(&c, post(&url, Some(&key), &body)).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            let sent = upstream.last().json();
            assert_eq!(sent["model"], "gpt-4o-mini");
            assert!(sent.get("assistant_id").is_none(), "{sent}");
            let sent_messages = sent["messages"].as_array().unwrap();
            assert_eq!(
                sent_messages[0],
                json!({"role": "system", "content": "You are the support assistant of Example Inc."})
            );
            assert_eq!(
                &sent_messages[1..],
                &messages[..],
                "the client's messages follow, in order"
            );
            if stream {
                assert!(a.text().ends_with("data: [DONE]\n\n"));
                assert!(
                    !a.text().contains("\"usage\""),
                    "keygate's usage request stays hidden"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_anthropic_preset_merges_its_prompt_into_the_system_field() {
    let (app, upstream, _, key) = setup().await;
    let c = client::client();
    let cases = [
        (None, json!("Answer briefly.")),
        (
            Some(json!("Use French.")),
            json!("Answer briefly.\n\nUse French."),
        ),
        (
            Some(json!([{"type": "text", "text": "Use French."}])),
            json!([{"type": "text", "text": "Answer briefly."}, {"type": "text", "text": "Use French."}]),
        ),
    ];
    for stream in [false, true] {
        for (client_system, expected) in &cases {
            let mut body = json!({"assistant_id": "claude-helper", "max_tokens": 10, "stream": stream,
                "messages": [{"role": "user", "content": "hi"}]});
            if let Some(system) = client_system {
                body["system"] = system.clone();
            }
            let a = send(&c, anthropic(&app, &key, &body)).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.text());
            let sent = upstream.last();
            assert_eq!(sent.path, "/anthropic/v1/messages");
            let sent = sent.json();
            assert_eq!(sent["model"], "claude-preset");
            assert_eq!(&sent["system"], expected);
            assert!(sent.get("assistant_id").is_none());
            if stream {
                assert!(a.text().contains("event: message_stop"));
            }
        }
    }
}

#[tokio::test]
async fn a_preset_goes_to_its_own_upstream_and_obeys_allowed_models() {
    let (app, upstream, alt, key) = setup().await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    let body =
        json!({"assistant_id": "elsewhere", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        send(&c, post(&url, Some(&key), &body)).await.status,
        StatusCode::OK
    );
    assert_eq!(alt.last().json()["model"], "alt-model");
    assert_eq!(
        alt.last().json()["messages"].as_array().unwrap().len(),
        1,
        "an empty prompt adds nothing"
    );
    assert!(upstream.received().is_empty());

    let (_, narrow) = app
        .create_key(json!({"name": "n", "allowed_models": ["gpt-4o"]}))
        .await;
    let body = json!({"assistant_id": "support-bot", "model": "gpt-4o", "messages": []});
    let a = send(&c, post(&url, Some(&narrow), &body)).await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::FORBIDDEN, "model_not_allowed".to_owned())
    );
}

#[tokio::test]
async fn an_unknown_assistant_answers_404_in_the_routes_style() {
    let (app, _, _, key) = setup().await;
    let c = client::client();
    let a = send(
        &c,
        post(
            &app.url("/v1/chat/completions"),
            Some(&key),
            &json!({"assistant_id": "nobody", "messages": []}),
        ),
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (StatusCode::NOT_FOUND, "assistant_not_found".to_owned())
    );
    assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    let a = send(
        &c,
        anthropic(
            &app,
            &key,
            &json!({"assistant_id": "nobody", "messages": []}),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn presets_reload_with_the_config() {
    let (app, upstream, _, key) = setup().await;
    let text = std::fs::read_to_string(&app.config_path)
        .unwrap()
        .replace("Answer briefly.", "Answer at length.");
    std::fs::write(&app.config_path, text).unwrap();
    let (s, _) = app.admin(Method::POST, "/api/config/reload", None).await;
    assert_eq!(s, StatusCode::OK);
    let body = json!({"assistant_id": "claude-helper", "messages": []});
    send(&client::client(), anthropic(&app, &key, &body)).await;
    assert_eq!(upstream.last().json()["system"], "Answer at length.");
    let (_, config) = app.admin(Method::GET, "/api/config", None).await;
    assert_eq!(
        config["config"]["presets"]["claude-helper"]["system_prompt"],
        "Answer at length."
    );
}

/// One row of the agreement table: a key, a request, and the facts explain is given.
struct Case {
    name: &'static str,
    key: Value,
    method: &'static str,
    path: &'static str,
    model: Option<&'static str>,
    origin: Option<&'static str>,
    /// Requests sent before the checked one (to empty a bucket or use up a quota).
    warm_up: usize,
    /// Change the key after creating it (disable, revoke).
    then: Option<&'static str>,
    expect: (u16, Option<&'static str>),
}

fn cases() -> Vec<Case> {
    let c = |name, key: Value, path, expect| Case {
        name,
        key,
        method: "POST",
        path,
        model: Some("gpt-4o"),
        origin: None,
        warm_up: 0,
        then: None,
        expect,
    };
    vec![
        c("allowed", json!({}), "/v1/chat/completions", (200, None)),
        Case {
            then: Some("revoke"),
            ..c(
                "revoked",
                json!({}),
                "/v1/chat/completions",
                (401, Some("invalid_api_key")),
            )
        },
        c(
            "expired",
            json!({"expires_in": "1h"}),
            "/v1/chat/completions",
            (401, Some("expired_api_key")),
        ),
        Case {
            then: Some("disable"),
            ..c(
                "disabled",
                json!({}),
                "/v1/chat/completions",
                (401, Some("api_key_disabled")),
            )
        },
        c(
            "ip",
            json!({"allowed_ips": ["10.0.0.0/8"]}),
            "/v1/chat/completions",
            (403, Some("ip_not_allowed")),
        ),
        Case {
            origin: Some("https://evil.example"),
            ..c(
                "origin",
                json!({"allowed_origins": ["*.example.com"]}),
                "/v1/chat/completions",
                (403, Some("origin_not_allowed")),
            )
        },
        c(
            "route",
            json!({}),
            "/v9/nowhere",
            (404, Some("route_not_found")),
        ),
        Case {
            method: "GET",
            model: None,
            ..c(
                "scope",
                json!({"scopes": ["chat"]}),
                "/v1/models",
                (403, Some("insufficient_scope")),
            )
        },
        c(
            "model",
            json!({"allowed_models": ["claude-*"]}),
            "/v1/chat/completions",
            (403, Some("model_not_allowed")),
        ),
        Case {
            warm_up: 1,
            ..c(
                "rate",
                json!({"rate_limit": {"requests": 1, "interval": "24h"}}),
                "/v1/chat/completions",
                (429, Some("rate_limit_exceeded")),
            )
        },
        Case {
            warm_up: 2,
            ..c(
                "quota",
                json!({"quota": {"requests": 2, "period": "day"}}),
                "/v1/chat/completions",
                (429, Some("quota_exceeded")),
            )
        },
    ]
}

/// SPEC §2's table, sent for real and explained, row by row. Rows explain cannot reach are not
/// in the table: `missing_api_key` (explain always names a key), `request_too_large` and
/// `invalid_request` (they depend on body bytes, which explain is not given), and
/// `upstream_error`/`upstream_timeout` (explain never calls the upstream).
#[tokio::test]
async fn explain_agrees_with_the_data_plane_on_every_row_it_can_decide() {
    let upstream = FakeUpstream::start().await;
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::start_with(&upstream_config(upstream.addr), clock.clone()).await;
    let c = client::client();
    let mut keys = Vec::new();
    for case in cases() {
        let mut body = case.key.clone();
        body["name"] = json!(case.name);
        let (id, secret) = app.create_key(body).await;
        for _ in 0..case.warm_up {
            send(&c, request(&app, &case, &secret)).await;
        }
        match case.then {
            Some("revoke") => assert_eq!(
                app.admin(Method::DELETE, &format!("/api/keys/{id}"), None)
                    .await
                    .0,
                StatusCode::OK
            ),
            Some("disable") => {
                app.admin(
                    Method::PATCH,
                    &format!("/api/keys/{id}"),
                    Some(json!({"is_active": false})),
                )
                .await;
            }
            _ => {}
        }
        keys.push((case, id, secret));
    }
    // The key made with expires_in = 1h is now expired; nothing else depends on the time.
    clock.advance(Duration::from_secs(3600));
    for (case, id, secret) in &keys {
        let explained = explain(&app, case, id).await;
        let real = send(&c, request(&app, case, secret)).await;
        let real_code = (real.status != StatusCode::OK).then(|| real.code());
        assert_eq!(
            (real.status.as_u16(), real_code.as_deref()),
            case.expect,
            "{}: the data plane answered {} {}",
            case.name,
            real.status,
            real.text()
        );
        assert_eq!(
            explained["status"], case.expect.0,
            "{}: {explained}",
            case.name
        );
        assert_eq!(
            explained["code"].as_str(),
            case.expect.1,
            "{}: {explained}",
            case.name
        );
        assert_eq!(explained["allowed"], case.expect.0 == 200, "{}", case.name);
        assert!(
            explained["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{}",
            case.name
        );
    }
}

fn request(
    app: &TestApp,
    case: &Case,
    secret: &str,
) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = if case.method == "GET" {
        get(&app.url(case.path), Some(secret))
    } else {
        let body = match case.model {
            Some(m) => json!({"model": m, "messages": []}),
            None => json!({"messages": []}),
        };
        post(&app.url(case.path), Some(secret), &body)
    };
    if let Some(origin) = case.origin {
        req.headers_mut().insert("origin", origin.parse().unwrap());
    }
    req
}

async fn explain(app: &TestApp, case: &Case, id: &str) -> Value {
    let body = json!({"key_id": id, "method": case.method, "path": case.path, "model": case.model,
        "origin": case.origin, "ip": "127.0.0.1"});
    let (s, answer) = app.admin(Method::POST, "/api/explain", Some(body)).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    answer
}

#[tokio::test]
async fn explain_names_the_rule_and_shows_buckets_and_quotas_without_counting() {
    let (app, upstream, _, _) = setup().await;
    let (id, _) = app
        .create_key(json!({"name": "e", "allowed_origins": ["*.example.com"], "rate_limit": {"requests": 5, "interval": "60s"},
            "quota": {"requests": 100, "period": "month"}}))
        .await;
    let body = json!({"key_id": id, "path": "/v1/chat/completions", "model": "gpt-4o", "origin": "https://evil.com"});
    let (_, denied) = app.admin(Method::POST, "/api/explain", Some(body)).await;
    assert_eq!(
        denied["reason"],
        "origin https://evil.com does not match any of *.example.com"
    );
    let body = json!({"key_id": id, "path": "/v1/chat/completions", "model": "gpt-4o", "origin": "https://app.example.com"});
    for _ in 0..3 {
        let (_, allowed) = app
            .admin(Method::POST, "/api/explain", Some(body.clone()))
            .await;
        assert_eq!(allowed["allowed"], true, "{allowed}");
        assert_eq!(allowed["route"]["path"], "/v1/");
        assert_eq!(allowed["upstream"], "openai");
        assert_eq!(
            allowed["rate_limit_requests"]["remaining"], 5,
            "explain takes nothing: {allowed}"
        );
        assert_eq!(allowed["quota_key"]["requests_used"], 0);
        assert_eq!(allowed["quota_key"]["requests_limit"], 100);
    }
    assert!(upstream.received().is_empty());
    let (_, usage) = app
        .admin(Method::GET, &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(usage["usage"]["requests"], 0);
    let (s, err) = app
        .admin(Method::POST, "/api/explain", Some(json!({"path": "/v1/x"})))
        .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_key_id"))
    );
}
