//! Connections to one upstream, pooled per data-plane worker on hyper's connection-level client.
//!
//! A worker's [`Pool`] keeps its idle HTTP/1.1 connections (newest last, closed after
//! [`IDLE_TIMEOUT`] unused) and, when the upstream chose `h2` by ALPN, one shared HTTP/2
//! connection (closed after [`IDLE_TIMEOUT`] without a new request, pinged while requests are
//! in flight). An HTTP/1.1 connection goes back to the pool when its response body has been
//! read to the end (through a [`Lease`] the relayed body holds), never when the body was cut
//! short or the upstream framed it ambiguously (`Content-Length` with `Transfer-Encoding`).
//! A request that a reused connection refused before writing it (the upstream had just closed
//! it) is sent again; a fresh connection's failure is final. Connecting (DNS, TCP with
//! `TCP_NODELAY` and keep-alive, and TLS) is bounded by the upstream's `connect_timeout`. While
//! an upstream speaks HTTP/2, or may (over TLS, until its first connection tells), requests
//! that find no connection wait for one attempt to serve them all, and share its failure; the
//! attempt runs as a task of its own, so a waiter that gives up does not cut it short.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;

pub use self::connect::Target;
use self::connect::{chain, drive, handshake_h1, kind, tcp_connect};
use super::body::RequestBody;

/// Idle connections are closed after this long: shorter than the idle timeouts of common LLM
/// APIs (about 90 s), so keygate never reuses a connection the far end is just closing.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Idle HTTP/1.1 connections kept per upstream and worker: enough for bursts on 32+ parallel
/// clients.
const MAX_IDLE: usize = 256;

