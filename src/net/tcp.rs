//! Data-plane listeners: accept TCP connections (plain or TLS) and serve HTTP/1.1 and HTTP/2 on
//! them with hyper-util's auto builder.
//!
//! The accept loop takes a connection permit before accepting, so past `server.max_connections`
//! new connections wait in the kernel's backlog instead of being refused; accept errors back
//! off. Accepted sockets get `TCP_NODELAY`. TLS handshakes are bounded by
//! `server.tls_handshake_timeout`. The builder is given a timer, so the header-read timeout is
//! really on. On shutdown the loop stops accepting and open connections are drained gracefully
//! until the caller's deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::Backoff;
use super::idle::{Activity, Tracked};
use crate::app::App;
use crate::config::Server;
use crate::proxy::{self, Conn};

/// HTTP/2 pings keep idle-but-open connections honest behind NATs and find dead peers.
const H2_KEEPALIVE: Duration = Duration::from_secs(30);
/// Streams a peer may reset before their handlers ran: the rapid-reset (CVE-2023-44487) guard.
const H2_MAX_PENDING_RESETS: usize = 20;
/// Resets keygate itself may have to send, per connection, before it closes it. (Streams reset
/// after acceptance are cancelled before their handler works: see the service in [`serve`].)
const H2_MAX_LOCAL_RESETS: usize = 256;

/// The accept queue of each listening socket (tokio's own default).
const LISTEN_BACKLOG: u32 = 1024;

/// A bound data-plane listening socket, not yet tied to a runtime: the worker that serves it
/// registers it with its own.
pub struct DataListener {
    pub listener: std::net::TcpListener,
    pub addr: SocketAddr,
    /// `Some` for TLS: the acceptor resolving certificates from the live config.
    pub tls: Option<TlsAcceptor>,
    /// The data-plane worker ([`super::workers`]) that serves this socket.
    pub worker: usize,
}

/// The HTTP builder for data-plane connections, from `[server]`.
pub fn builder(server: &Server) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes)
        .max_headers(server.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(server.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS)
        .keep_alive_interval(H2_KEEPALIVE)
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serves `listener` until `stop` turns true, then waits up to `grace` for open connections.
pub async fn serve(
    listener: DataListener,
    app: Arc<App>,
    permits: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut backoff = Backoff::new();
    let name = listener.addr.to_string();
    let accepting = match TcpListener::from_std(listener.listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "cannot serve a data-plane socket");
            return;
        }
    };
    loop {
        let permit = tokio::select! {
            _ = super::stopped(&mut stop) => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = super::stopped(&mut stop) => break,
            accepted = accepting.accept() => match accepted {
                Ok(a) => { backoff.reset(); a }
                Err(e) => { backoff.wait(&name, &e).await; continue; }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let tls = listener.tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let config = app.config();
            let conn = Conn {
                peer,
                tls: tls.is_some(),
            };
            let builder = builder(&config.server);
            let activity = Activity::new();
            let idle = config.server.idle_timeout;
            let counted = Arc::clone(&activity);
            let service = service_fn(move |req| {
                let app = Arc::clone(&app);
                let in_flight = counted.begin();
                async move {
                    if req.version() == http::Version::HTTP_2 {
                        // hyper checks a stream for a reset only while its handler is pending:
                        // pending once first lets a RST_STREAM that came with the request cancel
                        // it before any work (else each reset cost an upstream connect).
                        tokio::task::yield_now().await;
                    }
                    let resp = proxy::handle(app, conn, req).await;
                    Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked::new(b, in_flight)))
                }
            });
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        _ = activity.idle_for(idle) => Ok(()),
                    }
                }
                Some(acceptor) => {
                    let Some(tls_stream) =
                        handshake(acceptor, stream, config.server.tls_handshake_timeout, peer)
                            .await
                    else {
                        return;
                    };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        _ = activity.idle_for(idle) => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(accepting);
    graceful.shutdown().await;
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Binds every configured data-plane listener, `workers` sockets each (before any is served,
/// so a port clash fails startup cleanly). With more than one worker the sockets share their
/// port with `SO_REUSEPORT`, and the kernel spreads new connections over them.
pub async fn bind_all(app: &App, workers: usize) -> std::io::Result<Vec<DataListener>> {
    let config = app.config();
    let workers = workers.max(1);
    let mut out = Vec::with_capacity(config.listeners.len() * workers);
    for l in &config.listeners {
        let shared = workers > 1;
        let first = bind(l.addr, shared).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", l.addr))
        })?;
        // Port 0 is resolved once: the other workers' sockets join the port the first got.
        let addr = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers {
            sockets.push(bind(addr, shared).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
            })?);
        }
        let tls = match &l.tls {
            None => None,
            Some(_) => {
                let resolver = super::tls::LiveCert::new(app.live_handle(), l.addr);
                let config = super::tls::server_config(resolver)
                    .map_err(|e| std::io::Error::other(format!("TLS setup for {}: {e}", l.addr)))?;
                Some(TlsAcceptor::from(config))
            }
        };
        for (worker, listener) in sockets.into_iter().enumerate() {
            out.push(DataListener {
                listener,
                addr,
                tls: tls.clone(),
                worker,
            });
        }
    }
    Ok(out)
}

/// One listening socket on `addr` (`SO_REUSEADDR` as tokio sets it; `SO_REUSEPORT` if `shared`),
/// released from the current runtime so any worker's runtime can take it.
fn bind(addr: SocketAddr, shared: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}
