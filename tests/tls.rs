//! TLS listeners end to end (SPEC §2: "plain HTTP or TLS (rustls; HTTP/1.1 and HTTP/2 via
//! ALPN)"): a keygate TLS listener with an rcgen-made CA in front of a plain-HTTP fake upstream,
//! reached by hyper-rustls clients over HTTP/1.1 and HTTP/2, by raw rustls clients pinned to
//! TLS 1.2 and 1.3, by a hand-written TLS 1.1 ClientHello (refused), by a client that never
//! starts its handshake (dropped after `server.tls_handshake_timeout`), and by `curl`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::certs::{self, TestCerts};
use common::client::Answer;
use common::upstream::FakeUpstream;
use common::{TestApp, UPSTREAM_SECRET, upstream_config};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for something the server should do at once (or after a 300 ms
/// timeout): generous for a loaded CI machine, short enough to fail fast.
const PATIENCE: Duration = Duration::from_secs(5);

/// A keygate whose only listener is TLS, its fake upstream, and the certificates' temp dir
/// (kept alive for as long as the server reads the files).
struct TlsApp {
    app: TestApp,
    upstream: FakeUpstream,
    certs: TestCerts,
    /// The CA certificate as a PEM file, for curl.
    ca_file: PathBuf,
    _cert_dir: TempDir,
}

impl TlsApp {
    async fn start(server: &str) -> TlsApp {
        let cert_dir = tempfile::tempdir().expect("temp dir");
        let certs = certs::make(cert_dir.path(), "keygate");
        let ca_file = cert_dir.path().join("ca.pem");
        std::fs::write(&ca_file, &certs.ca_pem).expect("write CA");
        let upstream = FakeUpstream::start().await;
        let extra = format!(
            "{}\n[[listeners]]\naddr = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            upstream_config(upstream.addr),
            certs.cert.display(),
            certs.key.display(),
        );
        let app = TestApp::start_with_server(server, &extra).await;
        TlsApp {
            app,
            upstream,
            certs,
            ca_file,
            _cert_dir: cert_dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.app.addr.port())
    }
}

/// A rustls client config trusting only the test CA, limited to `versions`.
fn client_config(ca_pem: &str, versions: &[&'static SupportedProtocolVersion]) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA certificate");
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTPS client that offers no ALPN, so it speaks HTTP/1.1.
fn http1_client(ca_pem: &str) -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_pem, rustls::ALL_VERSIONS))
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A pooled HTTPS client that offers only `h2` by ALPN.
fn http2_client(ca_pem: &str) -> HttpsClient {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_pem, rustls::ALL_VERSIONS))
        .https_only()
        .enable_http2()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
}

fn post(url: &str, key: Option<&str>, body: &Value) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json");
    if let Some(key) = key {
        b = b.header("authorization", format!("Bearer {key}"));
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

/// Sends `req`; returns the HTTP version the answer came in, and the answer.
async fn send(client: &HttpsClient, req: Request<Full<Bytes>>) -> (Version, Answer) {
    let resp = tokio::time::timeout(PATIENCE, client.request(req))
        .await
        .expect("keygate answers in time")
        .expect("keygate answers over TLS");
    let version = resp.version();
    (version, Answer::collect(resp).await)
}

/// The OpenAI-style 401 for a request without a key.
fn assert_missing_key(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["error"]["code"], "missing_api_key", "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(body["error"]["param"], Value::Null, "{body}");
    let id = body["error"]["request_id"].as_str().expect("request_id");
    assert!(id.starts_with("req_"), "{body}");
    assert_eq!(answer.header("x-request-id"), Some(id));
}

#[tokio::test]
async fn http1_over_tls_forwards_a_keyed_request_and_refuses_an_unkeyed_one() {
    let t = TlsApp::start("").await;
    let (_, key) = t.app.create_key(json!({"name": "tls"})).await;
    let c = http1_client(&t.certs.ca_pem);

    let (version, ok) = send(
        &c,
        post(&t.url("/v1/chat/completions"), Some(&key), &chat(false)),
    )
    .await;
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json()["choices"][0]["message"]["content"], "hi");
    assert!(ok.header("x-request-id").unwrap().starts_with("req_"));
    let seen = t.upstream.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {UPSTREAM_SECRET}")
    );

    let (_, refused) = send(&c, post(&t.url("/v1/chat/completions"), None, &chat(false))).await;
    assert_missing_key(&refused);
    assert_eq!(t.upstream.received().len(), 1, "the refusal stayed home");
}

