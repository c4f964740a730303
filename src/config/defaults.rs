//! The defaults: the value of every setting a file leaves out, and [`builtin`], the whole
//! configuration `keygate serve` runs on without a file (SPEC §5, last paragraph).
//!
//! `builtin` is the embedded [`BUILTIN_TOML`] put through the same validation as a file, so the
//! built-in upstreams and routes cannot drift from what a file would give.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::{Rate, Snapshot, validate};
use crate::scope::Scope;

/// `server.state_dir` of a config file that names none; the FHS place for a service's state.
pub const STATE_DIR: &str = "/var/lib/keygate";
/// `admin.socket` of a config file that names none; systemd's `RuntimeDirectory=keygate`.
pub const ADMIN_SOCKET: &str = "/run/keygate/admin.sock";
/// The listener of a config file with no `[[listeners]]`: plain HTTP, loopback only, so that
/// nothing is exposed until an operator says so.
pub const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// 10 MiB: above the largest chat requests with images inlined as base64 that common clients send.
pub const MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
/// 30 s: long enough for most non-streaming completions to finish on SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// 10 s: a real client sends its headers in well under a second; slowloris does not.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// 60 s: keeps SDK connection pools warm between calls without hoarding sockets.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// 16 KiB: room for long cookies and tracing headers; far below what would cost real memory.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Fewest bytes `max_header_bytes` may be: hyper's HTTP/1 read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: i64 = 8192;
/// 100: what browsers and SDKs send is a few dozen at most.
pub const MAX_HEADERS: usize = 100;
/// 10 000: well within a default `LimitNOFILE` of 65 536, counting the upstream side too.
pub const MAX_CONNECTIONS: usize = 10_000;
/// 10 s: slow mobile handshakes still finish.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// 256: many parallel streaming completions per client, bounded per connection.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// 20 failed authentications a minute per client IP: a mistyped key now and then passes, key
/// guessing does not.
pub const AUTH_FAILURE_LIMIT: Rate = Rate {
    requests: 20,
    interval: Duration::from_secs(60),
};
/// The prefix of SPEC §1, recognisable by secret scanners.
pub const KEY_PREFIX: &str = "sk-kg-";
/// SPEC §1: an account may hold at most 10 active keys unless it says otherwise.
pub const MAX_ACTIVE_PER_ACCOUNT: u32 = 10;
/// SPEC §3: a key created without scopes gets these.
pub const DEFAULT_SCOPES: [Scope; 2] = [Scope::Chat, Scope::Read];
/// SPEC §5: one request a second on average, the example's default.
pub const RATE_LIMIT: Rate = Rate {
    requests: 60,
    interval: Duration::from_secs(60),
};
/// 1024 tokens held back for a request that names no `max_tokens`: a typical reply's size, so
/// token buckets are rarely overdrawn before the real count is known.
pub const RESERVE_TOKENS: u64 = 1024;
/// 1 s: a crash loses at most a second of metering, and redb sees one commit a second.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// 90 days of hourly buckets: a quarter's worth of detail for billing questions.
pub const HOURLY_RETENTION: Duration = Duration::from_secs(90 * 86_400);
/// `info`: one line per request and every admin change.
pub const LOG_LEVEL: &str = "info";
/// 5 s: a healthy upstream accepts a connection in milliseconds.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// 600 s: long reasoning completions take minutes before their first byte.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);

/// The built-in configuration as config text: only what differs from a file's defaults.
pub const BUILTIN_TOML: &str = r#"
[server]
state_dir = "./keygate-data"

[admin]
socket = "./keygate-data/admin.sock"

[[listeners]]
addr = "127.0.0.1:8080"

[upstreams.openai]
base_url = "https://api.openai.com"
api_key_env = "OPENAI_API_KEY"
auth = "bearer"

[upstreams.anthropic]
base_url = "https://api.anthropic.com"
api_key_env = "ANTHROPIC_API_KEY"
auth = "x-api-key"
headers = { "anthropic-version" = "2023-06-01" }

[[routes]]
path = "/v1/messages"
upstream = "anthropic"
scope = "chat"
errors = "anthropic"

[[routes]]
path = "/v1/models"
methods = ["GET"]
upstream = "openai"
scope = "read"

[[routes]]
path = "/v1/"
upstream = "openai"
scope = "chat"
"#;

/// What errors in the built-in text are reported against.
const BUILTIN_ORIGIN: &str = "<built-in defaults>";

/// The built-in configuration, with upstream credentials from the process environment.
pub fn builtin() -> Snapshot {
    builtin_with_env(&|name| std::env::var(name).ok())
}

