//! Checks for the process-wide sections: `[server]`, `[admin]`, `[[listeners]]` and `[metrics]`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::ctx::Ctx;
use super::locate::Path;
use super::policy;
use crate::config::raw::{RawAdmin, RawListener, RawMetrics, RawServer};
use crate::config::{Admin, Listener, Metrics, Server, TlsFiles, defaults};

/// Bound for durations that need none.
const NO_MAX: Duration = Duration::MAX;
/// The smallest duration that is more than zero, for "must be greater than 0s".
const NON_ZERO: Duration = Duration::from_millis(1);

pub(super) fn server(cx: &mut Ctx<'_, '_>, raw: &RawServer) -> Server {
    let p = Path::root().key("server");
    let state_dir = match &raw.state_dir {
        Some(dir) => cx.fs_path(&p.key("state_dir"), dir),
        None => Some(PathBuf::from(defaults::STATE_DIR)),
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, cidr)| trusted_proxy(cx, &p.key("trusted_proxies").index(i), cidr))
        .collect();
    let mut timeout = |key: &str, value: &Option<String>, default: Duration, min: Duration| {
        cx.duration(&p.key(key), value.as_deref(), default, min, NO_MAX)
            .unwrap_or(default)
    };
    let shutdown_grace = timeout(
        "shutdown_grace",
        &raw.shutdown_grace,
        defaults::SHUTDOWN_GRACE,
        Duration::ZERO,
    );
    let header_read_timeout = timeout(
        "header_read_timeout",
        &raw.header_read_timeout,
        defaults::HEADER_READ_TIMEOUT,
        NON_ZERO,
    );
    let idle_timeout = timeout(
        "idle_timeout",
        &raw.idle_timeout,
        defaults::IDLE_TIMEOUT,
        NON_ZERO,
    );
    let tls_handshake_timeout = timeout(
        "tls_handshake_timeout",
        &raw.tls_handshake_timeout,
        defaults::TLS_HANDSHAKE_TIMEOUT,
        NON_ZERO,
    );
    let auth_failure_limit = match &raw.auth_failure_limit {
        Some(rate) => policy::rate(cx, &p.key("auth_failure_limit"), rate),
        None => Some(defaults::AUTH_FAILURE_LIMIT),
    };
    Server {
        state_dir: state_dir.unwrap_or_default(),
        max_body_bytes: cx.int(
            &p.key("max_body_bytes"),
            raw.max_body_bytes,
            defaults::MAX_BODY_BYTES,
            1,
            i64::MAX,
        ),
        trusted_proxies,
        shutdown_grace,
        header_read_timeout,
        idle_timeout,
        max_header_bytes: cx.int(
            &p.key("max_header_bytes"),
            raw.max_header_bytes,
            defaults::MAX_HEADER_BYTES,
            defaults::MIN_HEADER_BYTES,
            i64::from(u32::MAX),
        ),
        max_headers: cx.int(
            &p.key("max_headers"),
            raw.max_headers,
            defaults::MAX_HEADERS,
            1,
            i64::from(u16::MAX),
        ),
        max_connections: cx.int(
            &p.key("max_connections"),
            raw.max_connections,
            defaults::MAX_CONNECTIONS,
            1,
            i64::from(u32::MAX),
        ),
        tls_handshake_timeout,
        h2_max_concurrent_streams: cx.int(
            &p.key("h2_max_concurrent_streams"),
            raw.h2_max_concurrent_streams,
            defaults::H2_MAX_CONCURRENT_STREAMS,
            1,
            i64::from(u32::MAX),
        ),
        auth_failure_limit: auth_failure_limit.unwrap_or(defaults::AUTH_FAILURE_LIMIT),
    }
}

