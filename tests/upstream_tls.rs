//! keygate's side of an upstream connection: HTTPS upstreams trusted through `ca_file`, reached
//! over HTTP/1.1 or (when the upstream offers it by ALPN) HTTP/2, with warm connections reused;
//! an upstream whose certificate is not trusted is refused with `upstream_error`; and an
//! upstream that closes its keep-alive connection after every answer still gets every request.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::certs;
use common::client::{client, post, raw, send};
use common::upstream::FakeUpstream;
use common::{TestApp, UPSTREAM_SECRET};
use http::{StatusCode, Version};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

/// The usual routes and upstreams, at `https://localhost`, trusting `ca_file` when given.
fn https_config(port: u16, ca_file: Option<&Path>) -> String {
    let ca = ca_file.map_or(String::new(), |p| format!("ca_file = \"{}\"", p.display()));
    common::upstream_config_at(&format!("https://localhost:{port}"), &ca)
}

/// keygate in front of a TLS fake upstream offering `alpn`, trusting the upstream's CA.
async fn start(alpn: &[&[u8]]) -> (TestApp, FakeUpstream, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = certs::make(dir.path(), "upstream");
    let ca_file = dir.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &certs.ca_pem).expect("write CA");
    let upstream = FakeUpstream::start_tls(&certs.cert, &certs.key, alpn).await;
    let app = TestApp::start(&https_config(upstream.addr.port(), Some(&ca_file))).await;
    (app, upstream, dir)
}

#[tokio::test]
async fn an_https_upstream_speaking_http1_is_reached_over_a_reused_connection_per_upstream() {
    let (app, upstream, _dir) = start(&[b"http/1.1"]).await;
    let (_, key) = app.create_key(json!({"name": "tls-up"})).await;
    let c = client();

    let ok = send(
        &c,
        post(&app.url("/v1/chat/completions"), Some(&key), &chat(false)),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json()["usage"]["prompt_tokens"], 11);
    let seen = upstream.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.headers["host"],
        format!("localhost:{}", upstream.addr.port())
    );
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {UPSTREAM_SECRET}")
    );

    let streamed = send(
        &c,
        post(&app.url("/v1/chat/completions"), Some(&key), &chat(true)),
    )
    .await;
    assert_eq!(streamed.status, StatusCode::OK, "{}", streamed.text());
    assert!(
        streamed.text().contains("data: [DONE]"),
        "{}",
        streamed.text()
    );

    let messages = json!({"model": "claude", "max_tokens": 5, "messages": []});
    let anthropic = send(&c, post(&app.url("/v1/messages"), Some(&key), &messages)).await;
    assert_eq!(anthropic.status, StatusCode::OK, "{}", anthropic.text());
    let seen = upstream.last();
    assert_eq!(seen.path, "/anthropic/v1/messages");
    assert_eq!(seen.headers["x-api-key"], UPSTREAM_SECRET);

    assert_eq!(upstream.received().len(), 3);
    assert_eq!(
        upstream.connections(),
        2,
        "one connection per upstream (openai's served the two first requests)"
    );
}

#[tokio::test]
async fn an_https_upstream_offering_h2_gets_every_request_over_one_http2_connection() {
    let (app, upstream, _dir) = start(&[b"h2", b"http/1.1"]).await;
    let (_, key) = app.create_key(json!({"name": "tls-h2"})).await;
    let c = client();

    for stream in [false, true] {
        let ok = send(
            &c,
            post(&app.url("/v1/chat/completions"), Some(&key), &chat(stream)),
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        let seen = upstream.last();
        assert_eq!(seen.version, Version::HTTP_2, "ALPN chose h2");
        assert_eq!(seen.path, "/v1/chat/completions");
        assert!(!seen.headers.contains_key("host"), "h2 carries :authority");
    }

    // Concurrent requests share the one HTTP/2 connection.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, url, key) = (c.clone(), app.url("/v1/chat/completions"), key.clone());
        tasks.spawn(async move { send(&c, post(&url, Some(&key), &chat(false))).await });
    }
    while let Some(answer) = tasks.join_next().await {
        let answer = answer.expect("request task");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(answer.json()["usage"]["completion_tokens"], 7);
    }
    assert_eq!(upstream.received().len(), 10);
    assert_eq!(upstream.connections(), 1, "one multiplexed connection");
}

/// Concurrent requests that find no connection to an upstream that speaks HTTP/2 wait for one
/// connection to be made rather than each making its own. Over HTTP/1.1 they wait only for the
/// first connection to tell the protocol, then each gets through (how many connections that
/// takes depends on timing).
#[tokio::test]
async fn a_first_burst_shares_one_new_http2_connection_and_gets_through_over_http1() {
    for (alpn, connections) in [
        (&[&b"h2"[..], b"http/1.1"][..], Some(1)),
        (&[b"http/1.1"], None),
    ] {
        let (app, upstream, _dir) = start(alpn).await;
        let (_, key) = app.create_key(json!({"name": "burst"})).await;
        let c = client();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (c, url, key) = (c.clone(), app.url("/v1/chat/completions"), key.clone());
            tasks.spawn(async move { send(&c, post(&url, Some(&key), &chat(false))).await });
        }
        while let Some(answer) = tasks.join_next().await {
            let answer = answer.expect("request task");
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        }
        assert_eq!(upstream.received().len(), 6);
        if let Some(connections) = connections {
            assert_eq!(upstream.connections(), connections, "{alpn:?}");
        }
    }
}

