//! The fake LLM upstream of the benchmark harness (`bench/run.sh`): as fast as hyper allows, so
//! that the proxies in front of it are what gets measured.
//!
//! - `POST /v1/chat/completions` answers a canned ~300 B `chat.completion` with `usage`.
//! - The same path with `"stream": true` in the body answers an SSE stream of [`EVENTS`] chunks,
//!   [`EVENT_GAP`] apart (the first at once), then a usage chunk when
//!   `stream_options.include_usage` is set, then `data: [DONE]`. Every chunk carries
//!   `"bench_sent_us"`, the Unix time in µs at which it was written, so a client on the same
//!   machine can tell how long each event spent on its way (`bench_client sse`).
//! - `POST /v1/messages` answers the same in Anthropic's shape: a canned `message` with
//!   `usage`, or with `"stream": true` an SSE stream of `message_start` (input tokens),
//!   [`EVENTS`] `content_block_delta` events [`EVENT_GAP`] apart, `message_delta` (output
//!   tokens) and `message_stop`. The PGO training run (`scripts/pgo-profile.sh`) meters both.
//! - `GET /bench/requests` answers how many requests reached it so far (this one not included):
//!   `{"requests":N,"chat_completions":M,"first_us":F,"last_us":L,"connections":C}`, M of them
//!   to `/v1/chat/completions`, the first of those at Unix µs F and the last at L (0 if none),
//!   over C accepted TCP connections. `POST /bench/reset` sets them all back to 0. The attack scripts (`bench/attack/`) count
//!   with it what got through keygate, and when.
//! - Anything else answers 404.
//!
//! HTTP/1.1 and HTTP/2 (prior knowledge) on one plain port, `TCP_NODELAY` on every accepted
//! socket, tokio's multi-threaded runtime. Run it as
//!
//! ```sh
//! cargo run --release --example bench_upstream -- 127.0.0.1:18001
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Content chunks in a stream, as issue 7 asks.
const EVENTS: usize = 50;
/// Pause between chunks: a fast model's token rate.
const EVENT_GAP: Duration = Duration::from_millis(5);

/// The canned completion (about 300 bytes), with the `usage` that keygate meters.
const COMPLETION: &str = r#"{"id":"chatcmpl-bench0000000000000001","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":9,"total_tokens":20},"system_fingerprint":"fp_bench"}"#;

/// The canned Anthropic message, with its `usage`.
const MESSAGE: &str = r#"{"id":"msg_bench0000000000000001","type":"message","role":"assistant","model":"claude-sonnet-4","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"output_tokens":9}}"#;

/// The API whose shape an answer takes.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    OpenAi,
    Anthropic,
}

type Body = Either<Full<Bytes>, ChannelBody>;

/// Requests that reached [`answer`], `GET /bench/requests` aside.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Of those, requests to `/v1/chat/completions`, whatever their method.
static CHAT_REQUESTS: AtomicU64 = AtomicU64::new(0);
/// Unix µs of the first and the last of them (0: none yet).
static CHAT_FIRST_US: AtomicU64 = AtomicU64::new(0);
static CHAT_LAST_US: AtomicU64 = AtomicU64::new(0);
/// TCP connections accepted.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18001".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!("bench_upstream listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, most likely: wait a little rather than spin.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    })
}

async fn answer(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/bench/requests" {
        let counts = format!(
            r#"{{"requests":{},"chat_completions":{},"first_us":{},"last_us":{},"connections":{}}}"#,
            REQUESTS.load(Ordering::Relaxed),
            CHAT_REQUESTS.load(Ordering::Relaxed),
            CHAT_FIRST_US.load(Ordering::Relaxed),
            CHAT_LAST_US.load(Ordering::Relaxed),
            CONNECTIONS.load(Ordering::Relaxed)
        );
        return Ok(full(StatusCode::OK, "application/json", counts.into()));
    }
    if req.method() == Method::POST && req.uri().path() == "/bench/reset" {
        for counter in [
            &REQUESTS,
            &CHAT_REQUESTS,
            &CHAT_FIRST_US,
            &CHAT_LAST_US,
            &CONNECTIONS,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
        return Ok(full(StatusCode::OK, "application/json", "{}".into()));
    }
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    if req.uri().path() == "/v1/chat/completions" {
        CHAT_REQUESTS.fetch_add(1, Ordering::Relaxed);
        let now = unix_us() as u64;
        let _ = CHAT_FIRST_US.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        CHAT_LAST_US.fetch_max(now, Ordering::Relaxed);
    }
    let api = match req.uri().path() {
        "/v1/chat/completions" => Api::OpenAi,
        "/v1/messages" => Api::Anthropic,
        _ => return Ok(full(StatusCode::NOT_FOUND, "application/json", "{}".into())),
    };
    if req.method() != Method::POST {
        return Ok(full(StatusCode::NOT_FOUND, "application/json", "{}".into()));
    }
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Ok(full(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "bad body".into(),
            ));
        }
    };
    // Only a body that mentions "stream" is parsed: the plain completion stays cheap.
    if memchr::memmem::find(&body, b"\"stream\"").is_some() {
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if value["stream"] == serde_json::Value::Bool(true) {
            let usage = value["stream_options"]["include_usage"] == serde_json::Value::Bool(true);
            return Ok(stream(api, usage));
        }
    }
    let canned = match api {
        Api::OpenAi => COMPLETION,
        Api::Anthropic => MESSAGE,
    };
    Ok(full(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(canned.as_bytes()),
    ))
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

fn unix_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// A streamed answer in `api`'s shape; `usage`: OpenAI's usage chunk was asked for (Anthropic's
/// streams always carry their usage).
fn stream(api: Api, usage: bool) -> Response<Body> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        if api == Api::Anthropic && tx.send(Bytes::from_static(ANTHROPIC_HEAD)).await.is_err() {
            return;
        }
        for i in 0..EVENTS {
            // Paced from the start, so a late wake-up does not push every later event back.
            // The first goes at once: even a zero sleep waits for the timer's next 1 ms tick.
            if i > 0 {
                tokio::time::sleep_until(start + EVENT_GAP * i as u32).await;
            }
            if tx.send(Bytes::from(delta(api, i))).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Bytes::from(tail(api, usage))).await;
    });
    let mut resp = Response::new(Either::Right(ChannelBody(rx)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// What an Anthropic stream sends before its first delta.
const ANTHROPIC_HEAD: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";

/// Content event `i`, stamped with the time it is written.
fn delta(api: Api, i: usize) -> String {
    match api {
        Api::OpenAi => format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}],\"bench_sent_us\":{}}}\n\n",
            unix_us()
        ),
        Api::Anthropic => format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"tok{i} \"}},\"bench_sent_us\":{}}}\n\n",
            unix_us()
        ),
    }
}

/// What a stream sends after its last delta: the usage (OpenAI's only if asked for) and the end.
fn tail(api: Api, usage: bool) -> String {
    match api {
        Api::OpenAi => {
            let mut tail = String::new();
            if usage {
                tail.push_str(&format!(
                    "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":11,\"completion_tokens\":{EVENTS},\"total_tokens\":{}}},\"bench_sent_us\":{}}}\n\n",
                    11 + EVENTS,
                    unix_us()
                ));
            }
            tail.push_str("data: [DONE]\n\n");
            tail
        }
        Api::Anthropic => format!(
            "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\nevent: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{EVENTS}}}}}\n\nevent: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        ),
    }
}

/// A response body whose chunks come from a channel, each sent as soon as it is written.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}
