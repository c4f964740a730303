//! The pool against a local HTTP/1.1 server: reuse, expiry, a body not read to its end, and a
//! request sent again after a reused connection refused it; the shared HTTP/2 slot: expiry, a
//! closed connection, a failure clearing only its own connection; and the relay's hold on its
//! connection: back at the end of the body (or when an empty body is dropped), never after the
//! client left or the upstream went quiet part way; and the attempt a burst to a maybe-HTTP/2
//! upstream shares: one for all, its failure theirs, outliving the request that started it.

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper::service::service_fn;
use tokio::net::TcpListener;

use super::*;
use crate::config::ErrorStyle;
use crate::proxy::body::{Relay, ResponseBody, StreamEnd, Tap};
use http::HeaderValue;

/// A server answering `/short` with a 2-byte body, `/empty` with none, `/long` with two chunks
/// and `/stall` with one chunk and then silence; counts the connections and requests it gets.
struct Server {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (Arc::clone(&connections), Arc::clone(&requests));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let r = Arc::clone(&r);
            let service = service_fn(move |req: Request<Incoming>| {
                r.fetch_add(1, Ordering::SeqCst);
                let path = req.uri().path().to_owned();
                async move {
                    let body = match path.as_str() {
                        "/long" => Chunks::new(&["ab", "cd"], false).boxed(),
                        "/empty" => Full::new(Bytes::new()).boxed(),
                        "/stall" => Chunks::new(&["ab"], true).boxed(),
                        _ => Full::new(Bytes::from("ok")).boxed(),
                    };
                    Ok::<_, Infallible>(Response::new(body))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service),
            );
        }
    });
    Server {
        addr,
        connections,
        requests,
    }
}

/// A body of unknown length (sent chunked): its chunks, then the end or (`stall`) nothing more,
/// ever.
struct Chunks {
    rest: std::collections::VecDeque<Bytes>,
    stall: bool,
}

impl Chunks {
    fn new(chunks: &[&'static str], stall: bool) -> Chunks {
        let rest = chunks.iter().map(|c| Bytes::from_static(c.as_bytes()));
        Chunks {
            rest: rest.collect(),
            stall,
        }
    }
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.rest.pop_front() {
            Some(chunk) => std::task::Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None if self.stall => std::task::Poll::Pending,
            None => std::task::Poll::Ready(None),
        }
    }
}

fn pool(addr: std::net::SocketAddr) -> Arc<Pool> {
    let base: Uri = format!("http://{addr}").parse().expect("uri");
    let target = Target::new(&base, None, Duration::from_secs(5)).expect("target");
    Arc::new(Pool::new(Arc::new(target)))
}

fn get() -> Request<RequestBody> {
    Request::new(RequestBody::empty())
}

/// Sends GET `path` and reads the whole body, returning the lease as the relay would.
async fn exchange(pool: &Arc<Pool>, path: &'static str) -> Bytes {
    let (resp, lease) = pool
        .send(get(), PathAndQuery::from_static(path))
        .await
        .expect("sent");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    if let Some(lease) = lease {
        lease.release();
    }
    body
}

fn idle(pool: &Pool) -> usize {
    pool.lock_idle().len()
}

#[tokio::test]
async fn a_connection_is_reused_and_expires_after_the_idle_timeout() {
    let s = server().await;
    let pool = pool(s.addr);
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(exchange(&pool, "/long").await, "abcd");
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(s.connections.load(Ordering::SeqCst), 1, "one connection");
    assert_eq!(idle(&pool), 1);

    // Not yet: a sweep well short of the timeout keeps it.
    pool.sweep(Instant::now() + IDLE_TIMEOUT / 2);
    assert_eq!(idle(&pool), 1);
    // A checkout past the timeout does not hand it out, and drops it.
    assert!(pool.pop_idle(Instant::now() + IDLE_TIMEOUT).is_none());
    assert_eq!(idle(&pool), 0);
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        2,
        "a fresh connection"
    );
    // The sweep closes it too.
    pool.sweep(Instant::now() + IDLE_TIMEOUT);
    assert_eq!(idle(&pool), 0);
}

