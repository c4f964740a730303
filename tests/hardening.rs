//! Hostile and broken input at the protocol level: idle connections are closed (but not under
//! a long stream), oversized or too many headers get 431, a request with both Content-Length
//! and Transfer-Encoding is refused, an upstream that sends both is read safely and its
//! connection not reused, and an absolute-form request target cannot steer keygate to another
//! host.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::client::{self, post, raw};
use common::upstream::FakeUpstream;
use common::{TestApp, upstream_config};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn an_idle_connection_is_closed_but_not_while_a_stream_runs() {
    let upstream = FakeUpstream::start().await;
    let app =
        TestApp::start_with_server("idle_timeout = \"300ms\"", &upstream_config(upstream.addr))
            .await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let stream = TcpStream::connect(app.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let mut conn = tokio::spawn(conn);

    // A stream that stays quiet for longer than the idle timeout keeps its connection.
    let mut req = post(
        &app.url("/v1/chat/completions"),
        Some(&key),
        &json!({"model": "m", "stream": true, "messages": []}),
    );
    req.headers_mut()
        .insert("x-fake-gate", "idle".parse().unwrap());
    let resp = sender.send_request(req).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(900), &mut conn)
            .await
            .is_err(),
        "the connection was closed under a running stream"
    );
    upstream.release_gate("idle", 10);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));

    // Then, with nothing in flight, it is closed.
    let closed = tokio::time::timeout(Duration::from_secs(5), &mut conn).await;
    assert!(closed.is_ok(), "an idle connection stayed open");
}

