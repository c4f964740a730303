//! The data plane end to end: every row of SPEC §2's error table in both error styles, what
//! reaches the upstream, and the headers on every answer. A real keygate runs in-process in
//! front of a recording fake upstream.

mod common;

use common::client::{self, Answer, get, post, send};
use common::upstream::FakeUpstream;
use common::{TestApp, UPSTREAM_SECRET, upstream_config};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

async fn setup(extra: &str) -> (TestApp, FakeUpstream) {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&format!("{}\n{extra}", upstream_config(upstream.addr))).await;
    (app, upstream)
}

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<bytes::Bytes>> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(bytes::Bytes::from(body.to_owned())))
        .unwrap()
}

fn assert_error(answer: &Answer, status: u16, code: &str, kind: &str) {
    assert_eq!(answer.status.as_u16(), status, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert_eq!(body["error"]["param"], Value::Null);
    let id = body["error"]["request_id"].as_str().unwrap();
    assert_eq!(answer.header("x-request-id"), Some(id));
}

#[tokio::test]
async fn a_valid_key_reaches_the_upstream_with_the_real_credential_only() {
    let (app, upstream) = setup("").await;
    let (_, key) = app.create_key(json!({"name": "t"})).await;
    let c = client::client();
    let mut req = post(&app.url("/v1/chat/completions?x=1"), Some(&key), &chat());
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    req.headers_mut()
        .insert("x-request-id", "client-chosen".parse().unwrap());
    req.headers_mut().insert("x_sneaky", "1".parse().unwrap());
    req.headers_mut()
        .insert("connection", "keep-alive, x-hop".parse().unwrap());
    req.headers_mut().insert("x-hop", "1".parse().unwrap());
    let answer = send(&c, req).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["usage"]["prompt_tokens"], 11);

    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/chat/completions?x=1");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {UPSTREAM_SECRET}")
    );
    assert!(seen.headers.get("x-api-key").is_none());
    assert!(seen.headers.get("x_sneaky").is_none());
    assert!(seen.headers.get("x-hop").is_none());
    assert_eq!(
        seen.headers["x-request-id"],
        answer.header("x-request-id").unwrap()
    );
    assert!(answer.header("x-request-id").unwrap().starts_with("req_"));
    for (_, v) in seen.headers.iter() {
        assert!(
            !v.to_str().unwrap_or("").contains(&key),
            "the client's key leaked upstream"
        );
    }
    assert_eq!(
        seen.json(),
        chat(),
        "an unread or unchanged body arrives as sent"
    );
}

#[tokio::test]
async fn anthropic_routes_use_x_api_key_the_base_path_and_default_headers() {
    let (app, upstream) = setup("").await;
    let (_, key) = app.create_key(json!({"name": "t"})).await;
    let c = client::client();
    let req = request(
        "POST",
        &app.url("/v1/messages"),
        &[("x-api-key", &key), ("content-type", "application/json")],
        r#"{"model":"claude","max_tokens":5,"messages":[]}"#,
    );
    let answer = send(&c, req).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/anthropic/v1/messages");
    assert_eq!(seen.headers["x-api-key"], UPSTREAM_SECRET);
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");

    // A client's own anthropic-version wins over the default.
    let req = request(
        "POST",
        &app.url("/v1/messages"),
        &[("x-api-key", &key), ("anthropic-version", "2099-01-01")],
        r#"{"model":"claude","messages":[]}"#,
    );
    send(&c, req).await;
    assert_eq!(upstream.last().headers["anthropic-version"], "2099-01-01");
}

