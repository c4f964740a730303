//! Metering end to end (SPEC §2 "Usage", §3 usage): tokens read from JSON and from both SSE
//! dialects, the usage chunk keygate requests for itself kept from the client, requests counted
//! when the client hangs up mid-stream, errors counted, token limits that cannot be overspent by
//! more than one reservation, quotas that roll over at UTC boundaries, the usage API, and usage
//! that survives a restart.

mod common;

use std::time::Duration;

use common::client::{self, Answer, post, send};
use common::upstream::FakeUpstream;
use common::{TestApp, upstream_config};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use keygate::clock::Clock;
use serde_json::{Value, json};

/// 2026-03-01T23:00:00Z: one hour before a UTC day boundary.
const LATE_EVENING: i64 = 1_772_406_000_000;

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
}

fn stream(extra: Value) -> Value {
    let mut body = json!({"model": "gpt-4o", "stream": true, "messages": []});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

async fn usage_of(app: &TestApp, id: &str) -> Value {
    let (s, key) = app
        .admin(Method::GET, &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    key["usage"].clone()
}

/// Polls the key's usage until `pred` holds (the request is recorded when its body ends,
/// which can be just after the client has read it).
async fn wait_usage(app: &TestApp, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let usage = usage_of(app, id).await;
        if pred(&usage) {
            return usage;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "usage never matched: {usage}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn json_usage_is_counted_at_once_and_shown_on_the_key() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (id, key) = app.create_key(json!({"name": "m"})).await;
    let a = send(
        &client::client(),
        post(&app.url("/v1/chat/completions"), Some(&key), &chat()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let usage = wait_usage(&app, &id, |u| u["requests"] == 1).await;
    assert_eq!(
        usage,
        json!({"requests": 1, "input_tokens": 11, "output_tokens": 7})
    );
    let (_, shown) = app
        .admin(Method::GET, &format!("/api/keys/{id}"), None)
        .await;
    assert!(shown["last_used_at"].is_string());
    let (_, account) = app.admin(Method::GET, "/api/accounts/default", None).await;
    assert_eq!(account["usage"]["input_tokens"], 11);
}

#[tokio::test]
async fn an_openai_stream_is_asked_for_usage_and_the_client_does_not_see_it() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (id, key) = app.create_key(json!({"name": "m"})).await;
    let c = client::client();
    let a = send(
        &c,
        post(
            &app.url("/v1/chat/completions"),
            Some(&key),
            &stream(json!({})),
        ),
    )
    .await;
    let sent = upstream.last();
    assert_eq!(sent.json()["stream_options"]["include_usage"], true);
    assert_eq!(
        sent.headers
            .get("content-length")
            .and_then(|v| v.to_str().ok()),
        Some(sent.body.len().to_string().as_str()),
        "a rewritten body goes up whole, with its own length"
    );
    assert!(!a.text().contains("\"usage\""), "{}", a.text());
    assert!(a.text().ends_with("data: [DONE]\n\n"));
    assert_eq!(
        wait_usage(&app, &id, |u| u["requests"] == 1).await["output_tokens"],
        3
    );

    // A client that asked for usage gets its chunk, and the body goes up as sent.
    let asked = stream(json!({"stream_options": {"include_usage": true}}));
    let a = send(
        &c,
        post(&app.url("/v1/chat/completions"), Some(&key), &asked),
    )
    .await;
    assert!(a.text().contains("\"usage\""));
    assert_eq!(upstream.last().json(), asked);
    wait_usage(&app, &id, |u| u["requests"] == 2 && u["input_tokens"] == 22).await;
}

#[tokio::test]
async fn anthropic_usage_is_read_from_json_and_from_the_stream() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (id, key) = app.create_key(json!({"name": "m"})).await;
    let c = client::client();
    for body in [
        json!({"model": "claude", "messages": []}),
        json!({"model": "claude", "stream": true, "messages": []}),
    ] {
        let mut req = post(&app.url("/v1/messages"), None, &body);
        req.headers_mut().insert("x-api-key", key.parse().unwrap());
        assert_eq!(send(&c, req).await.status, StatusCode::OK);
    }
    // JSON: 13 in, 9 out; stream: 13 in, 3 out (message_delta's cumulative count).
    let usage = wait_usage(&app, &id, |u| u["requests"] == 2).await;
    assert_eq!(
        usage,
        json!({"requests": 2, "input_tokens": 26, "output_tokens": 12})
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_stream_is_still_counted() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (id, key) = app.create_key(json!({"name": "m"})).await;
    for (n, events_read) in [0usize, 1, 2, 4].into_iter().enumerate() {
        let gate = format!("hangup-{n}");
        let c = client::client();
        let mut req = post(
            &app.url("/v1/chat/completions"),
            Some(&key),
            &stream(json!({})),
        );
        req.headers_mut()
            .insert("x-fake-gate", gate.parse().unwrap());
        req.headers_mut()
            .insert("x-fake-events", "30".parse().unwrap());
        upstream.release_gate(&gate, events_read);
        let resp = c.request(req).await.unwrap();
        let mut body = resp.into_body();
        let mut seen = String::new();
        while seen.matches("data: ").count() < events_read {
            let frame = body.frame().await.unwrap().unwrap();
            seen.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        }
        drop(body);
        drop(c);
        // keygate learns that the client is gone when writing to it fails: let the upstream
        // send one event at a time until the request is recorded (long before the usage chunk).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while usage_of(&app, &id).await["requests"] != n as u64 + 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the hung-up request was never recorded"
            );
            upstream.release_gate(&gate, 1);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let usage = usage_of(&app, &id).await;
        assert!(
            usage["output_tokens"].as_u64().unwrap() >= events_read as u64 / 2,
            "{usage}"
        );
    }
    let (_, buckets) = app
        .admin(Method::GET, &format!("/api/usage?key={id}"), None)
        .await;
    let estimated: u64 = buckets
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["estimated"].as_u64().unwrap())
        .sum();
    assert_eq!(
        estimated, 4,
        "every cut-short request says its tokens were estimated: {buckets}"
    );
}

#[tokio::test]
async fn upstream_errors_and_refusals_are_counted_as_errors() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (id, key) = app
        .create_key(json!({"name": "m", "scopes": ["chat"]}))
        .await;
    let c = client::client();
    let mut failing = post(&app.url("/v1/chat/completions"), Some(&key), &chat());
    failing
        .headers_mut()
        .insert("x-fake-status", "503".parse().unwrap());
    assert_eq!(
        send(&c, failing).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let models = common::client::get(&app.url("/v1/models"), Some(&key));
    assert_eq!(send(&c, models).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        send(
            &c,
            post(&app.url("/v1/chat/completions"), Some(&key), &chat())
        )
        .await
        .status,
        StatusCode::OK
    );
    wait_usage(&app, &id, |u| u["requests"] == 3).await;
    let (_, buckets) = app
        .admin(
            Method::GET,
            &format!("/api/usage?key={id}&granularity=day"),
            None,
        )
        .await;
    let day = &buckets[0];
    assert_eq!(
        (day["requests"].as_u64(), day["errors"].as_u64()),
        (Some(3), Some(2)),
        "{buckets}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_overspend_a_token_limit_by_at_most_one_reservation() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app
        .create_key(json!({"name": "t", "token_limit": {"tokens": 100, "interval": "1h"}}))
        .await;
    let url = app.url("/v1/chat/completions");
    let body = json!({"model": "gpt-4o", "max_tokens": 20, "messages": []});
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (c, url, key, body) = (client::client(), url.clone(), key.clone(), body.clone());
        tasks.spawn(async move { send(&c, post(&url, Some(&key), &body)).await });
    }
    let answers: Vec<Answer> = tasks.join_all().await;
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count() as u64;
    // Each answered request really used 18 tokens (11 in + 7 out).
    assert!(
        ok * 18 <= 100 + 20,
        "{ok} requests spent {} tokens",
        ok * 18
    );
    assert!(ok >= 5, "only {ok} got through");
    let refused = answers
        .iter()
        .find(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .unwrap();
    assert_eq!(refused.code(), "rate_limit_exceeded");
    assert_eq!(refused.header("x-ratelimit-limit-tokens"), Some("100"));
    assert!(refused.header("x-ratelimit-remaining-tokens").is_some());
}

#[tokio::test]
async fn a_daily_request_quota_runs_out_and_comes_back_at_utc_midnight() {
    let upstream = FakeUpstream::start().await;
    let clock = Clock::manual(LATE_EVENING);
    let app = TestApp::start_with(&upstream_config(upstream.addr), clock.clone()).await;
    let (_, key) = app
        .create_key(json!({"name": "q", "quota": {"requests": 2, "period": "day"}}))
        .await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::OK
    );
    let refused = send(&c, post(&url, Some(&key), &chat())).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "quota_exceeded");
    assert_eq!(refused.json()["error"]["type"], "insufficient_quota");
    assert_eq!(refused.header("retry-after"), Some("3600"));
    clock.advance(Duration::from_secs(3599));
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.code(),
        "quota_exceeded"
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        upstream.received().len(),
        3,
        "refused requests never reached the upstream"
    );
}

