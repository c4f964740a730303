//! The integration-test harness: a real keygate server in-process ([`TestApp`]) on
//! `127.0.0.1:0` with a temp state dir and admin socket, a recording fake upstream
//! (`upstream`), HTTP helpers (`client`) and TLS test certificates (`certs`).
//!
//! Each test binary uses part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod certs;
pub mod cli;
pub mod client;
pub mod faulty;
pub mod process;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use keygate::app::{self, App, Listeners};
use keygate::clock::Clock;
use keygate::config::Snapshot;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The upstream credential the harness's environment provides as `$UPSTREAM_KEY`.
pub const UPSTREAM_SECRET: &str = "upstream-secret-3c9f1a";

/// A running keygate.
pub struct TestApp {
    pub dir: TempDir,
    pub app: Arc<App>,
    /// The first data-plane listener's address.
    pub addr: SocketAddr,
    pub socket: PathBuf,
    pub config_path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Routes and upstream pointing at a fake upstream, as most proxy tests want them.
pub fn upstream_config(upstream: SocketAddr) -> String {
    upstream_config_at(&format!("http://{upstream}"), "")
}

/// [`upstream_config`] for an upstream at `base` (a URL without a path), with `settings`
/// (TOML lines such as `ca_file = ...`) added to both upstreams.
pub fn upstream_config_at(base: &str, settings: &str) -> String {
    format!(
        r#"
[upstreams.openai]
base_url = "{base}"
api_key_env = "UPSTREAM_KEY"
timeout = "5s"
{settings}

[upstreams.anthropic]
base_url = "{base}/anthropic"
api_key_env = "UPSTREAM_KEY"
auth = "x-api-key"
headers = {{ "anthropic-version" = "2023-06-01" }}
timeout = "5s"
{settings}

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
"#
    )
}

impl TestApp {
    /// Starts keygate with `extra` appended to a base config (state dir, socket, one plain
    /// listener on port 0).
    pub async fn start(extra: &str) -> TestApp {
        Self::start_with(extra, Clock::system()).await
    }

    pub async fn start_with(extra: &str, clock: Clock) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, "", extra, clock).await
    }

    /// Starts keygate on a database whose disk "fills up" while `full` is set.
    pub async fn start_faulty(
        extra: &str,
        full: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("state/keygate.redb");
        let backend = faulty::factory(db, full);
        Self::launch(dir, "", extra, Clock::system(), Some(backend)).await
    }

    /// Starts keygate with `server` lines added to its `[server]` table.
    pub async fn start_with_server(server: &str, extra: &str) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, server, extra, Clock::system()).await
    }

    /// Starts keygate in an existing directory (to test persistence across restarts).
    pub async fn start_in(dir: TempDir, server: &str, extra: &str, clock: Clock) -> TestApp {
        Self::launch(dir, server, extra, clock, None).await
    }

    /// Starts keygate with `workers` data-plane threads, as `keygate serve` runs (the other
    /// constructors serve on the test's own runtime).
    pub async fn start_with_workers(server: &str, extra: &str, workers: usize) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::launch_with(dir, server, extra, Clock::system(), None, workers).await
    }

    async fn launch(
        dir: TempDir,
        server: &str,
        extra: &str,
        clock: Clock,
        backend: Option<keygate::store::BackendFactory>,
    ) -> TestApp {
        Self::launch_with(dir, server, extra, clock, backend, 1).await
    }

    async fn launch_with(
        dir: TempDir,
        server: &str,
        extra: &str,
        clock: Clock,
        backend: Option<keygate::store::BackendFactory>,
        workers: usize,
    ) -> TestApp {
        let base = dir.path();
        let text = format!(
            "[server]\nstate_dir = \"{state}\"\n{server}\n\n[admin]\nsocket = \"{sock}\"\n\n{extra}\n",
            state = base.join("state").display(),
            sock = base.join("run/admin.sock").display(),
        );
        let text = if text.contains("[[listeners]]") {
            text
        } else {
            format!("{text}\n[[listeners]]\naddr = \"127.0.0.1:0\"\n")
        };
        let config_path = base.join("keygate.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let snapshot = load(&config_path);
        let socket = snapshot.admin.socket.clone();
        let app = App::open_with(snapshot, clock, backend).expect("keygate starts");
        let data = keygate::net::tcp::bind_all(&app, workers)
            .await
            .expect("bind listeners");
        let addr = data
            .first()
            .map(|d| d.addr)
            .unwrap_or_else(|| "127.0.0.1:1".parse().unwrap());
        let admin = keygate::net::unix::bind(&socket).expect("bind admin socket");
        let (stop, stopped) = oneshot::channel::<()>();
        let listeners = Listeners {
            admin,
            admin_path: socket.clone(),
            data,
            metrics: None,
        };
        let runner = Arc::clone(&app);
        let task = tokio::spawn(async move {
            app::run(listeners, runner, async {
                let _ = stopped.await;
            })
            .await
            .expect("keygate runs");
        });
        TestApp {
            dir,
            app,
            addr,
            socket,
            config_path,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits for it to finish; returns the temp dir for a restart.
    /// (Dropping a `TestApp` also stops its server: the stop channel's sender goes away.)
    pub async fn stop(self) -> TempDir {
        let TestApp {
            dir,
            app,
            stop,
            task,
            ..
        } = self;
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(task) = task {
            task.await.expect("server task");
        }
        // Drop the App so the database file is closed before a restart opens it again.
        drop(app);
        dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// One admin call over the Unix socket; returns the status and the JSON body.
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        admin_call(&self.socket, method, path, body).await
    }

    /// Creates a key; returns its id and secret.
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let (status, key) = self.admin(Method::POST, "/api/keys", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "create key: {key}");
        (
            key["id"].as_str().expect("id").to_owned(),
            key["key"].as_str().expect("secret").to_owned(),
        )
    }
}

/// Loads a config file with the harness's environment (`UPSTREAM_KEY`).
pub fn load(path: &Path) -> Snapshot {
    let text = std::fs::read_to_string(path).expect("read config");
    let env = |name: &str| (name == "UPSTREAM_KEY").then(|| UPSTREAM_SECRET.to_owned());
    Snapshot::parse_with_env(&text, path, &env).unwrap_or_else(|e| panic!("config:\n{e}"))
}

/// One HTTP/1.1 call over a Unix socket.
pub async fn admin_call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    try_admin_call(socket, method, path, body)
        .await
        .unwrap_or_else(|e| panic!("admin call {path}: {e}"))
}

/// [`admin_call`] that reports a server gone away instead of panicking.
pub async fn try_admin_call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "keygate")
        .header("content-type", "application/json")
        .body(Full::new(bytes))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Ok((status, value))
}