#[tokio::test]
async fn authentication_failures_answer_401_with_their_code() {
    let (app, upstream) = setup("").await;
    let (id, key) = app.create_key(json!({"name": "t"})).await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");

    assert_error(
        &send(&c, post(&url, None, &chat())).await,
        401,
        "missing_api_key",
        "authentication_error",
    );
    assert_error(
        &send(&c, post(&url, Some("sk-kg-garbage"), &chat())).await,
        401,
        "invalid_api_key",
        "authentication_error",
    );
    // Right shape, right checksum, but never issued: the same answer as garbage.
    let unknown = keygate::keys::generate("sk-kg-").unwrap();
    let a = send(&c, post(&url, Some(unknown.secret.expose()), &chat())).await;
    assert_error(&a, 401, "invalid_api_key", "authentication_error");
    let both = request(
        "POST",
        &url,
        &[
            ("authorization", &format!("Bearer {key}")),
            ("x-api-key", "other"),
        ],
        "{}",
    );
    assert_error(
        &send(&c, both).await,
        401,
        "invalid_api_key",
        "authentication_error",
    );

    let (s, _) = app
        .admin(
            Method::PATCH,
            &format!("/api/keys/{id}"),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        &send(&c, post(&url, Some(&key), &chat())).await,
        401,
        "api_key_disabled",
        "authentication_error",
    );

    let (s, _) = app
        .admin(Method::DELETE, &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_error(
        &send(&c, post(&url, Some(&key), &chat())).await,
        401,
        "invalid_api_key",
        "authentication_error",
    );
    assert!(
        upstream.received().is_empty(),
        "no refused request reached the upstream"
    );
}

#[tokio::test]
async fn an_expired_key_answers_expired_api_key() {
    let upstream = FakeUpstream::start().await;
    let clock = keygate::clock::Clock::manual(1_800_000_000_000);
    let app = TestApp::start_with(&upstream_config(upstream.addr), clock.clone()).await;
    let (_, key) = app
        .create_key(json!({"name": "t", "expires_in": "1h"}))
        .await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::OK
    );
    clock.advance(std::time::Duration::from_secs(3600));
    assert_error(
        &send(&c, post(&url, Some(&key), &chat())).await,
        401,
        "expired_api_key",
        "authentication_error",
    );
}