/// A body keygate must read (here: to check the model of a key limited to models) that never
/// finishes arriving is refused after the idle timeout, and the connection is closed: a key
/// holder cannot hold connections (and connection slots) for ever with slow bodies.
#[tokio::test]
async fn a_body_that_never_finishes_is_refused_after_the_idle_timeout() {
    let upstream = FakeUpstream::start().await;
    let app =
        TestApp::start_with_server("idle_timeout = \"500ms\"", &upstream_config(upstream.addr))
            .await;
    let (_, key) = app
        .create_key(json!({"name": "k", "allowed_models": ["gpt-*"]}))
        .await;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: 8192\r\n\r\n{{\"model\":"
    );
    let started = std::time::Instant::now();
    let answer = raw(app.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("in time"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the connection was closed after the answer, not held"
    );
    assert!(upstream.received().is_empty());
}

/// A body keygate streams through without reading (not JSON) is cut when the client goes
/// quiet for the idle timeout, instead of holding the connection and an upstream connection
/// until the upstream's timeout.
#[tokio::test]
async fn a_streamed_body_that_stalls_is_refused_after_the_idle_timeout() {
    let upstream = FakeUpstream::start().await;
    let app =
        TestApp::start_with_server("idle_timeout = \"500ms\"", &upstream_config(upstream.addr))
            .await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let request = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
         content-type: application/octet-stream\r\ncontent-length: 8192\r\n\r\nRIFF"
    );
    let started = std::time::Instant::now();
    let answer = raw(app.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered and closed at the idle timeout, not held: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oversized_or_too_many_headers_get_431() {
    let app = TestApp::start_with_server("max_header_bytes = 8192\nmax_headers = 20", "").await;
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    assert!(
        raw(app.addr, big.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nhost: x\r\n");
    for i in 0..30 {
        many.push_str(&format!("x-h{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    assert!(
        raw(app.addr, many.as_bytes())
            .await
            .starts_with("HTTP/1.1 431")
    );
    let fine = raw(
        app.addr,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

/// hyper reads such a request as chunked (RFC 9112 §6.3), drops the length before keygate sees
/// the request, answers, and closes the connection: what was smuggled behind it is never read.
#[tokio::test]
async fn a_request_with_both_content_length_and_chunked_encoding_cannot_smuggle() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let smuggle = format!(
        "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/admin HTTP/1.1\r\nhost: x\r\n\r\n"
    );
    let answer = raw(app.addr, smuggle.as_bytes()).await;
    assert_eq!(
        answer.matches("HTTP/1.1 ").count(),
        1,
        "nothing smuggled was answered: {answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/v1/embeddings");
    assert!(
        received[0].body.is_empty(),
        "the body was read as chunked: empty"
    );
}

#[tokio::test]
async fn an_absolute_form_target_cannot_choose_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let body = r#"{"model":"gpt-4o","messages":[]}"#;
    let request = format!(
        "POST http://169.254.169.254/v1/chat/completions HTTP/1.1\r\nhost: 169.254.169.254\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(app.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = upstream.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.headers["host"],
        upstream.addr.to_string(),
        "the upstream's own host"
    );
}

/// An upstream that answers with both Content-Length and chunked encoding: the body is read as
/// chunked (the length is dropped) and that connection is not used again.
#[tokio::test]
async fn an_upstream_answer_with_both_lengths_is_read_as_chunked_and_its_connection_dropped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = listener.local_addr().unwrap();
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                loop {
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\nd\r\n{\"ok\":\"both\"}\r\n0\r\n\r\n";
                    if s.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let app = TestApp::start(&upstream_config(upstream_addr)).await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let c = client::client();
    for _ in 0..2 {
        let req = http::Request::builder()
            .uri(app.url("/v1/embeddings"))
            .method("POST")
            .header("authorization", format!("Bearer {key}"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let a = client::send(&c, req).await;
        assert_eq!(a.status, http::StatusCode::OK);
        assert_eq!(a.text(), "{\"ok\":\"both\"}");
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the ambiguous connection was not reused"
    );
}

/// Polls `check` every 10 ms until it holds, failing after 10 s.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_disk_leaves_authentication_working_and_usage_catches_up_when_space_returns() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let upstream = FakeUpstream::start().await;
    let full = Arc::new(AtomicBool::new(false));
    let config = format!(
        "{}\n[usage]\nflush_interval = \"100ms\"\n",
        upstream_config(upstream.addr)
    );
    let app = TestApp::start_faulty(&config, Arc::clone(&full)).await;
    let (id, key) = app.create_key(json!({"name": "k"})).await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    let chat = json!({"model": "gpt-4o", "messages": []});

    full.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let a = client::send(&c, post(&url, Some(&key), &chat)).await;
        assert_eq!(
            a.status,
            http::StatusCode::OK,
            "authentication needs no disk"
        );
    }
    // An admin change cannot be made durable: it is refused whole, and the index is untouched.
    let (s, err) = app
        .admin(
            http::Method::POST,
            "/api/keys",
            Some(json!({"name": "while-full"})),
        )
        .await;
    assert_eq!(s, http::StatusCode::INTERNAL_SERVER_ERROR, "{err}");
    assert_eq!(err["error"]["code"], "internal_error");
    assert_eq!(app.app.keyring.len(), 1);
    // Flushes fail and keep the counts in memory; status says what is wrong.
    let stats = &app.app.flush_stats;
    eventually("a failed flush", || {
        stats.failed.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert!(!app.app.meter.is_empty());
    let (s, status) = app.admin(http::Method::GET, "/api/status", None).await;
    assert_eq!(
        s,
        http::StatusCode::OK,
        "status answers while the store cannot"
    );
    assert_eq!(status["store"]["ok"], false, "{status}");
    assert!(status["usage_flush"]["failing_in_a_row"].as_u64().unwrap() >= 2);
    assert_eq!(
        client::send(&c, post(&url, Some(&key), &chat)).await.status,
        http::StatusCode::OK
    );

    // Space returns: the next flush reopens the database and writes everything.
    full.store(false, Ordering::SeqCst);
    eventually("the flush to recover", || {
        stats.failing.load(Ordering::SeqCst) == 0 && app.app.meter.is_empty()
    })
    .await;
    let (s, _) = app
        .admin(
            http::Method::POST,
            "/api/keys",
            Some(json!({"name": "after"})),
        )
        .await;
    assert_eq!(s, http::StatusCode::CREATED);
    let stored = app
        .app
        .store
        .read(|tx| keygate::usage::store::totals(tx.raw(), &keygate::usage::key_subject(&id)))
        .unwrap();
    assert_eq!(
        stored.counts.requests, 4,
        "nothing was lost while the disk was full"
    );
    let (_, shown) = app
        .admin(http::Method::GET, &format!("/api/keys/{id}"), None)
        .await;
    assert_eq!(shown["usage"]["requests"], 4);
    let (_, log) = app.admin(http::Method::GET, "/api/audit", None).await;
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["key.create", "key.create"],
        "the refused change left no trace"
    );
}

#[test]
fn a_corrupt_database_is_refused_at_startup_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let file = state.join("keygate.redb");
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, &garbage).unwrap();
    let err = keygate::store::Store::open(&state).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("keygate.redb"), "{message}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file was not touched"
    );
}

/// A store whose pages were overwritten outside keygate (a bad disk, a stray `dd`): redb's
/// plain open trusts the file and may panic reading it, so keygate checks it page by page and
/// refuses it with a message naming it corrupt, leaving every byte as it was.
#[test]
fn a_store_with_overwritten_pages_is_refused_as_corrupt_and_left_alone() {
    use keygate::store::{KeyRecord, LimitsRecord, Store};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = Store::open(&state).unwrap();
    let records: Vec<KeyRecord> = (0..3000)
        .map(|j| {
            let new = keygate::keys::generate("sk-kg-").unwrap();
            KeyRecord {
                id: keygate::keys::new_id(1_767_225_600_000 + j).unwrap(),
                account: format!("acct-{}", j % 50),
                name: format!("key {j}"),
                hash: new.hash.0,
                previous: None,
                key_prefix: new.display,
                scopes: 3,
                is_active: true,
                primary: true,
                created_at_ms: 1_767_225_600_000 + j,
                expires_at_ms: None,
                revoked_at_ms: None,
                allowed_origins: Vec::new(),
                allowed_ips: Vec::new(),
                allowed_models: Vec::new(),
                limits: LimitsRecord::default(),
                metadata: "{}".into(),
            }
        })
        .collect();
    store
        .write(|tx| {
            for r in &records {
                tx.put_key(r, None)?;
            }
            Ok::<_, keygate::store::StoreError>(())
        })
        .unwrap();
    drop(store);

    // Overwrite the middle half of the file (the header and its first pages stay intact).
    let file = state.join("keygate.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let len = bytes.len();
    for (i, b) in bytes[len / 4..3 * len / 4].iter_mut().enumerate() {
        *b = ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    std::fs::write(&file, &bytes).unwrap();

    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = {:?}\n[admin]\nsocket = {:?}\n",
            state,
            dir.path().join("admin.sock")
        ),
    )
    .unwrap();
    let snapshot = common::load(&config);
    let err = match keygate::app::App::open(snapshot, keygate::clock::Clock::system()) {
        Ok(_) => panic!("a corrupt store was opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("is corrupt") && err.contains("keygate.redb"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap()[len / 4..3 * len / 4],
        bytes[len / 4..3 * len / 4],
        "the corrupt pages were left as they were"
    );
}

/// HTTP/2 rapid reset after acceptance (CVE-2023-44487 with one HEADERS+RST_STREAM pair per
/// write, so hyper's limit on resets before acceptance never trips): each stream used to reach
/// the upstream call before its reset was seen, and its dropped connect left one upstream TCP
/// connection per stream. A stream reset along with its request now costs the upstream nothing.
#[tokio::test]
async fn streams_reset_along_with_their_request_never_reach_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let uri: http::Uri = app.url("/v1/chat/completions").parse().unwrap();
    let request = || {
        http::Request::post(uri.clone())
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(())
            .unwrap()
    };
    let (mut sent, mut connections) = (0, 0);
    while sent < 300 {
        let tcp = TcpStream::connect(app.addr).await.unwrap();
        let Ok((client, conn)) = h2::client::handshake(tcp).await else {
            continue;
        };
        connections += 1;
        let conn = tokio::spawn(conn);
        let mut client = client;
        while sent < 300 && !conn.is_finished() {
            let Ok(ready) = client.ready().await else {
                break;
            };
            client = ready;
            let Ok((_response, mut stream)) = client.send_request(request(), true) else {
                break;
            };
            stream.send_reset(h2::Reason::CANCEL);
            sent += 1;
            // One pair per write: let the connection task flush it on its own.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        conn.abort();
    }
    // Anything still on its way to the upstream gets there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        upstream.connections() <= 30,
        "{sent} reset streams on {connections} connections made {} upstream connections and {} requests",
        upstream.connections(),
        upstream.received().len()
    );
    // keygate still serves, through the pool.
    let answer = client::send(
        &client::client(),
        post(
            &app.url("/v1/chat/completions"),
            Some(&key),
            &json!({"model": "m", "messages": []}),
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
}
