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
//! `TCP_NODELAY` and keep-alive, and TLS) is bounded by the upstream's `connect_timeout`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version, header};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

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

/// TCP keep-alive probes start after this long without traffic.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Where and how to connect: one per upstream, shared by its workers' pools.
pub struct Target {
    /// Host name or IP address (without brackets), for DNS and for TLS's server name.
    host: String,
    port: u16,
    scheme: Scheme,
    authority: Authority,
    /// `Host` of HTTP/1.1 requests: the authority without a default port.
    host_header: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl Target {
    /// The target of `base_url` (absolute, `http` or `https`; validated with the config).
    pub fn new(
        base_url: &Uri,
        tls: Option<Arc<rustls::ClientConfig>>,
        connect_timeout: Duration,
    ) -> Result<Target, String> {
        let scheme = base_url.scheme().cloned().ok_or("base_url has no scheme")?;
        let authority = base_url
            .authority()
            .cloned()
            .ok_or("base_url has no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let https = scheme == Scheme::HTTPS;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = HeaderValue::from_str(match authority.port_u16() {
            Some(p) if p == if https { 443 } else { 80 } => authority.host(),
            _ => authority.as_str(),
        })
        .map_err(|e| e.to_string())?;
        let tls = match (https, tls) {
            (true, Some(config)) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
                Some((TlsConnector::from(config), name))
            }
            (true, None) => return Err("an https upstream needs a TLS client config".into()),
            (false, _) => None,
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            scheme,
            authority,
            host_header,
            tls,
            connect_timeout,
        })
    }
}

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
}

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
            target,
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_made: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
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
        // With no HTTP/2 connection yet, each request of a burst makes its own; the last one
        // made stays shared. (Making waiters share one attempt would also make them share its
        // failure; hyper-util's pool does that, and it was not worth the machinery here.)
        Ok((self.connect().await?, false))
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
            return handshake_h1(stream).await;
        }
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

/// A TCP connection to the first of `host`'s addresses that answers before `deadline`, with
/// `TCP_NODELAY` (small writes must not wait for delayed ACKs) and keep-alive probes. Each
/// address gets an equal share of the time left, so one that drops packets (an unreachable
/// IPv6 route, say) does not use it all up.
async fn tcp_connect(host: &str, port: u16, deadline: Instant) -> std::io::Result<TcpStream> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    let mut last = None;
    for (n, addr) in addrs.iter().enumerate() {
        let left = u32::try_from(addrs.len() - n).unwrap_or(u32::MAX);
        let budget = deadline.saturating_duration_since(Instant::now()) / left;
        match tokio::time::timeout(budget, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                tcp.set_nodelay(true)?;
                let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
                socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
                return Ok(tcp);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{addr}: no answer within {budget:?}"),
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )
    }))
}

async fn handshake_h1<T>(io: T) -> Result<Sender, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(SendError::Handshake)?;
    drive(conn, "HTTP/1.1");
    Ok(Sender::H1(tx))
}

/// Runs a connection's driver on this worker until the connection ends.
fn drive<C>(conn: C, protocol: &'static str)
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, protocol, "upstream connection ended");
        }
    });
}

#[cfg(test)]
mod tests;