#[tokio::test]
async fn http2_over_tls_reaches_an_http1_upstream() {
    let t = TlsApp::start("").await;
    let (_, key) = t.app.create_key(json!({"name": "h2"})).await;
    let c = http2_client(&t.certs.ca_pem);

    let (version, ok) = send(
        &c,
        post(&t.url("/v1/chat/completions"), Some(&key), &chat(false)),
    )
    .await;
    assert_eq!(version, Version::HTTP_2, "ALPN chose h2");
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json()["usage"]["prompt_tokens"], 11);
    let seen = t.upstream.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.version, Version::HTTP_11, "forwarded as HTTP/1.1");
    assert_eq!(seen.json()["model"], "gpt-4o");

    // A streamed answer crosses the protocol change too.
    let (version, streamed) = send(
        &c,
        post(&t.url("/v1/chat/completions"), Some(&key), &chat(true)),
    )
    .await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(streamed.status, StatusCode::OK, "{}", streamed.text());
    assert_eq!(streamed.header("content-type"), Some("text/event-stream"));
    let text = streamed.text();
    for piece in ["\"t0\"", "\"t1\"", "\"t2\"", "data: [DONE]"] {
        assert!(text.contains(piece), "{piece} missing from {text}");
    }
    assert_eq!(t.upstream.last().version, Version::HTTP_11);

    let (version, refused) =
        send(&c, post(&t.url("/v1/chat/completions"), None, &chat(false))).await;
    assert_eq!(version, Version::HTTP_2);
    assert_missing_key(&refused);
    assert_eq!(t.upstream.received().len(), 2, "the refusal stayed home");
}