/// A CIDR, or a bare address meaning just that host (/32 or /128).
fn trusted_proxy(cx: &mut Ctx<'_, '_>, path: &Path, value: &str) -> Option<IpNet> {
    let net = value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from));
    match net {
        Ok(net) => Some(net.trunc()),
        Err(_) => {
            cx.error(
                path,
                format!(
                    "invalid CIDR {value:?}: expected an address or network such as \
                     10.0.0.0/8, 192.0.2.7 or 2001:db8::/32"
                ),
            );
            None
        }
    }
}

pub(super) fn admin(cx: &mut Ctx<'_, '_>, raw: &RawAdmin) -> Admin {
    let p = Path::root().key("admin");
    let socket = match &raw.socket {
        Some(socket) => cx.fs_path(&p.key("socket"), socket),
        None => Some(PathBuf::from(defaults::ADMIN_SOCKET)),
    };
    let mut ids = |key: &str, values: &Option<Vec<i64>>| -> Vec<u32> {
        let list = p.key(key);
        values
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, id)| {
                let before = cx.error_count();
                let id = cx.int(&list.index(i), Some(*id), 0, 0, i64::from(u32::MAX));
                (cx.error_count() == before).then_some(id)
            })
            .collect()
    };
    Admin {
        allowed_uids: ids("allowed_uids", &raw.allowed_uids),
        allowed_gids: ids("allowed_gids", &raw.allowed_gids),
        socket: socket.unwrap_or_default(),
    }
}

/// `[[listeners]]`; one plain listener on 127.0.0.1:8080 when the file has none.
pub(super) fn listeners(cx: &mut Ctx<'_, '_>, raw: Option<&Vec<RawListener>>) -> Vec<Listener> {
    let p = Path::root().key("listeners");
    let Some(raw) = raw else {
        return vec![Listener {
            addr: defaults::LISTENER,
            tls: None,
        }];
    };
    if raw.is_empty() && !cx.failed(&p) {
        cx.error(
            &p,
            "at least one listener is needed (leave listeners out for 127.0.0.1:8080)",
        );
    }
    let mut seen: Vec<(SocketAddr, usize)> = Vec::new();
    let mut listeners = Vec::new();
    for (i, entry) in raw.iter().enumerate() {
        let here = p.index(i);
        let addr = cx
            .required(&here.key("addr"), &entry.addr)
            .and_then(|addr| cx.socket_addr(&here.key("addr"), addr));
        let tls = tls_files(cx, &here, entry);
        let Some(addr) = addr else { continue };
        if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
            cx.error(
                &here.key("addr"),
                format!("duplicate listener address {addr} (also listeners[{first}])"),
            );
            continue;
        }
        seen.push((addr, i));
        if let Some(tls) = tls {
            listeners.push(Listener { addr, tls });
        }
    }
    listeners
}

/// `Some(None)` for plain HTTP, `Some(Some(_))` for TLS, `None` when invalid.
fn tls_files(cx: &mut Ctx<'_, '_>, here: &Path, raw: &RawListener) -> Option<Option<TlsFiles>> {
    match (&raw.tls_cert, &raw.tls_key) {
        (None, None) => Some(None),
        (Some(cert), Some(key)) => {
            let cert = cx.existing_file(&here.key("tls_cert"), cert);
            let key = cx.existing_file(&here.key("tls_key"), key);
            Some(Some(TlsFiles {
                cert: cert?,
                key: key?,
            }))
        }
        (Some(_), None) => {
            cx.error(
                &here.key("tls_cert"),
                "tls_cert is set but tls_key is not: set both for TLS, or neither for plain HTTP",
            );
            None
        }
        (None, Some(_)) => {
            cx.error(
                &here.key("tls_key"),
                "tls_key is set but tls_cert is not: set both for TLS, or neither for plain HTTP",
            );
            None
        }
    }
}