#[tokio::test]
async fn ip_and_origin_allow_lists_are_enforced() {
    let (app, _upstream) = setup("").await;
    let (_, ip_key) = app
        .create_key(json!({"name": "ip", "allowed_ips": ["10.0.0.0/8"]}))
        .await;
    let (_, local_key) = app
        .create_key(json!({"name": "ip2", "allowed_ips": ["127.0.0.1"]}))
        .await;
    let (_, web_key) = app
        .create_key(json!({"name": "web", "allowed_origins": ["*.example.com"]}))
        .await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    assert_error(
        &send(&c, post(&url, Some(&ip_key), &chat())).await,
        403,
        "ip_not_allowed",
        "permission_error",
    );
    assert_eq!(
        send(&c, post(&url, Some(&local_key), &chat())).await.status,
        StatusCode::OK
    );

    let with_origin = |origin: &str| {
        let mut r = post(&url, Some(&web_key), &chat());
        r.headers_mut().insert("origin", origin.parse().unwrap());
        r
    };
    assert_error(
        &send(&c, with_origin("https://evil.com")).await,
        403,
        "origin_not_allowed",
        "permission_error",
    );
    assert_error(
        &send(&c, with_origin("https://example.com")).await,
        403,
        "origin_not_allowed",
        "permission_error",
    );
    let ok = send(&c, with_origin("https://app.example.com")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(ok.header("vary"), Some("origin"));
    // Without Origin, the Referer is checked; with neither, the request passes.
    let mut referer = post(&url, Some(&web_key), &chat());
    referer
        .headers_mut()
        .insert("referer", "https://evil.com/page".parse().unwrap());
    assert_error(
        &send(&c, referer).await,
        403,
        "origin_not_allowed",
        "permission_error",
    );
    assert_eq!(
        send(&c, post(&url, Some(&web_key), &chat())).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_cors_preflight_needs_no_key() {
    let (app, upstream) = setup("").await;
    let c = client::client();
    let req = request(
        "OPTIONS",
        &app.url("/v1/chat/completions"),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "x-stainless-os"),
        ],
        "",
    );
    let a = send(&c, req).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(a.header("access-control-allow-methods"), Some("POST"));
    assert_eq!(
        a.header("access-control-allow-headers"),
        Some("authorization, x-api-key, content-type, x-stainless-os")
    );
    assert!(a.header("x-request-id").is_some());
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn routes_scopes_and_models_are_checked_in_order() {
    let (app, _upstream) = setup("").await;
    let (_, chat_key) = app
        .create_key(json!({"name": "c", "scopes": ["chat"]}))
        .await;
    let (_, gpt_key) = app
        .create_key(json!({"name": "g", "allowed_models": ["gpt-4o-*"]}))
        .await;
    let c = client::client();
    assert_error(
        &send(&c, get(&app.url("/v2/nothing"), Some(&chat_key))).await,
        404,
        "route_not_found",
        "invalid_request_error",
    );
    assert_error(
        &send(&c, get(&app.url("/v1/models"), Some(&chat_key))).await,
        403,
        "insufficient_scope",
        "authorization_error",
    );
    let url = app.url("/v1/chat/completions");
    assert_error(
        &send(&c, post(&url, Some(&gpt_key), &chat())).await,
        403,
        "model_not_allowed",
        "permission_error",
    );
    let mini = json!({"model": "gpt-4o-mini", "messages": []});
    assert_eq!(
        send(&c, post(&url, Some(&gpt_key), &mini)).await.status,
        StatusCode::OK
    );
    // The body had to be read for the model, and it is not JSON.
    let bad = request(
        "POST",
        &url,
        &[("authorization", &format!("Bearer {gpt_key}"))],
        "{not json",
    );
    assert_error(
        &send(&c, bad).await,
        400,
        "invalid_request",
        "invalid_request_error",
    );
    // A JSON body whose model keygate cannot read (none, not a string, a lone surrogate) is
    // refused for a key limited to models: the upstream might pick a default.
    for body in [
        json!({"messages": []}),
        json!({"model": ["gpt-4o-mini"], "messages": []}),
    ] {
        assert_error(
            &send(&c, post(&url, Some(&gpt_key), &body)).await,
            403,
            "model_not_allowed",
            "permission_error",
        );
    }
    let surrogate = request(
        "POST",
        &url,
        &[
            ("authorization", &format!("Bearer {gpt_key}")),
            ("content-type", "application/json"),
        ],
        r#"{"model":"gpt-4o-mini\udd80","messages":[]}"#,
    );
    assert_error(
        &send(&c, surrogate).await,
        403,
        "model_not_allowed",
        "permission_error",
    );
}

#[tokio::test]
async fn anthropic_routes_answer_errors_in_anthropic_style() {
    let (app, _upstream) = setup("").await;
    let c = client::client();
    let req = request(
        "POST",
        &app.url("/v1/messages"),
        &[("x-api-key", "sk-kg-bad")],
        "{}",
    );
    let a = send(&c, req).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let body = a.json();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(body["error"]["message"].is_string());
    assert_eq!(body["request_id"], a.header("x-request-id").unwrap());
}

#[tokio::test]
async fn a_body_over_the_limit_answers_413_whether_read_or_streamed() {
    let upstream = FakeUpstream::start().await;
    let app =
        TestApp::start_with_server("max_body_bytes = 64", &upstream_config(upstream.addr)).await;
    let (_, key) = app.create_key(json!({"name": "t"})).await;
    let (_, gpt_key) = app
        .create_key(json!({"name": "g", "allowed_models": ["gpt-*"]}))
        .await;
    let c = client::client();
    let big =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x".repeat(200)}]});
    // Read (the key restricts models): refused while reading.
    let a = send(
        &c,
        post(&app.url("/v1/chat/completions"), Some(&gpt_key), &big),
    )
    .await;
    assert_error(&a, 413, "request_too_large", "invalid_request_error");
    // Streamed (no decision needs the body): refused on its Content-Length.
    let a = send(&c, post(&app.url("/v1/embeddings"), Some(&key), &big)).await;
    assert_error(&a, 413, "request_too_large", "invalid_request_error");
    assert!(upstream.received().is_empty());
    // Rate-limit headers are there once the key is known.
    assert_eq!(a.header("x-ratelimit-limit"), Some("60"));
}

#[tokio::test]
async fn healthz_answers_without_a_key() {
    let (app, _upstream) = setup("").await;
    let a = send(&client::client(), get(&app.url("/healthz"), None)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["status"], "ok");
    assert!(a.header("x-request-id").is_some());
}

#[tokio::test]
async fn an_unreachable_upstream_answers_502_and_a_silent_one_504() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let upstream = FakeUpstream::start().await;
    let extra = format!(
        "{}\n[upstreams.dead]\nbase_url = \"http://{dead_addr}\"\n\n[[routes]]\npath = \"/dead/\"\nupstream = \"dead\"\n",
        upstream_config(upstream.addr)
    )
    .replace("timeout = \"5s\"", "timeout = \"300ms\"");
    let app = TestApp::start(&extra).await;
    let (_, key) = app.create_key(json!({"name": "t"})).await;
    let c = client::client();
    let a = send(&c, post(&app.url("/dead/x"), Some(&key), &chat())).await;
    assert_error(&a, 502, "upstream_error", "api_error");
    let mut hang = post(&app.url("/v1/chat/completions"), Some(&key), &chat());
    hang.headers_mut()
        .insert("x-fake-hang", "1".parse().unwrap());
    assert_error(&send(&c, hang).await, 504, "upstream_timeout", "api_error");
    // An upstream 5xx is passed through as it is.
    let mut failing = post(&app.url("/v1/chat/completions"), Some(&key), &chat());
    failing
        .headers_mut()
        .insert("x-fake-status", "503".parse().unwrap());
    let a = send(&c, failing).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["error"]["message"], "fake upstream failure");
}

