//! Request rate limits through the real server: exactly the bucket's worth of requests get
//! through under concurrency, the account layer is shared by its keys, buckets refill with time
//! (moved by a manual clock), and the headers report the layer with the least remaining in the
//! generic form and the route's dialect.

mod common;

use std::time::Duration;

use common::client::{self, Answer, post, send};
use common::upstream::FakeUpstream;
use common::{TestApp, upstream_config};
use http::{Method, StatusCode};
use keygate::clock::Clock;
use serde_json::json;

fn chat() -> serde_json::Value {
    json!({"model": "gpt-4o", "messages": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_clients_never_get_more_than_the_bucket_allows() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app
        .create_key(json!({"name": "t", "rate_limit": {"requests": 50, "interval": "1h"}}))
        .await;
    let url = app.url("/v1/chat/completions");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        // A client per task: many connections, not one multiplexed pool.
        let (c, url, key) = (client::client(), url.clone(), key.clone());
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                statuses.push(send(&c, post(&url, Some(&key), &chat())).await);
            }
            statuses
        });
    }
    let answers: Vec<Answer> = tasks.join_all().await.into_iter().flatten().collect();
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok, 50);
    assert_eq!(limited.len(), 110);
    for a in limited {
        assert_eq!(a.code(), "rate_limit_exceeded");
        assert_eq!(a.json()["error"]["type"], "rate_limit_error");
        assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(a.header("x-ratelimit-limit"), Some("50"));
        let retry: u64 = a.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=72).contains(&retry), "retry-after {retry}");
    }
    assert_eq!(upstream.received().len(), 50);
}

#[tokio::test]
async fn an_account_limit_is_shared_by_its_keys_and_reported_when_it_is_lowest() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (s, _) = app
        .admin(
            Method::POST,
            "/api/accounts",
            Some(json!({"name": "acme", "rate_limit": {"requests": 3, "interval": "1h"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, k1) = app
        .create_key(json!({"name": "a", "account": "acme"}))
        .await;
    let (_, k2) = app
        .create_key(json!({"name": "b", "account": "acme"}))
        .await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    let first = send(&c, post(&url, Some(&k1), &chat())).await;
    assert_eq!(first.status, StatusCode::OK);
    // Key bucket: 59 of 60 left; account bucket: 2 of 3 left. The account is reported.
    assert_eq!(first.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("2"));
    assert_eq!(
        send(&c, post(&url, Some(&k2), &chat())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, post(&url, Some(&k1), &chat())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, post(&url, Some(&k2), &chat())).await.code(),
        "rate_limit_exceeded"
    );

    // Lifting the account limit takes effect at once.
    let (s, _) = app
        .admin(
            Method::PATCH,
            "/api/accounts/acme",
            Some(json!({"rate_limit": null})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let a = send(&c, post(&url, Some(&k2), &chat())).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-ratelimit-limit"), Some("60"));
}

#[tokio::test]
async fn an_empty_bucket_refills_with_time() {
    let upstream = FakeUpstream::start().await;
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::start_with(&upstream_config(upstream.addr), clock.clone()).await;
    let (_, key) = app
        .create_key(json!({"name": "t", "rate_limit": {"requests": 2, "interval": "60s"}}))
        .await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::OK
    );
    let second = send(&c, post(&url, Some(&key), &chat())).await;
    assert_eq!(second.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(second.header("x-ratelimit-reset-requests"), Some("1m0s"));
    let refused = send(&c, post(&url, Some(&key), &chat())).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), Some("30"));
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        send(&c, post(&url, Some(&key), &chat())).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    clock.advance(Duration::from_secs(1));
    let refilled = send(&c, post(&url, Some(&key), &chat())).await;
    assert_eq!(refilled.status, StatusCode::OK);
    assert_eq!(refilled.header("x-ratelimit-remaining"), Some("0"));
}

#[tokio::test]
async fn anthropic_routes_report_limits_in_anthropic_headers() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app
        .create_key(json!({"name": "t", "rate_limit": {"requests": 5, "interval": "60s"}}))
        .await;
    let mut req = post(
        &app.url("/v1/messages"),
        None,
        &json!({"model": "claude", "messages": []}),
    );
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    let a = send(&client::client(), req).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-ratelimit-limit"), Some("5"));
    assert_eq!(a.header("anthropic-ratelimit-requests-limit"), Some("5"));
    assert_eq!(
        a.header("anthropic-ratelimit-requests-remaining"),
        Some("4")
    );
    let reset = a.header("anthropic-ratelimit-requests-reset").unwrap();
    assert!(keygate::clock::parse_rfc3339(reset).is_some(), "{reset}");
    assert!(a.header("x-ratelimit-limit-requests").is_none());
}
