//! Clients for the configured upstreams: a connection [`Pool`] per upstream and data-plane
//! worker, speaking HTTP/1.1 or HTTP/2 (by ALPN) over rustls with the `ring` provider.
//!
//! Trust is the webpki roots plus the upstream's `ca_file`, so no system trust store is needed.
//! A reload reuses the pools of an upstream whose connection settings did not change, so its
//! warm connections survive.

use std::sync::{Arc, OnceLock};

use http::{HeaderName, HeaderValue, header};
use prometheus::Histogram;
use rustls::RootCertStore;

use super::pool::{Pool, Target};
use crate::config::{AuthStyle, Upstream};

/// The clients of one config generation, by upstream name (looked up on every request).
pub type Upstreams = foldhash::HashMap<String, Arc<UpstreamClient>>;

/// One upstream's settings with its connection pools.
pub struct UpstreamClient {
    pub config: Arc<Upstream>,
    /// One pool per data-plane worker: a worker only ever uses connections whose tasks run on
    /// its own thread. Never empty.
    pools: Arc<[Arc<Pool>]>,
    /// The credential header every request gets, made once (and marked sensitive).
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// This upstream's `keygate_upstream_latency_seconds`, looked up once instead of by its
    /// label on every request.
    pub latency: OnceLock<Histogram>,
}

impl UpstreamClient {
    /// The pool of the data-plane worker running this thread.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pools[crate::net::workers::current() % self.pools.len()]
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
    previous: Option<&Upstreams>,
) -> Result<Upstreams, BuildError> {
    let mut out = Upstreams::with_capacity_and_hasher(upstreams.len(), Default::default());
    for (name, config) in upstreams {
        let reused = previous
            .and_then(|p| p.get(name))
            .filter(|old| same_connection(&old.config, config))
            .map(|old| {
                Arc::new(UpstreamClient {
                    config: Arc::clone(config),
                    pools: Arc::clone(&old.pools),
                    credential: credential_header(config),
                    latency: OnceLock::new(),
                })
            });
        let client = match reused {
            Some(c) => c,
            None => Arc::new(UpstreamClient {
                config: Arc::clone(config),
                pools: build(config)?,
                credential: credential_header(config),
                latency: OnceLock::new(),
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

/// One pool per data-plane worker, sharing the TLS settings.
fn build(upstream: &Upstream) -> Result<Arc<[Arc<Pool>]>, BuildError> {
    let fail = |message: String| BuildError {
        name: upstream.name.clone(),
        message,
    };
    let tls = if upstream.base_url.scheme() == Some(&http::uri::Scheme::HTTPS) {
        Some(tls_config(upstream).map_err(fail)?)
    } else {
        None
    };
    let target = Target::new(&upstream.base_url, tls, upstream.connect_timeout).map_err(fail)?;
    let target = Arc::new(target);
    Ok((0..crate::net::workers::count())
        .map(|_| Arc::new(Pool::new(Arc::clone(&target))))
        .collect())
}

/// TLS to `upstream`: the webpki roots and its `ca_file`, offering `h2` and `http/1.1`.
fn tls_config(upstream: &Upstream) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = &upstream.ca_file {
        for cert in crate::net::tls::read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
