//! TLS for data-plane listeners: rustls with the `ring` provider, TLS 1.2 and 1.3 only, ALPN
//! `h2` and `http/1.1`.
//!
//! Certificates are not baked into the `ServerConfig`: each handshake asks [`LiveCert`] for the
//! listener's current certificate in the live config, so a reload that swaps the files is seen
//! by the next handshake without touching open connections.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::app::Live;
use crate::config::TlsFiles;

/// The crypto provider everything in keygate uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Loads a listener's certificate chain and key, checking that they belong together.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let chain = read_certs(&files.cert)?;
    // The key file's contents never appear in an error: only its path and the parse failure.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("{}: cannot read a private key: {e}", files.key.display()))?;
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| format!("{} and {}: {e}", files.cert.display(), files.key.display()))
}

/// The server config of one TLS listener.
pub fn server_config(cert: LiveCert) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Resolves the certificate of the listener at `addr` from the live config at each handshake.
pub struct LiveCert {
    live: Arc<ArcSwap<Live>>,
    addr: SocketAddr,
}

impl LiveCert {
    pub fn new(live: Arc<ArcSwap<Live>>, addr: SocketAddr) -> LiveCert {
        LiveCert { live, addr }
    }
}

impl std::fmt::Debug for LiveCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCert")
            .field("addr", &self.addr)
            .finish()
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.live.load().certs.get(&self.addr).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Snapshot;

    /// What `scripts/tls-scan.sh` found (docs/tls-scan.md), pinned where CI sees it: every
    /// TLS 1.2 suite is ECDHE with an AEAD, the groups are X25519, P-256 and P-384, ALPN
    /// prefers h2, there is no 0-RTT, and TLS 1.2 sessions resume by ID from the server's
    /// cache rather than by stateless tickets. (TLS 1.2 and 1.3 only is checked end to end by
    /// tests/tls.rs.)
    #[test]
    fn server_config_offers_only_aead_suites_with_forward_secrecy() {
        let live = Live::build(Snapshot::builtin(), None).expect("built-in config");
        let live = Arc::new(ArcSwap::from_pointee(live));
        let addr = "127.0.0.1:8443".parse().expect("address");
        let config = server_config(LiveCert::new(live, addr)).expect("server config");

        let suites: Vec<String> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            suites,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            ]
        );
        let groups: Vec<String> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(groups, ["X25519", "secp256r1", "secp384r1"]);

        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(config.max_early_data_size, 0, "no 0-RTT");
        assert!(!config.ticketer.enabled(), "no stateless TLS 1.2 tickets");
        assert!(
            !config.ignore_client_order,
            "the client picks among equally strong suites"
        );
    }
}
