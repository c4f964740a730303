//! Configuration: the TOML file of SPEC §5 turned into an immutable, validated [`Snapshot`].
//!
//! The raw TOML structs live in `raw`, and `validate` turns them into the types below, collecting
//! every problem at once with its file:line:col (`error`). Nothing outside this module sees raw
//! input: a `Snapshot` is always whole and valid, so a reload either swaps in a new one or keeps
//! the old. Durations use the `60s`/`90d` notation of `duration`; upstream credentials are
//! [`Secret`]s that never print. `defaults` holds every default value and the built-in
//! configuration; `view` renders the effective configuration for `GET /api/config`.

mod defaults;
mod duration;
mod error;
mod raw;
mod secret;
mod validate;
mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

pub use duration::{format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors};
pub use secret::Secret;

use crate::scope::Scope;

/// The file read when `keygate serve` gets no `--config` (SPEC §5, last paragraph).
pub const DEFAULT_CONFIG_FILE: &str = "keygate.toml";

/// A whole, validated configuration. Immutable: a reload builds a new one.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The file this was read from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    /// Warnings that do not stop the config from loading (e.g. an unset `api_key_env`).
    pub warnings: Vec<String>,
    pub server: Server,
    pub admin: Admin,
    pub listeners: Vec<Listener>,
    pub keys: Keys,
    pub limits: Limits,
    pub usage: Usage,
    pub log: Log,
    pub metrics: Metrics,
    /// Upstreams by name.
    pub upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Routes in file order; `route::select` applies longest-prefix precedence.
    pub routes: Vec<Route>,
    /// Assistant presets by id.
    pub presets: BTreeMap<String, Preset>,
}

/// `[server]`: the data plane's process-wide settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where `keygate.redb` lives. Takes effect on restart only.
    pub state_dir: PathBuf,
    /// Largest request body keygate reads (model routing, presets) or forwards; over it → 413.
    pub max_body_bytes: u64,
    /// Peers whose `x-forwarded-for` is believed when computing the client IP.
    pub trusted_proxies: Vec<IpNet>,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Time allowed to receive a request's headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Largest total size of a request's headers; over it → 431.
    pub max_header_bytes: usize,
    /// Most headers in one request; over it → 431.
    pub max_headers: usize,
    /// Concurrent connections across all listeners; further accepts wait (back-pressure).
    pub max_connections: usize,
    /// Time allowed for a TLS handshake to finish.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// Failed authentications one client IP may make per interval before getting 429.
    pub auth_failure_limit: Rate,
}

/// `[admin]`: the Unix socket and who may use it.
#[derive(Debug, Clone)]
pub struct Admin {
    pub socket: PathBuf,
    /// Peer uids served besides 0 and the server's own uid.
    pub allowed_uids: Vec<u32>,
    /// Peer gids (primary or supplementary) that are served.
    pub allowed_gids: Vec<u32>,
}

/// One `[[listeners]]` entry. Addresses take effect on restart; certificates reload live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// `Some` for a TLS listener: both files were set.
    pub tls: Option<TlsFiles>,
}

/// A TLS certificate chain and private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[keys]`: the key format and per-account key limits.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Prefix of every new key, matching `^[A-Za-z][A-Za-z0-9_-]{0,15}$`.
    pub prefix: String,
    /// Most active keys one account may hold, unless the account sets its own.
    pub max_active_per_account: u32,
    /// Scopes a key gets when its create request names none.
    pub default_scopes: Vec<Scope>,
}

/// A request rate: `requests` per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u64,
    pub interval: Duration,
}

/// A token rate: `tokens` per `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRate {
    pub tokens: u64,
    pub interval: Duration,
}

/// `[limits]`: defaults for keys (and accounts) that set none.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The request bucket of every key without its own `rate_limit`. `None`: unlimited.
    pub rate_limit: Option<Rate>,
    /// The token bucket of every key without its own `token_limit`. `None`: unlimited.
    pub token_limit: Option<TokenRate>,
    /// Tokens reserved for a request that names no `max_tokens`, settled to the real count later.
    pub reserve_tokens: u64,
}