/// Connects with a raw rustls client limited to `versions` and offering `alpn`.
async fn connect(
    t: &TlsApp,
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = client_config(&t.certs.ca_pem, versions);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(t.app.addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(PATIENCE, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake succeeds")
}

/// One HTTP/1.1 `GET /healthz` over an established TLS stream.
async fn healthz_over(stream: tokio_rustls::client::TlsStream<TcpStream>) -> StatusCode {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let req = Request::get("/healthz")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    resp.status()
}

#[tokio::test]
async fn tls_1_2_and_1_3_clients_negotiate_their_version_and_alpn() {
    let t = TlsApp::start("").await;

    let tls12 = connect(&t, &[&rustls::version::TLS12], &[b"h2", b"http/1.1"]).await;
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    assert_eq!(tls12.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let tls13 = connect(&t, &[&rustls::version::TLS13], &[b"h2", b"http/1.1"]).await;
    assert_eq!(
        tls13.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(tls13.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // A client offering only http/1.1 gets it, and is served over it, on either version.
    let h1 = connect(&t, &[&rustls::version::TLS12], &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(healthz_over(h1).await, StatusCode::OK);
    let h1 = connect(&t, &[&rustls::version::TLS13], &[b"http/1.1"]).await;
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(healthz_over(h1).await, StatusCode::OK);

    // A client offering no ALPN at all is served HTTP/1.1.
    let none = connect(&t, rustls::ALL_VERSIONS, &[]).await;
    assert_eq!(none.get_ref().1.alpn_protocol(), None);
    assert_eq!(
        none.get_ref().1.protocol_version(),
        Some(ProtocolVersion::TLSv1_3),
        "the newest version both sides speak"
    );
    assert_eq!(healthz_over(none).await, StatusCode::OK);
}

/// A TLS 1.1 ClientHello: legacy version 3.2, two TLS 1.0-era cipher suites, no
/// `supported_versions`. rustls cannot produce one, so it is written out byte by byte. Real
/// TLS 1.1 clients send no extensions; `with_signature_algorithms` adds that TLS 1.2 extension,
/// without which rustls refuses the hello before it even looks at the version.
fn tls11_client_hello(with_signature_algorithms: bool) -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version: TLS 1.1
    hello.extend_from_slice(&[0x5a; 32]); // random
    hello.push(0); // session_id: empty
    // cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]); // compression_methods: null
    if with_signature_algorithms {
        // extensions (10 bytes): signature_algorithms (13), 6 bytes: a 4-byte list of
        // ecdsa_secp256r1_sha256 and rsa_pkcs1_sha256.
        hello.extend_from_slice(&[0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04]);
        hello.extend_from_slice(&[0x04, 0x03, 0x04, 0x01]);
    }
    let mut handshake = vec![0x01]; // ClientHello
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01]; // handshake record, TLS 1.0 record layer
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `hello` on a new connection, checks that the server answers with one fatal alert
/// record (type 21, level 2) and no ServerHello before closing it, and returns the alert's
/// description.
async fn refused_hello(t: &TlsApp, hello: &[u8]) -> u8 {
    let mut tcp = TcpStream::connect(t.app.addr).await.expect("connect");
    tcp.write_all(hello).await.expect("send ClientHello");
    let answer = read_until_closed(&mut tcp).await;
    assert_eq!(answer.len(), 7, "one alert record, got {answer:02x?}");
    assert_eq!(
        answer[0], 0x15,
        "an alert record, not a ServerHello: {answer:02x?}"
    );
    assert_eq!(answer[5], 0x02, "a fatal alert: {answer:02x?}");
    answer[6]
}

/// Reads until the server closes the connection (EOF or reset), within [`PATIENCE`].
async fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server closes the connection");
    seen
}

#[tokio::test]
async fn a_tls_1_1_client_is_refused_with_a_fatal_alert() {
    let t = TlsApp::start("").await;
    /// TLS alert descriptions (RFC 5246 §7.2).
    const HANDSHAKE_FAILURE: u8 = 40;
    const PROTOCOL_VERSION: u8 = 70;
    assert_eq!(
        refused_hello(&t, &tls11_client_hello(false)).await,
        HANDSHAKE_FAILURE
    );
    assert_eq!(
        refused_hello(&t, &tls11_client_hello(true)).await,
        PROTOCOL_VERSION
    );
    // The listener is unharmed.
    let tls12 = connect(&t, &[&rustls::version::TLS12], &[b"http/1.1"]).await;
    assert_eq!(healthz_over(tls12).await, StatusCode::OK);
}

#[tokio::test]
async fn a_client_that_never_says_hello_is_dropped_after_the_handshake_timeout() {
    let t = TlsApp::start("tls_handshake_timeout = \"300ms\"").await;
    let started = Instant::now();
    let mut tcp = TcpStream::connect(t.app.addr).await.expect("connect");
    let answer = read_until_closed(&mut tcp).await;
    let waited = started.elapsed();
    assert!(answer.is_empty(), "the server sent {answer:02x?}");
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the handshake timeout"
    );
    // Other clients are still served.
    let (_, key) = t.app.create_key(json!({"name": "after"})).await;
    let (_, ok) = send(
        &http1_client(&t.certs.ca_pem),
        post(&t.url("/v1/chat/completions"), Some(&key), &chat(false)),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

/// Runs `curl` against the TLS listener with `args` added; returns the body and the
/// `%{http_code} %{http_version}` line curl writes after it.
async fn curl(t: &TlsApp, args: &[&str]) -> (Value, String) {
    let port = t.app.addr.port();
    let mut cmd = tokio::process::Command::new("curl");
    cmd.arg("-q") // no ~/.curlrc
        .args(["--silent", "--show-error", "--noproxy", "*"])
        .args(["--max-time", "10"])
        .arg("--cacert")
        .arg(&t.ca_file)
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-H", "content-type: application/json"])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(args)
        .arg(t.url("/v1/chat/completions"));
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("curl is not installed; it is part of the test setup (apt-get install curl)")
        }
        Err(e) => panic!("cannot run curl: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, trailer) = stdout.rsplit_once('\n').expect("curl's -w line");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    (body, trailer.to_owned())
}

#[tokio::test]
async fn curl_gets_answers_over_http1_and_http2() {
    let t = TlsApp::start("").await;
    let (_, key) = t.app.create_key(json!({"name": "curl"})).await;
    let auth = format!("Authorization: Bearer {key}");
    let body = chat(false).to_string();

    let (answer, status) = curl(&t, &["--http1.1", "-H", &auth, "-d", &body]).await;
    assert_eq!(status, "200 1.1");
    assert_eq!(answer["choices"][0]["message"]["content"], "hi", "{answer}");
    assert_eq!(answer["model"], "gpt-4o");

    let (answer, status) = curl(&t, &["--http2", "-H", &auth, "-d", &body]).await;
    assert_eq!(status, "200 2");
    assert_eq!(answer["choices"][0]["message"]["content"], "hi", "{answer}");
    assert_eq!(t.upstream.received().len(), 2);
    assert!(
        t.upstream
            .received()
            .iter()
            .all(|r| r.version == Version::HTTP_11)
    );

    // Regression: a refusal sent before the request body was read used to reset the HTTP/2
    // stream under the upload, and curl (7.88) reported "Stream error in the HTTP/2 framing
    // layer" instead of the answer, in about a third of tries. Ten tries catch it.
    for _ in 0..10 {
        let (answer, status) = curl(&t, &["--http2", "-d", &body]).await;
        assert_eq!(status, "401 2");
        assert_eq!(answer["error"]["code"], "missing_api_key", "{answer}");
    }
    assert_eq!(t.upstream.received().len(), 2, "the refusals stayed home");
}
