//! Clients for the configured upstreams: a pooled hyper-util client per upstream and data-plane
//! worker, speaking HTTP/1.1 or HTTP/2 (by ALPN) over rustls with the `ring` provider.
//!
//! Trust is the webpki roots plus the upstream's `ca_file`, so no system trust store is needed.
//! Sockets get `TCP_NODELAY` (small writes must not wait for delayed ACKs) and the configured
//! connect timeout. A reload reuses a client whose connection settings did not change, so its
//! pool of warm connections survives.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;

use super::body::RequestBody;
use http::{HeaderName, HeaderValue, header};

use crate::config::{AuthStyle, Upstream};

/// Idle pooled connections are closed after this long: shorter than the idle timeouts of
/// common LLM APIs (about 90 s), so keygate never reuses a connection the far end just closed.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Idle connections kept per upstream host and worker: enough for bursts on 32+ parallel clients.
const POOL_MAX_IDLE: usize = 256;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// One upstream's settings with its clients.
pub struct UpstreamClient {
    pub config: Arc<Upstream>,
    /// One client (so one connection pool) per data-plane worker: a worker only ever uses
    /// connections whose tasks run on its own thread. Never empty.
    clients: Arc<[HttpClient]>,
    /// The credential header every request gets, made once (and marked sensitive).
    pub credential: Option<(HeaderName, HeaderValue)>,
}

impl UpstreamClient {
    /// The client of the data-plane worker running this thread.
    pub fn client(&self) -> &HttpClient {
        &self.clients[crate::net::workers::current() % self.clients.len()]
    }
}

/// The header that carries `upstream`'s credential in its `auth` style.
fn credential_header(upstream: &Upstream) -> Option<(HeaderName, HeaderValue)> {
    let secret = upstream.credential.as_ref()?;
    let (name, value) = match upstream.auth {
        AuthStyle::Bearer => (
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", secret.expose())),
        ),
        AuthStyle::XApiKey => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(secret.expose()),
        ),
    };
    // Validation checks that the credential is a valid header value.
    let mut value = value.ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// Why an upstream's client could not be built (a bad `ca_file`).
#[derive(Debug, thiserror::Error)]
#[error("upstream {name}: {message}")]
pub struct BuildError {
    pub name: String,
    pub message: String,
}

/// Builds clients for `upstreams`, reusing those of `previous` whose connection settings match.
pub fn build_all(
    upstreams: &std::collections::BTreeMap<String, Arc<Upstream>>,
    previous: Option<&HashMap<String, Arc<UpstreamClient>>>,
) -> Result<HashMap<String, Arc<UpstreamClient>>, BuildError> {
    let mut out = HashMap::with_capacity(upstreams.len());
    for (name, config) in upstreams {
        let reused = previous
            .and_then(|p| p.get(name))
            .filter(|old| same_connection(&old.config, config))
            .map(|old| {
                Arc::new(UpstreamClient {
                    config: Arc::clone(config),
                    clients: Arc::clone(&old.clients),
                    credential: credential_header(config),
                })
            });
        let client = match reused {
            Some(c) => c,
            None => Arc::new(UpstreamClient {
                config: Arc::clone(config),
                clients: build(config)?,
                credential: credential_header(config),
            }),
        };
        out.insert(name.clone(), client);
    }
    Ok(out)
}

fn same_connection(a: &Upstream, b: &Upstream) -> bool {
    a.base_url.scheme() == b.base_url.scheme()
        && a.base_url.authority() == b.base_url.authority()
        && a.connect_timeout == b.connect_timeout
        && a.ca_file == b.ca_file
}

/// One client per data-plane worker, sharing the TLS settings.
fn build(upstream: &Upstream) -> Result<Arc<[HttpClient]>, BuildError> {
    let fail = |message: String| BuildError {
        name: upstream.name.clone(),
        message,
    };
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &upstream.ca_file {
        let certs = crate::net::tls::read_certs(path).map_err(fail)?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(upstream.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(30)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let client = || {
        Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE)
            .set_host(true)
            .build(connector.clone())
    };
    Ok((0..crate::net::workers::count())
        .map(|_| client())
        .collect())
}