#[tokio::test]
async fn a_revoked_key_fails_on_the_very_next_request() {
    let (app, _upstream) = setup("").await;
    let (id, key) = app.create_key(json!({"name": "t"})).await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    // The same pooled connection carries the requests before and after the revocation.
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::OK
    );
    let (s, _) = app
        .admin(Method::DELETE, &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.code(),
        "invalid_api_key"
    );
}

#[tokio::test]
async fn paths_that_could_escape_their_route_are_refused() {
    let (app, upstream) = setup("").await;
    let (_, key) = app.create_key(json!({"name": "t"})).await;
    let c = client::client();
    for path in [
        "/v1/../admin",
        "/v1/%2e%2e/admin",
        "/v1/./chat/completions",
        "/v1%2fchat",
    ] {
        let a = send(&c, post(&app.url(path), Some(&key), &chat())).await;
        assert_error(&a, 400, "invalid_request", "invalid_request_error");
    }
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn an_ip_that_keeps_failing_authentication_is_refused_before_its_key_is_looked_at() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start_with_server(
        "trusted_proxies = [\"127.0.0.1\"]\nauth_failure_limit = { requests = 3, interval = \"60s\" }",
        &upstream_config(upstream.addr),
    )
    .await;
    let (_, key) = app.create_key(json!({"name": "t"})).await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    let from = |ip: &str, key: Option<&str>| {
        let mut r = post(&url, key, &chat());
        r.headers_mut()
            .insert("x-forwarded-for", ip.parse().unwrap());
        r
    };
    for _ in 0..3 {
        let guess = keygate::keys::generate("sk-kg-").unwrap();
        let a = send(&c, from("198.51.100.7", Some(guess.secret.expose()))).await;
        assert_eq!(a.code(), "invalid_api_key");
    }
    // Even the right key is not looked at from that address now.
    let a = send(&c, from("198.51.100.7", Some(&key))).await;
    assert_error(&a, 429, "rate_limit_exceeded", "rate_limit_error");
    assert_eq!(a.header("retry-after"), Some("20"));
    // Another address is not affected.
    assert_eq!(
        send(&c, from("198.51.100.8", Some(&key))).await.status,
        StatusCode::OK
    );
}