/// [`builtin`] with an injectable environment. Cannot fail: the text is fixed, and environment
/// problems are warnings.
pub(super) fn builtin_with_env(env: &dyn Fn(&str) -> Option<String>) -> Snapshot {
    let mut snapshot = validate::parse_with_env(BUILTIN_TOML, Path::new(BUILTIN_ORIGIN), env)
        .expect("BUILTIN_TOML is valid whatever the environment (pinned by defaults::tests)");
    snapshot.source = None;
    snapshot
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use http::Method;

    use super::*;
    use crate::config::{AuthStyle, ErrorStyle, LogFormat};

    fn env_with_keys(name: &str) -> Option<String> {
        match name {
            "OPENAI_API_KEY" => Some("sk-openai-canary".into()),
            "ANTHROPIC_API_KEY" => Some("sk-ant-canary".into()),
            _ => None,
        }
    }

    #[test]
    fn builtin_matches_the_spec() {
        let s = builtin_with_env(&env_with_keys);
        assert_eq!(s.source, None);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert_eq!(s.listeners.len(), 1);
        assert_eq!(s.listeners[0].addr, LISTENER);
        assert_eq!(s.listeners[0].tls, None);
        assert_eq!(s.server.state_dir, PathBuf::from("./keygate-data"));
        assert_eq!(s.db_path(), PathBuf::from("./keygate-data/keygate.redb"));
        assert_eq!(s.admin.socket, PathBuf::from("./keygate-data/admin.sock"));

        let openai = s.upstream("openai").expect("openai upstream");
        assert_eq!(openai.base_url.to_string(), "https://api.openai.com/");
        assert_eq!(openai.auth, AuthStyle::Bearer);
        assert_eq!(
            openai.credential.as_ref().map(|c| c.expose()),
            Some("sk-openai-canary")
        );
        assert_eq!(
            openai.credential_source.as_deref(),
            Some("env:OPENAI_API_KEY")
        );
        assert_eq!(openai.timeout, UPSTREAM_TIMEOUT);
        assert!(openai.headers.is_empty());

        let anthropic = s.upstream("anthropic").expect("anthropic upstream");
        assert_eq!(anthropic.auth, AuthStyle::XApiKey);
        assert_eq!(
            anthropic.credential.as_ref().map(|c| c.expose()),
            Some("sk-ant-canary")
        );
        assert_eq!(anthropic.headers.len(), 1);
        assert_eq!(anthropic.headers[0].0, "anthropic-version");
        assert_eq!(anthropic.headers[0].1, "2023-06-01");
        assert_eq!(s.upstreams.len(), 2);

        let routes: Vec<_> = s
            .routes
            .iter()
            .map(|r| {
                (
                    r.path.as_str(),
                    r.upstream.as_str(),
                    r.scope,
                    r.errors,
                    r.methods.clone(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                (
                    "/v1/messages",
                    "anthropic",
                    Scope::Chat,
                    ErrorStyle::Anthropic,
                    None
                ),
                (
                    "/v1/models",
                    "openai",
                    Scope::Read,
                    ErrorStyle::OpenAi,
                    Some(vec![Method::GET])
                ),
                ("/v1/", "openai", Scope::Chat, ErrorStyle::OpenAi, None),
            ]
        );
        assert!(s.presets.is_empty());
    }

    #[test]
    fn builtin_has_every_other_default() {
        let s = builtin_with_env(&env_with_keys);
        assert_eq!(s.server.max_body_bytes, MAX_BODY_BYTES);
        assert!(s.server.trusted_proxies.is_empty());
        assert_eq!(s.server.shutdown_grace, SHUTDOWN_GRACE);
        assert_eq!(s.server.header_read_timeout, HEADER_READ_TIMEOUT);
        assert_eq!(s.server.idle_timeout, IDLE_TIMEOUT);
        assert_eq!(s.server.max_header_bytes, MAX_HEADER_BYTES);
        assert_eq!(s.server.max_headers, MAX_HEADERS);
        assert_eq!(s.server.max_connections, MAX_CONNECTIONS);
        assert_eq!(s.server.tls_handshake_timeout, TLS_HANDSHAKE_TIMEOUT);
        assert_eq!(
            s.server.h2_max_concurrent_streams,
            H2_MAX_CONCURRENT_STREAMS
        );
        assert_eq!(s.server.auth_failure_limit, AUTH_FAILURE_LIMIT);
        assert!(s.admin.allowed_uids.is_empty() && s.admin.allowed_gids.is_empty());
        assert_eq!(s.keys.prefix, KEY_PREFIX);
        assert_eq!(s.keys.max_active_per_account, MAX_ACTIVE_PER_ACCOUNT);
        assert_eq!(s.keys.default_scopes, DEFAULT_SCOPES);
        assert_eq!(s.limits.rate_limit, Some(RATE_LIMIT));
        assert_eq!(s.limits.token_limit, None);
        assert_eq!(s.limits.reserve_tokens, RESERVE_TOKENS);
        assert_eq!(s.usage.flush_interval, FLUSH_INTERVAL);
        assert_eq!(s.usage.hourly_retention, HOURLY_RETENTION);
        assert_eq!(s.usage.daily_retention, None);
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s.log.level, LOG_LEVEL);
        assert_eq!(s.metrics.addr, None);
    }

    #[test]
    fn builtin_without_credentials_loads_with_warnings() {
        let s = builtin_with_env(&|_| None);
        assert!(s.upstreams.values().all(|u| u.credential.is_none()));
        assert_eq!(
            s.warnings,
            [
                "upstream anthropic: environment variable ANTHROPIC_API_KEY is not set; requests \
                 go upstream without a credential",
                "upstream openai: environment variable OPENAI_API_KEY is not set; requests go \
                 upstream without a credential",
            ]
        );
    }

    #[test]
    fn builtin_survives_a_credential_that_cannot_be_a_header() {
        let s = builtin_with_env(&|_| Some("line\nbreak".into()));
        assert!(s.upstreams.values().all(|u| u.credential.is_none()));
        assert_eq!(s.warnings.len(), 2);
        assert!(
            s.warnings.iter().all(|w| !w.contains("line")),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn builtin_from_the_process_environment_loads() {
        let s = builtin();
        assert_eq!(s.upstreams.len(), 2);
        assert_eq!(s.routes.len(), 3);
    }
}