#[tokio::test]
async fn a_body_left_unread_does_not_return_its_connection() {
    let s = server().await;
    let pool = pool(s.addr);
    let (resp, lease) = pool
        .send(get(), PathAndQuery::from_static("/long"))
        .await
        .expect("sent");
    assert!(lease.is_some(), "the body was still to come");
    drop((resp, lease));
    assert_eq!(idle(&pool), 0);
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_refused_by_a_reused_connection_is_sent_on_another() {
    let s = server().await;
    let pool = pool(s.addr);
    // A pooled connection whose far end has just gone, before its driver noticed.
    let (near, far) = tokio::io::duplex(1024);
    let (mut tx, conn) = http1::handshake::<_, RequestBody>(TokioIo::new(near))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    tx.ready().await.expect("ready");
    pool.lock_idle().push((tx, Instant::now()));
    drop(far);

    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(
        s.requests.load(Ordering::SeqCst),
        1,
        "sent once, on a new connection"
    );
    assert_eq!(s.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_refused_connect_is_a_connect_error() {
    // A port nothing listens on: bind one, then free it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let err = pool(addr)
        .send(get(), PathAndQuery::from_static("/"))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(&err, SendError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err}"
    );
}

#[test]
fn the_host_header_leaves_out_a_default_port() {
    let host = |url: &str| {
        let base: Uri = url.parse().expect("uri");
        let tls = Arc::new(
            rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        );
        let t = Target::new(&base, Some(tls), Duration::from_secs(1)).expect("target");
        (t.host_header, t.host, t.port)
    };
    assert_eq!(
        host("https://api.openai.com"),
        (
            HeaderValue::from_static("api.openai.com"),
            "api.openai.com".into(),
            443
        )
    );
    assert_eq!(
        host("https://api.openai.com:443/v1"),
        (
            HeaderValue::from_static("api.openai.com"),
            "api.openai.com".into(),
            443
        )
    );
    assert_eq!(
        host("http://10.0.0.1:8080"),
        (
            HeaderValue::from_static("10.0.0.1:8080"),
            "10.0.0.1".into(),
            8080
        )
    );
    assert_eq!(
        host("http://[::1]:80"),
        (HeaderValue::from_static("[::1]"), "::1".into(), 80)
    );
}

/// A pool whose shared HTTP/2 slot holds a connection over an in-memory pipe (the far end
/// is kept, unanswered: the slot logic does not need a server).
async fn with_h2(id: u64) -> (Arc<Pool>, tokio::io::DuplexStream) {
    let (near, far) = tokio::io::duplex(64 * 1024);
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake::<_, RequestBody>(TokioIo::new(near))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let pool = pool("127.0.0.1:9".parse().expect("addr"));
    *pool.lock_h2() = Some(Shared {
        tx,
        id,
        used: Instant::now(),
    });
    (pool, far)
}

#[tokio::test]
async fn the_shared_http2_connection_expires_unused_and_is_cleared_only_by_its_own_failure() {
    let (pool, _far) = with_h2(7).await;
    let start = Instant::now();
    let half = start + IDLE_TIMEOUT / 2;
    assert_eq!(pool.live_h2(half, true).map(|(_, id)| id), Some(7));
    // Used at `half`: still live a little past `start + IDLE_TIMEOUT`...
    let later = start + IDLE_TIMEOUT + Duration::from_secs(1);
    assert_eq!(pool.live_h2(later, false).map(|(_, id)| id), Some(7));
    // ...but not IDLE_TIMEOUT after its last use.
    assert!(pool.live_h2(half + IDLE_TIMEOUT, false).is_none());
    assert!(
        pool.lock_h2().is_none(),
        "the expired connection left the slot"
    );

    let (pool, _far) = with_h2(3).await;
    pool.forget_h2(2);
    assert!(
        pool.lock_h2().is_some(),
        "another connection's failure leaves it"
    );
    pool.forget_h2(3);
    assert!(pool.lock_h2().is_none());
}

#[tokio::test]
async fn a_closed_http2_connection_is_not_handed_out() {
    let (pool, far) = with_h2(1).await;
    drop(far);
    // Its driver sees the pipe close and ends; the sender then reports closed.
    let closed = async {
        while !pool.lock_h2().as_ref().is_some_and(|s| s.tx.is_closed()) {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the connection closed");
    assert!(pool.live_h2(Instant::now(), true).is_none());
    assert!(pool.lock_h2().is_none());
}

/// A tap that records how the relayed stream ended.
struct Ended(Arc<Mutex<Option<StreamEnd>>>);

impl Tap for Ended {
    fn data(&mut self, chunk: Bytes) -> Option<Bytes> {
        Some(chunk)
    }

    fn end(&mut self, outcome: StreamEnd) -> Option<Bytes> {
        *self.0.lock().expect("tap lock") = Some(outcome);
        None
    }
}

/// GET `path` relayed as the forwarder relays it (the lease returned at the end), with `idle`
/// as the upstream timeout; also says whether the connection was leased to the body.
async fn relayed(
    pool: &Arc<Pool>,
    path: &'static str,
    idle: Duration,
) -> (ResponseBody, Arc<Mutex<Option<StreamEnd>>>, bool) {
    let (resp, lease) = pool
        .send(get(), PathAndQuery::from_static(path))
        .await
        .expect("sent");
    let ended = Arc::new(Mutex::new(None));
    let tap = Box::new(Ended(Arc::clone(&ended)));
    let mut relay = Relay::new(
        resp.into_body(),
        idle,
        false,
        false,
        ErrorStyle::OpenAi,
        Arc::from("req_test"),
        Some(tap),
    );
    let leased = lease.is_some();
    if let Some(lease) = lease {
        relay.return_on_end(lease);
    }
    (ResponseBody::Upstream(Box::new(relay)), ended, leased)
}

/// Waits (up to 5 s) for a connection to be back in the pool.
async fn until_pooled(pool: &Pool) {
    let back = async {
        while idle(pool) == 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), back)
        .await
        .expect("the connection went back to the pool");
}

fn outcome(ended: &Mutex<Option<StreamEnd>>) -> Option<StreamEnd> {
    *ended.lock().expect("tap lock")
}

#[tokio::test]
async fn a_relayed_body_read_to_its_end_returns_its_connection() {
    let s = server().await;
    let pool = pool(s.addr);
    let (mut body, ended, leased) = relayed(&pool, "/long", Duration::from_secs(60)).await;
    assert!(leased, "a chunked body was still to come");
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        read.extend_from_slice(&frame.expect("frame").into_data().expect("data"));
    }
    assert_eq!(read, b"abcd");
    assert_eq!(outcome(&ended), Some(StreamEnd::Complete));
    // Back at the end of the body, not only when the relay is dropped.
    until_pooled(&pool).await;
    drop(body);
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(s.connections.load(Ordering::SeqCst), 1, "reused");
}

#[tokio::test]
async fn an_empty_relayed_body_returns_its_connection_even_unpolled() {
    let s = server().await;
    let pool = pool(s.addr);
    for _ in 0..3 {
        // Whether the pool took the connection back with the head or the relay holds it until
        // its (empty) body is dropped depends on when hyper's driver ran; either way, a body
        // that hyper never polls (it is already at its end) must not keep the connection.
        let (body, _, _) = relayed(&pool, "/empty", Duration::from_secs(60)).await;
        drop(body);
        until_pooled(&pool).await;
    }
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(s.connections.load(Ordering::SeqCst), 1, "reused");
}

#[tokio::test]
async fn a_relayed_body_the_client_left_keeps_its_connection_out_of_the_pool() {
    let s = server().await;
    let pool = pool(s.addr);
    let (mut body, ended, _) = relayed(&pool, "/long", Duration::from_secs(60)).await;
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().expect("data"), "ab");
    drop(body);
    assert_eq!(outcome(&ended), Some(StreamEnd::ClientGone));
    assert_eq!(idle(&pool), 0, "the rest of the body is still on the wire");
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_relayed_body_that_stalls_times_out_and_keeps_its_connection_out_of_the_pool() {
    let s = server().await;
    let pool = pool(s.addr);
    let (mut body, ended, _) = relayed(&pool, "/stall", Duration::from_secs(60)).await;
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().expect("data"), "ab");
    // Nothing more comes: with the clock paused, tokio jumps to the upstream timeout.
    tokio::time::pause();
    let failed = body.frame().await.expect("an end");
    assert!(failed.is_err(), "a JSON body ends in an error");
    tokio::time::resume();
    assert_eq!(outcome(&ended), Some(StreamEnd::UpstreamFailed));
    drop(body);
    assert_eq!(idle(&pool), 0);
    assert_eq!(exchange(&pool, "/short").await, "ok");
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}

/// An `https` pool for `addr` trusting no one (no test here gets as far as a certificate).
fn tls_pool(addr: std::net::SocketAddr) -> Arc<Pool> {
    let tls = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let base: Uri = format!("https://{addr}").parse().expect("uri");
    let target = Target::new(&base, Some(Arc::new(tls)), Duration::from_secs(5)).expect("target");
    Arc::new(Pool::new(Arc::new(target)))
}

#[tokio::test]
async fn requests_waiting_on_a_connection_that_may_be_http2_share_its_failure() {
    // Accepts and at once closes: every TLS handshake fails.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    let pool = tls_pool(addr);
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let pool = Arc::clone(&pool);
        burst.spawn(async move { pool.send(get(), PathAndQuery::from_static("/")).await });
    }
    while let Some(sent) = burst.join_next().await {
        let failed = sent.expect("task").err().expect("no TLS upstream there");
        assert!(matches!(failed, SendError::Connect(_)), "{failed:?}");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one attempt served the burst"
    );

    // A later request does not inherit that failure: it tries again.
    assert!(
        pool.send(get(), PathAndQuery::from_static("/"))
            .await
            .is_err()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_shared_attempt_outlives_the_request_that_started_it() {
    // Accepts and holds every connection until told to close them: the TLS handshakes wait.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let (close, closing) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let mut closing = closing.clone();
            tokio::spawn(async move {
                let _held = tcp;
                let _ = closing.wait_for(|close| *close).await;
            });
        }
    });
    let pool = tls_pool(addr);
    let send = |pool: &Arc<Pool>| {
        let pool = Arc::clone(pool);
        tokio::spawn(async move { pool.send(get(), PathAndQuery::from_static("/")).await })
    };
    let first = send(&pool);
    while accepted.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let waiting: Vec<_> = (0..3).map(|_| send(&pool)).collect();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    // The request that started the attempt goes away (its client left, say).
    first.abort();
    assert!(matches!(first.await, Err(e) if e.is_cancelled()));
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the waiters still wait on the first attempt"
    );
    close.send_replace(true);
    for waiter in waiting {
        let failed = waiter.await.expect("task").err().expect("no TLS there");
        assert!(matches!(failed, SendError::Connect(_)), "{failed:?}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one attempt in all");
}