#[tokio::test]
async fn an_upstream_certificate_from_an_untrusted_ca_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = certs::make(dir.path(), "upstream");
    let upstream = FakeUpstream::start_tls(&certs.cert, &certs.key, &[b"http/1.1"]).await;
    // No ca_file: only the public roots are trusted, and they did not sign the test CA.
    let app = TestApp::start(&https_config(upstream.addr.port(), None)).await;
    let (_, key) = app.create_key(json!({"name": "untrusted"})).await;

    let refused = send(
        &client(),
        post(&app.url("/v1/chat/completions"), Some(&key), &chat(false)),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_GATEWAY,
        "{}",
        refused.text()
    );
    assert_eq!(refused.code(), "upstream_error", "{}", refused.text());
    assert!(
        !refused.text().contains(UPSTREAM_SECRET),
        "{}",
        refused.text()
    );
    assert!(upstream.received().is_empty(), "no request was sent");
}

/// A plain-HTTP upstream that answers one request per connection with a keep-alive response
/// and then closes the connection; returns its address and a count of connections accepted.
async fn closing_upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = accepted.send(());
            read_request(&mut tcp).await;
            let body = r#"{"id":"x","object":"chat.completion","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = tcp.write_all(format!("{head}{body}").as_bytes()).await;
            let _ = tcp.shutdown().await;
        }
    });
    (addr, rx)
}

/// Reads one request with a `content-length` body (what keygate sends for a JSON body).
async fn read_request(tcp: &mut tokio::net::TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return;
            }
        }
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn an_upstream_that_closes_after_each_answer_still_gets_every_request() {
    let (addr, mut accepted) = closing_upstream().await;
    let app = TestApp::start(&common::upstream_config(addr)).await;
    let (_, key) = app.create_key(json!({"name": "closing"})).await;
    let c = client();
    for _ in 0..5 {
        let ok = send(
            &c,
            post(&app.url("/v1/chat/completions"), Some(&key), &chat(false)),
        )
        .await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
        assert_eq!(ok.json()["usage"]["total_tokens"], 3);
    }
    let mut connections = 0;
    while accepted.try_recv().is_ok() {
        connections += 1;
    }
    assert_eq!(connections, 5, "a closed connection is never reused");
}

/// A chunked `POST /v1/embeddings` (a route that streams the body through) with one chunk of
/// `size` bytes, and the last chunk unless the client is to stall.
fn chunked_upload(key: &str, size: usize, stall: bool) -> String {
    let end = if stall { "" } else { "0\r\n\r\n" };
    format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {size:x}\r\n{}\r\n{end}",
        "x".repeat(size)
    )
}

/// The client's faults with a streamed body are told apart from the upstream's whatever the
/// upstream speaks (hyper's HTTP/2 client reports a failed body as a reset stream).
#[tokio::test]
async fn a_streamed_body_over_the_limit_or_stalled_is_the_clients_fault_over_http2_and_http1() {
    for alpn in [&[&b"h2"[..]][..], &[&b"http/1.1"[..]][..]] {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = certs::make(dir.path(), "upstream");
        let ca_file = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_file, &certs.ca_pem).expect("write CA");
        let upstream = FakeUpstream::start_tls(&certs.cert, &certs.key, alpn).await;
        let app = TestApp::start_with_server(
            "max_body_bytes = 64\nidle_timeout = \"500ms\"",
            &https_config(upstream.addr.port(), Some(&ca_file)),
        )
        .await;
        let (_, key) = app.create_key(json!({"name": "upload"})).await;

        let answer = raw(app.addr, chunked_upload(&key, 32, false).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{alpn:?}: {answer}");
        let answer = raw(app.addr, chunked_upload(&key, 4096, false).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{alpn:?}: {answer}");
        assert!(answer.contains("request_too_large"), "{alpn:?}: {answer}");
        let answer = raw(app.addr, chunked_upload(&key, 16, true).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{alpn:?}: {answer}");
        assert!(
            answer.contains("\"code\":\"invalid_request\""),
            "{alpn:?}: {answer}"
        );
        // The upstream saw the small body whole, and never more than the limit of the others.
        let bodies: Vec<usize> = upstream.received().iter().map(|r| r.body.len()).collect();
        assert_eq!(bodies[0], 32, "{alpn:?}");
        assert!(bodies.iter().all(|&n| n <= 64), "{alpn:?}: {bodies:?}");
    }
}