pub(super) fn metrics(cx: &mut Ctx<'_, '_>, raw: &RawMetrics, listeners: &[Listener]) -> Metrics {
    let path = Path::root().key("metrics").key("addr");
    let addr = raw
        .addr
        .as_ref()
        .and_then(|addr| cx.socket_addr(&path, addr));
    if let Some(clash) = addr.filter(|a| listeners.iter().any(|l| l.addr == *a)) {
        cx.error(&path, format!("{clash} is also a listener address"));
    }
    Metrics { addr }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors_of, parse_ok};
    use super::*;

    fn same(a: &SocketAddr, b: &str) -> bool {
        b.parse::<SocketAddr>().is_ok_and(|b| *a == b)
    }

    #[test]
    fn server_settings_are_read() {
        let s = parse_ok(
            "[server]\nstate_dir = \"/srv/kg\"\nmax_body_bytes = 1024\n\
             trusted_proxies = [\"10.1.2.3/8\", \"192.0.2.7\", \"::1\"]\nshutdown_grace = \"0s\"\n\
             header_read_timeout = \"5s\"\nidle_timeout = \"2m\"\nmax_header_bytes = 8192\n\
             max_headers = 50\nmax_connections = 3\ntls_handshake_timeout = \"1500ms\"\n\
             h2_max_concurrent_streams = 8\nauth_failure_limit = { requests = 5, interval = \"10m\" }\n",
        );
        let server = &s.server;
        assert_eq!(server.state_dir, PathBuf::from("/srv/kg"));
        assert_eq!(server.max_body_bytes, 1024);
        let proxies: Vec<String> = server
            .trusted_proxies
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(proxies, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
        assert_eq!(server.shutdown_grace, Duration::ZERO);
        assert_eq!(server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(server.idle_timeout, Duration::from_secs(120));
        assert_eq!(server.max_header_bytes, 8192);
        assert_eq!(server.max_headers, 50);
        assert_eq!(server.max_connections, 3);
        assert_eq!(server.tls_handshake_timeout, Duration::from_millis(1500));
        assert_eq!(server.h2_max_concurrent_streams, 8);
        assert_eq!(server.auth_failure_limit.requests, 5);
        assert_eq!(server.auth_failure_limit.interval, Duration::from_secs(600));
    }

    #[test]
    fn a_file_without_sections_gets_the_file_defaults() {
        let s = parse_ok("");
        assert_eq!(s.server.state_dir, PathBuf::from(defaults::STATE_DIR));
        assert_eq!(s.admin.socket, PathBuf::from(defaults::ADMIN_SOCKET));
        assert_eq!(s.listeners.len(), 1);
        assert!(same(&s.listeners[0].addr, "127.0.0.1:8080"));
        assert!(s.listeners[0].tls.is_none());
        assert!(s.upstreams.is_empty() && s.routes.is_empty() && s.presets.is_empty());
        assert_eq!(s.metrics.addr, None);
    }

    #[test]
    fn bad_server_values_are_reported_at_their_place() {
        let errors = errors_of(
            "[server]\nmax_body_bytes = 0\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n\
             idle_timeout = \"0s\"\nmax_header_bytes = 4096\nshutdown_grace = \"-1s\"\n\
             auth_failure_limit = { requests = 0, interval = \"1x\" }\nstate_dir = \"\"\n",
        );
        assert_eq!(
            errors,
            [
                "2:18: server.max_body_bytes: must be at least 1, not 0",
                "3:34: server.trusted_proxies[1]: invalid CIDR \"nope\": expected an address or \
                 network such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32",
                "4:16: server.idle_timeout: must be greater than 0s, not 0s",
                "5:20: server.max_header_bytes: must be at least 8192, not 4096",
                "6:18: server.shutdown_grace: invalid duration \"-1s\": negative durations are \
                 not allowed",
                "7:35: server.auth_failure_limit.requests: must be at least 1, not 0",
                "7:49: server.auth_failure_limit.interval: invalid duration \"1x\": unknown unit \
                 \"x\" (use ms, s, m, h or d)",
                "8:13: server.state_dir: must not be empty",
            ]
        );
    }

    #[test]
    fn admin_ids_must_be_u32() {
        let s = parse_ok(
            "[admin]\nsocket = \"/tmp/a.sock\"\nallowed_uids = [1000, 0]\nallowed_gids = [27]\n",
        );
        assert_eq!(s.admin.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(s.admin.allowed_uids, [1000, 0]);
        assert_eq!(s.admin.allowed_gids, [27]);
        let errors = errors_of("[admin]\nallowed_uids = [1, -1]\nallowed_gids = [4294967296]\n");
        assert_eq!(
            errors,
            [
                "2:20: admin.allowed_uids[1]: must be at least 0, not -1",
                "3:17: admin.allowed_gids[0]: must be at most 4294967295, not 4294967296",
            ]
        );
    }

    #[test]
    fn listeners_are_plain_or_tls() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "cert").expect("write cert");
        std::fs::write(&key, "key").expect("write key");
        let s = parse_ok(&format!(
            "[[listeners]]\naddr = \"0.0.0.0:8443\"\ntls_cert = {:?}\ntls_key = {:?}\n\
             [[listeners]]\naddr = \"[::1]:8080\"\n",
            cert.display(),
            key.display()
        ));
        assert_eq!(s.listeners.len(), 2);
        assert!(same(&s.listeners[0].addr, "0.0.0.0:8443"));
        let tls = s.listeners[0].tls.as_ref().expect("first listener is TLS");
        assert_eq!((&tls.cert, &tls.key), (&cert, &key));
        assert!(same(&s.listeners[1].addr, "[::1]:8080"));
        assert!(s.listeners[1].tls.is_none());
    }

    #[test]
    fn listener_mistakes_are_reported() {
        let errors = errors_of(
            "[[listeners]]\naddr = \"0.0.0.0:8443\"\ntls_cert = \"/c.pem\"\n\
             [[listeners]]\ntls_key = \"/k.pem\"\n\
             [[listeners]]\naddr = \"localhost:80\"\n\
             [[listeners]]\naddr = \"0.0.0.0:8443\"\n\
             [[listeners]]\naddr = \"127.0.0.1:1\"\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\n",
        );
        assert_eq!(errors.len(), 7, "{errors:#?}");
        assert_eq!(
            errors[0],
            "3:12: listeners[0].tls_cert: tls_cert is set but tls_key is not: set both for TLS, \
             or neither for plain HTTP"
        );
        assert_eq!(
            errors[1],
            "4:1: listeners[1].addr: missing required key \"addr\""
        );
        assert_eq!(
            errors[2],
            "5:11: listeners[1].tls_key: tls_key is set but tls_cert is not: set both for TLS, \
             or neither for plain HTTP"
        );
        assert_eq!(
            errors[3],
            "7:8: listeners[2].addr: invalid socket address \"localhost:80\": expected IP:PORT, \
             such as 127.0.0.1:8080 or [::]:8443"
        );
        assert_eq!(
            errors[4],
            "9:8: listeners[3].addr: duplicate listener address 0.0.0.0:8443 (also listeners[0])"
        );
        assert!(
            errors[5]
                .starts_with("12:12: listeners[4].tls_cert: cannot use \"/nonexistent/c.pem\"")
        );
        assert!(errors[6].starts_with("13:11: listeners[4].tls_key: cannot use"));
    }

    #[test]
    fn an_empty_listener_list_is_an_error() {
        assert_eq!(
            errors_of("listeners = []\n"),
            [
                "1:13: listeners: at least one listener is needed (leave listeners out for 127.0.0.1:8080)"
            ]
        );
    }

    #[test]
    fn metrics_gets_its_own_address() {
        let s = parse_ok("[metrics]\naddr = \"127.0.0.1:9090\"\n");
        assert!(s.metrics.addr.is_some_and(|a| same(&a, "127.0.0.1:9090")));
        assert_eq!(
            errors_of("[metrics]\naddr = \"127.0.0.1:8080\"\n"),
            ["2:8: metrics.addr: 127.0.0.1:8080 is also a listener address"]
        );
    }
}