/// How often idle connections are checked for expiry (checkout checks exactly; this only
/// bounds how long an unused connection stays open past [`IDLE_TIMEOUT`]).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// An HTTP/2 connection with streams in flight is pinged after this long without a frame...
const H2_PING_EVERY: Duration = Duration::from_secs(30);
/// ...and closed when the ping is not answered within this.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a request could not be sent, or got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// DNS, TCP or TLS failed, or took longer than `connect_timeout` (kind `TimedOut`).
    #[error("connect failed")]
    Connect(#[source] std::io::Error),
    #[error("HTTP handshake failed")]
    Handshake(#[source] hyper::Error),
    /// The exchange failed: the source says why (the request body's own error among them).
    #[error("exchange failed")]
    Send(#[source] hyper::Error),
}

/// One worker's connections to one upstream.
pub struct Pool {
    target: Arc<Target>,
    /// Idle HTTP/1.1 connections, each with the time it became idle; newest last.
    idle: Mutex<Vec<(http1::SendRequest<RequestBody>, Instant)>>,
    /// The shared HTTP/2 connection, once the upstream chose `h2`.
    h2: Mutex<Option<Shared>>,
    /// Numbers the HTTP/2 connections, so a failure clears the slot only of its own.
    h2_made: AtomicU64,
    /// The sweeping task runs (started with the first connection, on this worker's runtime).
    sweeping: AtomicBool,
    /// What the upstream speaks ([`UNKNOWN`], [`H1`] or [`H2`]): a TLS upstream tells with its
    /// first connection (ALPN), a plain one speaks HTTP/1.1.
    protocol: AtomicU8,
    /// The connection being made while the upstream speaks HTTP/2, or may: the requests that
    /// find no live connection meanwhile wait for its end instead of each making their own.
    attempt: Mutex<Option<watch::Receiver<Option<Attempt>>>>,
}

/// How a shared connection attempt ended: it left a connection (the shared HTTP/2 one, or an
/// idle HTTP/1.1 one), or failed with this kind and text (for each request that waited on it).
type Attempt = Result<(), (std::io::ErrorKind, String)>;

const UNKNOWN: u8 = 0;
const H1: u8 = 1;
const H2: u8 = 2;

/// An HTTP/1.1 connection lent to one exchange. [`Lease::release`] returns it once the response
/// body has been read to its end; dropped instead, the connection closes.
pub struct Lease {
    pool: Arc<Pool>,
    sender: http1::SendRequest<RequestBody>,
}

impl Lease {
    pub fn release(self) {
        let Lease { pool, mut sender } = self;
        if sender.is_ready() {
            pool.put(sender);
        } else if !sender.is_closed() {
            // Its driver has not yet seen the exchange end (or the request body is still going
            // out): it rejoins the pool once it is free, and no checkout ever waits for it.
            tokio::spawn(async move {
                if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await {
                    pool.put(sender);
                }
            });
        }
    }
}

/// The shared HTTP/2 connection.
struct Shared {
    tx: http2::SendRequest<RequestBody>,
    id: u64,
    /// When a request last started on it: it closes after [`IDLE_TIMEOUT`] unused.
    used: Instant,
}

enum Sender {
    H1(http1::SendRequest<RequestBody>),
    /// With the connection's number.
    H2(http2::SendRequest<RequestBody>, u64),
}

impl Pool {
    pub fn new(target: Arc<Target>) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_made: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
            protocol: AtomicU8::new(if target.tls.is_some() { UNKNOWN } else { H1 }),
            attempt: Mutex::new(None),
            target,
        }
    }

    /// Sends `req` (its headers ready, its URI set here) for `path`, on an idle connection when
    /// there is one. An HTTP/1.1 response whose body is still to come carries a [`Lease`].
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        path: PathAndQuery,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        loop {
            let (sender, reused) = self.checkout().await?;
            let mut refused = match sender {
                Sender::H1(mut tx) => {
                    *req.uri_mut() = Uri::from(path.clone());
                    *req.version_mut() = Version::HTTP_11;
                    let host = self.target.host_header.clone();
                    req.headers_mut().insert(header::HOST, host);
                    match tx.try_send_request(req).await {
                        // hyper framed the body by its transfer coding, but an upstream that
                        // also sent a length is confused or hostile: its connection is not
                        // used again.
                        Ok(resp) if ambiguous(resp.headers()) => return Ok((resp, None)),
                        Ok(resp) if tx.is_ready() => {
                            // The whole body came with the head: the connection is free now.
                            self.put(tx);
                            return Ok((resp, None));
                        }
                        Ok(resp) => {
                            let lease = Lease {
                                pool: Arc::clone(self),
                                sender: tx,
                            };
                            return Ok((resp, Some(lease)));
                        }
                        Err(e) => e,
                    }
                }
                Sender::H2(mut tx, id) => {
                    let mut uri = http::uri::Parts::default();
                    uri.scheme = Some(self.target.scheme.clone());
                    uri.authority = Some(self.target.authority.clone());
                    uri.path_and_query = Some(path.clone());
                    *req.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path");
                    *req.version_mut() = Version::HTTP_2;
                    req.headers_mut().remove(header::HOST);
                    match tx.try_send_request(req).await {
                        Ok(resp) => return Ok((resp, None)),
                        Err(e) => {
                            // One stream's failure (a reset, a bad request body) leaves the
                            // connection to the others; one that is closed, or that refused a
                            // request unsent (it is going away), is not handed out again.
                            if tx.is_closed() || e.message().is_some() {
                                self.forget_h2(id);
                            }
                            e
                        }
                    }
                }
            };
            match refused.take_message() {
                // Refused before a byte of it was written: safe to send again, on another
                // connection. A fresh connection's refusal is final.
                Some(again) if reused => {
                    tracing::debug!(error = %refused.error(), "pooled upstream connection closed; sending again");
                    req = again;
                }
                _ => return Err(SendError::Send(refused.into_error())),
            }
        }
    }

    /// A connection to send on, and whether it served an exchange before.
    async fn checkout(self: &Arc<Self>) -> Result<(Sender, bool), SendError> {
        let now = Instant::now();
        if let Some((tx, id)) = self.live_h2(now, true) {
            return Ok((Sender::H2(tx, id), true));
        }
        while let Some(tx) = self.pop_idle(now) {
            // Pooled only when ready; since then its far end may have closed it.
            if tx.is_ready() {
                return Ok((Sender::H1(tx), true));
            }
        }
        if self.protocol.load(Ordering::Relaxed) == H1 {
            return Ok((self.connect().await?, false));
        }
        // The upstream speaks HTTP/2, or may (over TLS, until a connection has told): a burst
        // waits for one attempt to serve it all. Once an upstream has answered in HTTP/1.1,
        // its requests connect side by side again.
        let mut ended = self.join_attempt();
        let outcome = match ended.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            // The task ended without saying how (it panicked, or its runtime is shutting down).
            Err(_) => Some(Err((
                std::io::ErrorKind::Interrupted,
                "the connection attempt was abandoned".to_owned(),
            ))),
        };
        if let Some(Err((kind, text))) = outcome {
            return Err(SendError::Connect(std::io::Error::new(kind, text)));
        }
        // A fresh connection either way: its refusal is final.
        if let Some((tx, id)) = self.live_h2(Instant::now(), true) {
            return Ok((Sender::H2(tx, id), false));
        }
        if let Some(tx) = self.pop_idle(Instant::now()).filter(|tx| tx.is_ready()) {
            return Ok((Sender::H1(tx), false));
        }
        // The attempt's connection went to another waiter, or closed at once: this request
        // makes its own rather than start another round.
        Ok((self.connect().await?, false))
    }

    /// The shared attempt under way, or a new one: a task that connects, leaves its connection
    /// in the pool and says how it ended.
    fn join_attempt(self: &Arc<Self>) -> watch::Receiver<Option<Attempt>> {
        let mut slot = self
            .attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(running) = slot.as_ref()
            && running.borrow().is_none()
            && running.has_changed().is_ok()
        {
            return running.clone();
        }
        let (report, ended) = watch::channel(None);
        *slot = Some(ended.clone());
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let outcome = match pool.connect().await {
                Ok(Sender::H1(mut tx)) => {
                    // Pooled once its driver runs and wants a request, like every idle one.
                    if tx.ready().await.is_ok() {
                        pool.put(tx);
                    }
                    Ok(())
                }
                Ok(Sender::H2(..)) => Ok(()),
                Err(e) => Err((kind(&e), chain(&e))),
            };
            report.send_replace(Some(outcome));
        });
        ended
    }

    /// The HTTP/2 connection, unless there is none, it closed, or it went unused for
    /// [`IDLE_TIMEOUT`] at `now`; `take` marks it used.
    fn live_h2(&self, now: Instant, take: bool) -> Option<(http2::SendRequest<RequestBody>, u64)> {
        let mut slot = self.lock_h2();
        let shared = slot.as_mut()?;
        if shared.tx.is_closed() || now.duration_since(shared.used) >= IDLE_TIMEOUT {
            // Dropped here, it closes once its streams in flight are done.
            *slot = None;
            return None;
        }
        if take {
            shared.used = now;
        }
        Some((shared.tx.clone(), shared.id))
    }

    /// Clears the shared slot if it still holds connection `id`.
    fn forget_h2(&self, id: u64) {
        let mut slot = self.lock_h2();
        if slot.as_ref().is_some_and(|s| s.id == id) {
            *slot = None;
        }
    }

    fn lock_h2(&self) -> std::sync::MutexGuard<'_, Option<Shared>> {
        // The slot is replaced whole; a panic elsewhere cannot leave it half-written.
        self.h2
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_idle(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<(http1::SendRequest<RequestBody>, Instant)>> {
        // Pushes and pops only; a panic elsewhere cannot leave the list half-written.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest idle connection that has not been idle too long at `now`.
    fn pop_idle(&self, now: Instant) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.lock_idle();
        let (tx, since) = idle.pop()?;
        if now.duration_since(since) < IDLE_TIMEOUT {
            Some(tx)
        } else {
            // Newest last: every other one has been idle even longer.
            idle.clear();
            None
        }
    }

    /// Takes back a connection whose exchange is over.
    fn put(&self, tx: http1::SendRequest<RequestBody>) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE {
            idle.push((tx, Instant::now()));
        }
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`] at `now`, and forgets the
    /// closed ones.
    fn sweep(&self, now: Instant) {
        self.lock_idle()
            .retain(|(tx, since)| now.duration_since(*since) < IDLE_TIMEOUT && !tx.is_closed());
        self.live_h2(now, false);
    }

    /// A new connection: HTTP/2 when TLS's ALPN chose `h2` (it then becomes the shared one),
    /// else HTTP/1.1. Its driving task, and the pool's sweeper, run on this worker.
    async fn connect(self: &Arc<Self>) -> Result<Sender, SendError> {
        if !self.sweeping.swap(true, Ordering::Relaxed) {
            tokio::spawn(sweep_every(Arc::downgrade(self), SWEEP_EVERY));
        }
        let t = &self.target;
        let timed_out = || {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", t.connect_timeout),
            )
        };
        let deadline = Instant::now() + t.connect_timeout;
        let tcp = tokio::time::timeout_at(deadline, tcp_connect(&t.host, t.port, deadline))
            .await
            .map_err(|_| SendError::Connect(timed_out()))?
            .map_err(SendError::Connect)?;
        let Some((tls, name)) = &t.tls else {
            return handshake_h1(tcp).await;
        };
        let stream = tokio::time::timeout_at(deadline, tls.connect(name.clone(), tcp))
            .await
            .map_err(|_| SendError::Connect(timed_out()))?
            .map_err(SendError::Connect)?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            self.protocol.store(H1, Ordering::Relaxed);
            return handshake_h1(stream).await;
        }
        self.protocol.store(H2, Ordering::Relaxed);
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // A connection that went silent fails its streams instead of holding them until
            // the upstream timeout; an idle one is not pinged (it expires instead).
            .keep_alive_interval(H2_PING_EVERY)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Handshake)?;
        drive(conn, "HTTP/2");
        let id = self.h2_made.fetch_add(1, Ordering::Relaxed);
        *self.lock_h2() = Some(Shared {
            tx: tx.clone(),
            id,
            used: Instant::now(),
        });
        Ok(Sender::H2(tx, id))
    }
}

/// Both `Transfer-Encoding` and `Content-Length`: the pool drops such a connection, and the
/// forwarder drops the stale length.
pub fn ambiguous(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) && headers.contains_key(header::CONTENT_LENGTH)
}

/// Sweeps `pool` every `period` for as long as it is in use (a reload that replaces the pool
/// drops the last strong reference).
async fn sweep_every(pool: Weak<Pool>, period: Duration) {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.sweep(Instant::now());
    }
}

mod connect;
#[cfg(test)]
mod tests;