/// `[usage]`: how metering is persisted.
#[derive(Debug, Clone)]
pub struct Usage {
    /// How often in-memory counters are written to redb; a crash loses at most this much.
    pub flush_interval: Duration,
    /// How long hourly buckets are kept before being folded into daily ones.
    pub hourly_retention: Duration,
    /// How long daily buckets are kept; `None` keeps them forever.
    pub daily_retention: Option<Duration>,
}

/// `[log]`: the tracing subscriber.
#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `keygate=debug`; `RUST_LOG` overrides it.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[metrics]`: an optional plain-HTTP listener serving `/metrics` besides the admin socket.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub addr: Option<SocketAddr>,
}

/// How the upstream's credential is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthStyle {
    /// `Authorization: Bearer <credential>`
    Bearer,
    /// `x-api-key: <credential>`
    XApiKey,
}

/// One `[upstreams.NAME]` entry.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    /// Scheme and authority, plus an optional path prefix that request paths are joined onto.
    pub base_url: http::Uri,
    /// The real credential; `None` when `api_key_env` names an unset variable (a warning).
    pub credential: Option<Secret>,
    /// Where the credential comes from, `env:NAME` or `file:PATH`, shown instead of the secret
    /// by `GET /api/config`; `None` when the upstream has neither.
    pub credential_source: Option<String>,
    pub auth: AuthStyle,
    pub connect_timeout: Duration,
    /// Time allowed for the upstream to send its response headers, and between body chunks.
    pub timeout: Duration,
    /// Headers set on forwarded requests when the client sent none of that name.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra PEM CA certificates trusted for this upstream, besides the webpki roots.
    pub ca_file: Option<PathBuf>,
}

impl Upstream {
    /// The path prefix of `base_url` without its trailing `/` (`""` for a bare host,
    /// `"/openai"` for `https://host/openai`); a request path is appended to it.
    pub fn path_prefix(&self) -> &str {
        self.base_url.path().trim_end_matches('/')
    }
}

/// The body style of errors on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStyle {
    OpenAi,
    Anthropic,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Path prefix, starting with `/`.
    pub path: String,
    /// Methods matched; `None` matches every method.
    pub methods: Option<Vec<Method>>,
    /// Name of an entry in [`Snapshot::upstreams`] (checked at validation).
    pub upstream: String,
    pub scope: Scope,
    pub errors: ErrorStyle,
    /// Globs on the body's `model`; `None` matches without reading the body.
    pub models: Option<Vec<String>>,
}

/// One `[presets.ID]` entry.
#[derive(Debug, Clone)]
pub struct Preset {
    pub id: String,
    /// Name of an entry in [`Snapshot::upstreams`] (checked at validation).
    pub upstream: String,
    pub model: String,
    pub system_prompt: String,
}

impl Snapshot {
    /// The built-in defaults of SPEC §5: one plain listener on 127.0.0.1:8080, state in
    /// `./keygate-data/`, and the example upstreams and routes.
    pub fn builtin() -> Snapshot {
        defaults::builtin()
    }

    /// Reads and validates a config file, reporting every problem at once.
    pub fn load_file(path: &Path) -> Result<Snapshot, ConfigErrors> {
        validate::load_file(path)
    }

    /// Validates config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Snapshot, ConfigErrors> {
        validate::parse(text, origin)
    }

    /// [`Snapshot::parse`] with `env` standing in for the process environment when reading
    /// `api_key_env` credentials; for tests, which cannot set environment variables safely.
    pub fn parse_with_env(
        text: &str,
        origin: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Snapshot, ConfigErrors> {
        validate::parse_with_env(text, origin, env)
    }

    /// What `keygate serve` runs on: `--config FILE`, else `./keygate.toml` when it exists,
    /// else the built-in defaults.
    pub fn resolve(explicit: Option<&Path>) -> Result<Snapshot, ConfigErrors> {
        match explicit {
            Some(path) => Self::load_file(path),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                Self::load_file(Path::new(DEFAULT_CONFIG_FILE))
            }
            None => Ok(Self::builtin()),
        }
    }

    /// The upstream a route or preset names. Validation guarantees it exists.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Path of the redb file inside `state_dir`.
    pub fn db_path(&self) -> PathBuf {
        self.server.state_dir.join("keygate.redb")
    }
}