#[tokio::test]
async fn token_and_account_quotas_count_what_was_used() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app
        .create_key(json!({"name": "t", "quota": {"tokens": 30, "period": "total"}}))
        .await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        let a = send(&c, post(&url, Some(&key), &chat())).await;
        assert_eq!(a.status, expected, "{}", a.text());
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                a.header("retry-after").is_none(),
                "a total quota never resets"
            );
        }
    }

    // An account quota set later starts from the account's use so far and binds every key.
    let (_, k1) = app
        .create_key(json!({"name": "a", "account": "acme"}))
        .await;
    let (_, k2) = app
        .create_key(json!({"name": "b", "account": "acme"}))
        .await;
    assert_eq!(
        send(&c, post(&url, Some(&k1), &chat())).await.status,
        StatusCode::OK
    );
    let (s, _) = app
        .admin(
            Method::PATCH,
            "/api/accounts/acme",
            Some(json!({"quota": {"requests": 2, "period": "month"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        send(&c, post(&url, Some(&k2), &chat())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, post(&url, Some(&k1), &chat())).await.code(),
        "quota_exceeded"
    );
    app.admin(
        Method::PATCH,
        "/api/accounts/acme",
        Some(json!({"quota": null})),
    )
    .await;
    assert_eq!(
        send(&c, post(&url, Some(&k1), &chat())).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_usage_api_gives_hourly_and_daily_buckets_and_checks_its_input() {
    let upstream = FakeUpstream::start().await;
    let clock = Clock::manual(LATE_EVENING);
    let app = TestApp::start_with(&upstream_config(upstream.addr), clock.clone()).await;
    let (id, key) = app.create_key(json!({"name": "u"})).await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    send(&c, post(&url, Some(&key), &chat())).await;
    clock.advance(Duration::from_secs(2 * 3600));
    send(&c, post(&url, Some(&key), &chat())).await;
    send(&c, post(&url, Some(&key), &chat())).await;
    wait_usage(&app, &id, |u| u["requests"] == 3).await;

    let (s, hours) = app
        .admin(
            Method::GET,
            &format!("/api/usage?key={id}&from=2026-03-01T00:00:00Z"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{hours}");
    let starts: Vec<&str> = hours
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["start"].as_str().unwrap())
        .collect();
    assert_eq!(starts, ["2026-03-01T23:00:00Z", "2026-03-02T01:00:00Z"]);
    assert_eq!(hours[1]["requests"], 2);
    assert_eq!(hours[1]["output_tokens"], 14);
    let (_, days) = app
        .admin(
            Method::GET,
            "/api/usage?account=default&granularity=day&from=2026-02-01T00:00:00Z",
            None,
        )
        .await;
    let days: Vec<(String, u64)> = days
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["start"].as_str().unwrap().to_owned(),
                b["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        days,
        [
            ("2026-03-01T00:00:00Z".to_owned(), 1),
            ("2026-03-02T00:00:00Z".to_owned(), 2)
        ]
    );

    for (query, code) in [
        ("", "invalid_key"),
        (&format!("key={id}&account=default") as &str, "invalid_key"),
        (&format!("key={id}&granularity=week"), "invalid_granularity"),
        (&format!("key={id}&from=yesterday"), "invalid_from"),
    ] {
        let (s, err) = app
            .admin(Method::GET, &format!("/api/usage?{query}"), None)
            .await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{query}"
        );
    }
    let (s, _) = app
        .admin(Method::GET, "/api/usage?key=key_0000000000000000", None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn usage_is_flushed_at_shutdown_and_read_back_after_a_restart() {
    let upstream = FakeUpstream::start().await;
    let config = upstream_config(upstream.addr);
    let app = TestApp::start(&config).await;
    let (id, key) = app
        .create_key(json!({"name": "p", "quota": {"requests": 3, "period": "month"}}))
        .await;
    let c = client::client();
    for _ in 0..2 {
        send(
            &c,
            post(&app.url("/v1/chat/completions"), Some(&key), &chat()),
        )
        .await;
    }
    wait_usage(&app, &id, |u| u["requests"] == 2).await;
    let dir = app.stop().await;
    let app = TestApp::start_in(dir, "", &config, Clock::system()).await;
    assert_eq!(
        usage_of(&app, &id).await,
        json!({"requests": 2, "input_tokens": 22, "output_tokens": 14})
    );
    // The quota remembers the month's two requests: one more is allowed, then none.
    let url = app.url("/v1/chat/completions");
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.code(),
        "quota_exceeded"
    );
}
