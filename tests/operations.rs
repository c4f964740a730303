//! Running keygate as an appliance: hot reload by file watcher (an atomic rename over the
//! file), by SIGHUP and by the API, a broken file that keeps the old config serving, a TLS
//! certificate swap seen by the next handshake, graceful shutdown on SIGTERM that lets a
//! streamed response finish and flushes usage, and the metrics page.

mod common;

use std::path::Path;

use common::client::{self, get, post, send};
use common::process::{Process, eventually};
use common::upstream::FakeUpstream;
use common::{TestApp, admin_call, upstream_config};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": []})
}

/// Replaces `path` the way deploy tools do: write a new file beside it, rename it over.
fn atomic_write(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn an_atomic_rename_over_the_file_reloads_it_and_a_broken_file_changes_nothing() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let c = client::client();
    let original = std::fs::read_to_string(&app.config_path).unwrap();

    atomic_write(
        &app.config_path,
        &original.replace("path = \"/v1/\"", "path = \"/v2/\""),
    );
    eventually(5, "the watcher's reload", || async {
        (app.app.generation() == 2).then_some(())
    })
    .await;
    assert_eq!(
        send(
            &c,
            post(&app.url("/v2/chat/completions"), Some(&key), &chat())
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &c,
            post(&app.url("/v1/chat/completions"), Some(&key), &chat())
        )
        .await
        .code(),
        "route_not_found"
    );

    atomic_write(
        &app.config_path,
        &format!("{original}\n[server]\nmax_body_bytes = \"lots\"\n"),
    );
    let report = eventually(5, "the rejected reload", || async {
        let (_, config) = app.admin(Method::GET, "/api/config", None).await;
        (config["last_reload"]["ok"] == false).then_some(config)
    })
    .await;
    let error = report["last_reload"]["errors"][0].as_str().unwrap();
    assert!(error.contains("keygate.toml:"), "{error}");
    assert_eq!(report["generation"], 2);
    assert_eq!(
        send(
            &c,
            post(&app.url("/v2/chat/completions"), Some(&key), &chat())
        )
        .await
        .status,
        StatusCode::OK
    );
    let (_, metrics) = admin_text(&app.socket, "/metrics").await;
    assert!(
        metrics.contains("keygate_config_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keygate_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn listener_and_state_changes_wait_for_a_restart() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    let moved = original
        .replace("addr = \"127.0.0.1:0\"", "addr = \"127.0.0.1:1\"")
        .replace("/state\"", "/elsewhere\"");
    std::fs::write(&app.config_path, moved).unwrap();
    let (s, report) = app.admin(Method::POST, "/api/config/reload", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let notes = report["restart_needed"].to_string();
    assert!(
        notes.contains("state_dir") && notes.contains("listeners"),
        "{report}"
    );
    // Still served where it was.
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    assert_eq!(
        send(
            &client::client(),
            post(&app.url("/v1/chat/completions"), Some(&key), &chat())
        )
        .await
        .status,
        StatusCode::OK
    );
    assert!(app.dir.path().join("state/keygate.redb").exists());
    assert!(!app.dir.path().join("elsewhere").exists());
}

#[tokio::test]
async fn a_certificate_swap_is_seen_by_the_next_handshake_and_open_connections_stay() {
    let upstream = FakeUpstream::start().await;
    let certs_dir = tempfile::tempdir().unwrap();
    let first = common::certs::make(certs_dir.path(), "first");
    let second = common::certs::make(certs_dir.path(), "second");
    let live_cert = certs_dir.path().join("live.crt");
    let live_key = certs_dir.path().join("live.key");
    std::fs::copy(&first.cert, &live_cert).unwrap();
    std::fs::copy(&first.key, &live_key).unwrap();
    let config = format!(
        "{}\n[[listeners]]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        upstream_config(upstream.addr),
        live_cert.display(),
        live_key.display()
    );
    let app = TestApp::start(&config).await;

    let (mut open_conn, cert) = tls_handshake(app.addr, &[&first.ca_pem, &second.ca_pem]).await;
    assert_eq!(
        cert,
        std::fs::read(&first.cert).map(|pem| der_of(&pem)).unwrap()
    );

    std::fs::copy(&second.cert, &live_cert).unwrap();
    std::fs::copy(&second.key, &live_key).unwrap();
    let (s, report) = app.admin(Method::POST, "/api/config/reload", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    let (_, cert) = tls_handshake(app.addr, &[&first.ca_pem, &second.ca_pem]).await;
    assert_eq!(cert, der_of(&std::fs::read(&second.cert).unwrap()));

    // The connection opened before the swap still answers.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    open_conn
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    open_conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A key file that does not match its certificate is refused, and the live one stays.
    std::fs::copy(&first.key, &live_key).unwrap();
    let (s, report) = app.admin(Method::POST, "/api/config/reload", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{report}");
    let (_, cert) = tls_handshake(app.addr, &[&first.ca_pem, &second.ca_pem]).await;
    assert_eq!(cert, der_of(&std::fs::read(&second.cert).unwrap()));
}

fn der_of(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem)
        .unwrap()
        .to_vec()
}

/// Connects with TLS trusting `cas`; returns the stream and the server's leaf certificate.
async fn tls_handshake(
    addr: std::net::SocketAddr,
    cas: &[&str],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Vec<u8>,
) {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
            .unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (tls, leaf)
}

async fn admin_text(socket: &Path, path: &str) -> (StatusCode, String) {
    let (status, body) = admin_call(socket, Method::GET, path, None).await;
    (
        status,
        body.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| body.to_string()),
    )
}

#[tokio::test]
async fn metrics_count_requests_auth_failures_and_latency() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app.create_key(json!({"name": "m"})).await;
    let c = client::client();
    // The counter of a 200 is looked up once per config generation: two requests count on
    // the route's series; after a reload that gives the same route (same index) another path,
    // the third counts on the new path's series, not on a handle kept from before.
    for path in ["/v1/", "/v1/", "/v9/"] {
        if path == "/v9/" {
            let original = std::fs::read_to_string(&app.config_path).unwrap();
            let renamed = original.replace("path = \"/v1/\"", "path = \"/v9/\"");
            std::fs::write(&app.config_path, renamed).unwrap();
            let (s, report) = app.admin(Method::POST, "/api/config/reload", None).await;
            assert_eq!(s, StatusCode::OK, "{report}");
        }
        let url = app.url(&format!("{path}chat/completions"));
        let ok = send(&c, post(&url, Some(&key), &chat())).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    send(
        &c,
        post(
            &app.url("/v1/chat/completions"),
            Some("sk-kg-wrong"),
            &chat(),
        ),
    )
    .await;
    send(&c, get(&app.url("/v1/models"), None)).await;
    let (status, page) = admin_text(&app.socket, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "keygate_requests_total{route=\"/v1/\",status=\"200\",upstream=\"openai\"} 2",
        "keygate_requests_total{route=\"/v9/\",status=\"200\",upstream=\"openai\"} 1",
        "keygate_requests_total{route=\"-\",status=\"401\",upstream=\"-\"} 2",
        "keygate_auth_failures_total{code=\"invalid_api_key\"} 1",
        "keygate_auth_failures_total{code=\"missing_api_key\"} 1",
        "keygate_upstream_latency_seconds_count{upstream=\"openai\"} 3",
        "keygate_active_keys 1",
        "keygate_config_generation 2",
    ] {
        assert!(page.contains(line), "missing {line:?} in\n{page}");
    }
    assert!(!page.contains(&key[6..]), "no secret in metrics");
}

#[tokio::test]
async fn sighup_reloads_the_real_binary() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = Process::start(dir.path(), &upstream_config(upstream.addr)).await;
    let (_, created) = admin_call(
        &p.socket,
        Method::POST,
        "/api/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let config = dir.path().join("keygate.toml");
    // In place (no rename) and with the watcher's burst long over: the signal does the reload.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("path = \"/v1/\"", "path = \"/v3/\"");
    std::fs::write(&config, text).unwrap();
    p.signal(rustix::process::Signal::HUP);
    eventually(5, "the reload", || async {
        let (_, status) = admin_call(&p.socket, Method::GET, "/api/status", None).await;
        (status["config_generation"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    let a = send(
        &client::client(),
        post(
            &p.url(dir.path(), "/v3/chat/completions"),
            Some(&key),
            &chat(),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
}

#[tokio::test]
async fn sigterm_lets_a_stream_finish_flushes_usage_and_exits_cleanly() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Process::start(dir.path(), &upstream_config(upstream.addr)).await;
    let (_, created) = admin_call(
        &p.socket,
        Method::POST,
        "/api/keys",
        Some(json!({"name": "k"})),
    )
    .await;
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );

    let mut req = post(
        &p.url(dir.path(), "/v1/chat/completions"),
        Some(&key),
        &json!({"model": "gpt-4o", "stream": true, "messages": []}),
    );
    req.headers_mut()
        .insert("x-fake-gate", "term".parse().unwrap());
    upstream.release_gate("term", 1);
    let resp = client::client().request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(
        std::str::from_utf8(first.data_ref().unwrap())
            .unwrap()
            .contains("\"t0\"")
    );

    p.signal(rustix::process::Signal::TERM);
    // New connections are refused while the stream is still being served.
    eventually(5, "the listener to close", || {
        let url = p.url(dir.path(), "/healthz");
        async move {
            let addr = url
                .trim_start_matches("http://")
                .trim_end_matches("/healthz")
                .to_owned();
            tokio::net::TcpStream::connect(addr).await.err().map(|_| ())
        }
    })
    .await;
    upstream.release_gate("term", 10);
    let mut rest = String::new();
    while let Some(frame) = body.frame().await {
        rest.push_str(
            std::str::from_utf8(frame.unwrap().data_ref().unwrap_or(&bytes::Bytes::new())).unwrap(),
        );
    }
    assert!(
        rest.ends_with("data: [DONE]\n\n"),
        "the stream finished: {rest}"
    );
    let status = tokio::task::spawn_blocking(move || p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !dir.path().join("admin.sock").exists(),
        "the socket was removed"
    );

    // The usage of the drained stream was flushed before exit.
    let store = keygate::store::Store::open(&dir.path().join("state")).unwrap();
    let totals = store
        .read(|tx| keygate::usage::store::totals(tx.raw(), &keygate::usage::key_subject(&id)))
        .unwrap();
    assert_eq!(totals.counts.requests, 1);
    assert_eq!(totals.counts.output_tokens, 3);
}

/// `keygate serve` runs one data-plane thread per core, each with its own socket on the
/// listener's port: every connection is served whichever socket the kernel picked, a stream in
/// flight at shutdown still finishes, and one that outlives the grace does not hold the
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_share_the_port_and_drain_at_shutdown() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start_with_workers(
        "shutdown_grace = \"2s\"",
        &upstream_config(upstream.addr),
        2,
    )
    .await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let url = app.url("/v1/chat/completions");
    for i in 0..24 {
        // A fresh client each time: a new connection, so a new pick of socket by the kernel.
        let answer = send(&client::client(), post(&url, Some(&key), &chat())).await;
        assert_eq!(answer.status, 200, "request {i}: {answer:?}");
    }

    let streaming = |gate: &str| {
        let mut req = post(
            &url,
            Some(&key),
            &json!({"model": "gpt-4o", "stream": true, "messages": []}),
        );
        req.headers_mut()
            .insert("x-fake-gate", gate.parse().unwrap());
        client::client().request(req)
    };
    upstream.release_gate("drained", 1);
    upstream.release_gate("stuck", 1);
    let drained = streaming("drained").await.unwrap();
    let stuck = streaming("stuck").await.unwrap();
    let (mut drained, mut stuck) = (drained.into_body(), stuck.into_body());
    assert!(drained.frame().await.is_some() && stuck.frame().await.is_some());

    let started = std::time::Instant::now();
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    upstream.release_gate("drained", 10);
    let mut rest = String::new();
    while let Some(frame) = drained.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            rest.push_str(std::str::from_utf8(data).unwrap());
        }
    }
    assert!(
        rest.ends_with("data: [DONE]\n\n"),
        "the stream finished: {rest}"
    );
    // The stuck stream is cut at the end of the grace, and the server stops.
    tokio::time::timeout(std::time::Duration::from_secs(10), stopping)
        .await
        .expect("keygate stopped after the grace")
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    while let Some(frame) = stuck.frame().await {
        if frame.is_err() {
            break;
        }
    }
}
