//! Streaming through keygate: SSE events are relayed as they arrive (not buffered), an upstream
//! that fails or goes quiet mid-stream ends the client's stream with an SSE error event in the
//! route's style, and HTTP/2 clients reach HTTP/1.1 upstreams.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::client::{self, post};
use common::upstream::FakeUpstream;
use common::{TestApp, upstream_config};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};

async fn setup(timeout: &str) -> (TestApp, FakeUpstream, String) {
    let upstream = FakeUpstream::start().await;
    let config = upstream_config(upstream.addr)
        .replace("timeout = \"5s\"", &format!("timeout = \"{timeout}\""));
    let app = TestApp::start(&config).await;
    let (_, key) = app.create_key(json!({"name": "stream"})).await;
    (app, upstream, key)
}

fn stream_request(url: &str, key: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o", "stream": true, "messages": []});
    let mut req = post(url, Some(key), &body);
    for (k, v) in headers {
        let name = http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    req
}

/// Reads frames until the collected text contains `needle`; fails after 5 s.
async fn read_until(body: &mut Incoming, seen: &mut String, needle: &str) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.contains(needle) {
            let frame = body.frame().await.expect("more frames").expect("frame");
            if let Some(data) = frame.data_ref() {
                seen.push_str(std::str::from_utf8(data).unwrap());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{needle:?} did not arrive; got {seen:?}"));
}

async fn read_to_end(body: &mut Incoming, seen: &mut String) {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    seen.push_str(std::str::from_utf8(d).unwrap());
                }
            }
            Err(e) => panic!("the stream broke instead of ending: {e}"),
        }
    }
}

#[tokio::test]
async fn an_event_reaches_the_client_before_the_upstream_sends_the_next() {
    let (app, upstream, key) = setup("5s").await;
    let c = client::client();
    let req = stream_request(
        &app.url("/v1/chat/completions"),
        &key,
        &[("x-fake-gate", "1"), ("x-fake-events", "3")],
    );
    upstream.release(1);
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    read_until(&mut body, &mut seen, "\"t0\"").await;
    assert!(
        !seen.contains("\"t1\""),
        "the second event cannot have been sent yet"
    );
    upstream.release(1);
    read_until(&mut body, &mut seen, "\"t1\"").await;
    upstream.release(10);
    read_to_end(&mut body, &mut seen).await;
    assert!(
        seen.contains("\"t2\"") && seen.ends_with("data: [DONE]\n\n"),
        "{seen}"
    );
}

#[tokio::test]
async fn an_upstream_reset_mid_stream_ends_with_an_openai_error_event() {
    let (app, upstream, key) = setup("5s").await;
    let c = client::client();
    let req = stream_request(
        &app.url("/v1/chat/completions"),
        &key,
        &[("x-fake-reset-after", "2")],
    );
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut seen = String::new();
    let mut body = resp.into_body();
    read_until(&mut body, &mut seen, "\"t1\"").await;
    upstream.release(1);
    read_to_end(&mut body, &mut seen).await;
    let last = seen.trim_end().rsplit("\n\n").next().unwrap();
    let data = last
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("last event: {last:?}"));
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["error"]["code"], "upstream_error");
    assert_eq!(error["error"]["type"], "api_error");
    assert_eq!(error["error"]["request_id"], request_id);
}

#[tokio::test]
async fn an_upstream_reset_on_an_anthropic_route_ends_with_an_anthropic_error_event() {
    let (app, upstream, key) = setup("5s").await;
    let c = client::client();
    let mut req = stream_request(
        &app.url("/v1/messages"),
        &key,
        &[("x-fake-reset-after", "3")],
    );
    req.headers_mut().remove("authorization");
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    let resp = c.request(req).await.unwrap();
    let mut seen = String::new();
    let mut body = resp.into_body();
    read_until(&mut body, &mut seen, "event: message_start").await;
    upstream.release(1);
    read_to_end(&mut body, &mut seen).await;
    let last = seen.trim_end().rsplit("\n\n").next().unwrap();
    let data = last
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("last event: {last:?}"));
    let error: Value = serde_json::from_str(data).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
}

#[tokio::test]
async fn an_upstream_that_goes_quiet_mid_stream_ends_with_a_timeout_event() {
    let (app, upstream, key) = setup("300ms").await;
    let c = client::client();
    let req = stream_request(
        &app.url("/v1/chat/completions"),
        &key,
        &[("x-fake-gate", "1")],
    );
    upstream.release(1);
    let resp = c.request(req).await.unwrap();
    let mut seen = String::new();
    let mut body = resp.into_body();
    tokio::time::timeout(Duration::from_secs(5), read_to_end(&mut body, &mut seen))
        .await
        .expect("the stream ends after the upstream's timeout");
    assert!(seen.contains("\"t0\""));
    assert!(seen.contains("\"code\":\"upstream_timeout\""), "{seen}");
}

#[tokio::test]
async fn an_http2_client_reaches_an_http1_upstream() {
    let (app, upstream, key) = setup("5s").await;
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = post(
        &app.url("/v1/chat/completions"),
        Some(&key),
        &json!({"model": "gpt-4o", "messages": []}),
    );
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let answer = common::client::Answer::collect(resp).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(upstream.last().path, "/v1/chat/completions");
    // Streaming works over HTTP/2 too.
    let resp = h2
        .request(stream_request(&app.url("/v1/chat/completions"), &key, &[]))
        .await
        .unwrap();
    let mut seen = String::new();
    read_to_end(&mut resp.into_body(), &mut seen).await;
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
}
