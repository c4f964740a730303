//! A fake LLM upstream for tests: records every request it receives and answers like OpenAI
//! or Anthropic, in JSON or SSE, with behaviours a test selects per request through `x-fake-*`
//! headers (keygate forwards them):
//!
//! - `x-fake-status: 503` answers that status with an error body;
//! - `x-fake-hang: 1` never answers;
//! - `x-fake-events: N` streams N content events (default 3);
//! - `x-fake-delay-ms: D` waits D ms between events;
//! - `x-fake-reset-after: N` aborts the stream after N events, once the test calls
//!   [`FakeUpstream::release`] (so the earlier events are surely on the wire first);
//! - `x-fake-gate: NAME` sends each event only when the test calls [`FakeUpstream::release_gate`]
//!   for that gate (`release` opens the gate named `1`); streams with different gates never
//!   take each other's permits.
//!
//! It listens on plain TCP, or behind TLS with [`FakeUpstream::start_tls`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;

/// What the fake upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The HTTP version the request arrived in (keygate always forwards HTTP/1.1).
    pub version: http::Version,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The running fake upstream.
#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    gates: Arc<Mutex<std::collections::HashMap<String, Arc<Semaphore>>>>,
}

type Body = BoxBody<Bytes, std::io::Error>;

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        Self::start_with(None).await
    }

    /// Starts the fake upstream behind TLS with `cert`/`key` (PEM files), offering the `alpn`
    /// protocols (`h2`, `http/1.1`) in the server's order of preference.
    pub async fn start_tls(cert: &Path, key: &Path, alpn: &[&[u8]]) -> FakeUpstream {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .expect("read upstream cert")
            .collect::<Result<_, _>>()
            .expect("parse upstream cert");
        let key = PrivateKeyDer::from_pem_file(key).expect("read upstream key");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("upstream TLS config");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Self::start_with(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake upstream");
        let addr = listener.local_addr().expect("addr");
        let upstream = FakeUpstream {
            addr,
            received: Arc::default(),
            connections: Arc::default(),
            gates: Arc::default(),
        };
        let server = upstream.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                server
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let server = server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.answer(req).await) }
                    });
                    let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        upstream
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn last(&self) -> Received {
        self.received()
            .pop()
            .expect("the upstream received a request")
    }

    /// Lets `n` more events out of gate `1`.
    pub fn release(&self, n: usize) {
        self.release_gate("1", n);
    }

    /// Lets `n` more events out of the named gate.
    pub fn release_gate(&self, name: &str, n: usize) {
        self.gate(name).add_permits(n);
    }

    fn gate(&self, name: &str) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap();
        Arc::clone(
            gates
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(0))),
        )
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let received = Received {
            method: parts.method.to_string(),
            version: parts.version,
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            body,
        };
        self.received.lock().unwrap().push(received.clone());
        let h = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if h("x-fake-hang").is_some() {
            std::future::pending::<()>().await;
        }
        if let Some(status) = h("x-fake-status").and_then(|s| s.parse::<u16>().ok()) {
            let body =
                json!({"error": {"message": "fake upstream failure", "type": "server_error"}});
            return respond(
                StatusCode::from_u16(status).unwrap(),
                "application/json",
                body.to_string(),
            );
        }
        let request = received.json();
        let path = parts.uri.path();
        let anthropic = path.ends_with("/messages");
        if request["stream"] == json!(true) {
            let events = h("x-fake-events").and_then(|s| s.parse().ok()).unwrap_or(3);
            let plan = StreamPlan {
                events,
                delay: Duration::from_millis(
                    h("x-fake-delay-ms")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0),
                ),
                reset_after: h("x-fake-reset-after").and_then(|s| s.parse().ok()),
                gate: self.gate(h("x-fake-gate").as_deref().unwrap_or("1")),
                gated: h("x-fake-gate").is_some(),
                usage: anthropic || request["stream_options"]["include_usage"] == json!(true),
            };
            return stream(anthropic, plan);
        }
        if path.ends_with("/models") {
            let body = json!({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]});
            return respond(StatusCode::OK, "application/json", body.to_string());
        }
        let body = if anthropic {
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": request["model"],
                "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 13, "output_tokens": 9}})
        } else if path.ends_with("/chat/completions") {
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": request["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
        } else {
            json!({"echo": path})
        };
        respond(StatusCode::OK, "application/json", body.to_string())
    }
}

fn stream(anthropic: bool, plan: StreamPlan) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let gate = Arc::clone(&plan.gate);
    tokio::spawn(async move {
        let events = if anthropic {
            anthropic_events(plan.events)
        } else {
            openai_events(plan.events, plan.usage)
        };
        for (i, event) in events.into_iter().enumerate() {
            if plan.reset_after == Some(i) {
                if let Ok(permit) = gate.acquire().await {
                    permit.forget();
                }
                let _ = tx.send(Err(std::io::Error::other("fake reset"))).await;
                return;
            }
            if plan.gated {
                let Ok(permit) = gate.acquire().await else {
                    return;
                };
                permit.forget();
            } else if i > 0 && !plan.delay.is_zero() {
                tokio::time::sleep(plan.delay).await;
            }
            if tx.send(Ok(Frame::data(Bytes::from(event)))).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Response::new(BodyExt::boxed(ChannelBody(rx)));
    resp.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    resp
}

struct StreamPlan {
    events: usize,
    delay: Duration,
    reset_after: Option<usize>,
    /// Events wait for this gate's permits when `gated`; a reset always waits for one.
    gate: Arc<Semaphore>,
    gated: bool,
    usage: bool,
}

/// An OpenAI chat stream: content chunks, the usage chunk when asked for, then `[DONE]`.
pub fn openai_events(n: usize, usage: bool) -> Vec<String> {
    let mut out: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "data: {}\n\n",
                json!({"id": "c1", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": format!("t{i}")}}]})
            )
        })
        .collect();
    if usage {
        out.push(format!(
            "data: {}\n\n",
            json!({"id": "c1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n}})
        ));
    }
    out.push("data: [DONE]\n\n".into());
    out
}

/// An Anthropic message stream with usage in `message_start` and `message_delta`.
pub fn anthropic_events(n: usize) -> Vec<String> {
    let ev = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut out = vec![
        ev(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "content": [], "model": "claude", "usage": {"input_tokens": 13, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for i in 0..n {
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": format!("t{i}")}}),
        ));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    out.push(ev(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": n}}),
    ));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let full = http_body_util::Full::new(Bytes::from(body)).map_err(|never| match never {});
    let mut resp = Response::new(BodyExt::boxed(full));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    resp
}

/// A body whose frames come from a channel; an `Err` aborts the response mid-body.
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}
