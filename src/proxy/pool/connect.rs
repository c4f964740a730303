//! Making an upstream connection: where to ([`Target`], one per upstream) and how: DNS and TCP
//! (with `TCP_NODELAY` and keep-alive, each address getting a share of `connect_timeout`), TLS,
//! and the HTTP/1.1 handshake, its driver running on the calling worker.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use http::Uri;
use http::uri::{Authority, Scheme};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::{SendError, Sender};

/// TCP keep-alive probes start after this long without traffic.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Where and how to connect: one per upstream, shared by its workers' pools.
pub struct Target {
    /// Host name or IP address (without brackets), for DNS and for TLS's server name.
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) scheme: Scheme,
    pub(super) authority: Authority,
    /// `Host` of HTTP/1.1 requests: the authority without a default port.
    pub(super) host_header: HeaderValue,
    pub(super) tls: Option<(TlsConnector, ServerName<'static>)>,
    pub(super) connect_timeout: Duration,
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

/// The kind of a failed connect, for those that waited on it: `TimedOut` stays a timeout.
pub(super) fn kind(error: &SendError) -> std::io::ErrorKind {
    match error {
        SendError::Connect(io) => io.kind(),
        _ => std::io::ErrorKind::Other,
    }
}

/// A connect error and its causes, as one line.
pub(super) fn chain(error: &SendError) -> String {
    let mut text = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        text.push(e.to_string());
        source = e.source();
    }
    text.join(": ")
}

/// A TCP connection to the first of `host`'s addresses that answers before `deadline`, with
/// `TCP_NODELAY` (small writes must not wait for delayed ACKs) and keep-alive probes. Each
/// address gets an equal share of the time left, so one that drops packets (an unreachable
/// IPv6 route, say) does not use it all up.
pub(super) async fn tcp_connect(
    host: &str,
    port: u16,
    deadline: Instant,
) -> std::io::Result<TcpStream> {
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

pub(super) async fn handshake_h1<T>(io: T) -> Result<Sender, SendError>
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
pub(super) fn drive<C>(conn: C, protocol: &'static str)
where
    C: Future<Output = hyper::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, protocol, "upstream connection ended");
        }
    });
}
