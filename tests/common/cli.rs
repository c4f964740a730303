//! Test harness for the CLI: a real keygate admin server running in-process on a Unix socket in
//! a temp dir, a fake admin server that answers canned JSON (for endpoints whose server side is
//! built elsewhere), and a runner for the real `keygate` binary.
//!
//! [`TestServer::start`] builds the app exactly as `keygate serve` does — `App::open` on a
//! `Snapshot`, `net::unix::bind`, `app::run` — on its own multi-threaded runtime, and stops it
//! through a oneshot when dropped. The socket is bound before `start` returns, so a client can
//! connect at once: no polling, no sleeps.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use keygate::app::{self, App, Listeners};
use keygate::clock::Clock;
use keygate::config::Snapshot;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// The config of a test server; `{dir}` is its temp dir. `source` is cleared after parsing, so
/// the server stands for one running on built-in defaults (`status` says so, and
/// `config reload` has no file to read), with its state and socket in the temp dir.
pub const CONFIG_TOML: &str = r#"
[server]
state_dir = "{dir}/state"
[admin]
socket = "{dir}/admin.sock"
[keys]
max_active_per_account = 10
"#;

/// A validated config for a test server whose state and socket live in `dir`.
pub fn snapshot(dir: &Path) -> Snapshot {
    let text = CONFIG_TOML.replace("{dir}", &dir.display().to_string());
    let mut snapshot =
        Snapshot::parse(&text, Path::new("test.toml")).expect("test config is valid");
    snapshot.source = None;
    snapshot
}

/// A keygate admin server on `socket`, stopped when dropped.
pub struct TestServer {
    /// The admin socket, inside `dir`.
    pub socket: PathBuf,
    /// Holds the state dir and the socket; removed after the server stopped.
    pub dir: TempDir,
    /// Runs the server; `Drop` blocks on it until `app::run` has returned.
    runtime: tokio::runtime::Runtime,
    /// Resolves the server's shutdown future.
    shutdown: Option<oneshot::Sender<()>>,
    /// The `app::run` task, awaited at drop so the socket is removed before the dir.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshot = snapshot(dir.path());
        let socket = snapshot.admin.socket.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let app = App::open(snapshot, Clock::system()).expect("open the app");
        let admin = {
            let _guard = runtime.enter();
            keygate::net::unix::bind(&socket).expect("bind the admin socket")
        };
        let (tx, rx) = oneshot::channel::<()>();
        // The CLI only talks to the admin socket: no data-plane listener is bound.
        let listeners = Listeners {
            admin,
            admin_path: socket.clone(),
            data: Vec::new(),
            metrics: None,
        };
        let task = runtime.spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            app::run(listeners, app, shutdown)
                .await
                .expect("server run");
        });
        TestServer {
            socket,
            dir,
            runtime,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Runs the CLI against this server: `keygate --socket SOCKET args...`.
    pub fn cli(&self, args: &[&str]) -> Run {
        let mut full = vec!["--socket", self.socket.to_str().expect("utf-8 temp path")];
        full.extend_from_slice(args);
        keygate(&full)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self.runtime.block_on(task);
        }
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    /// The exit code; -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn ok(self) -> Run {
        self.expect_code(0)
    }

    /// stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// A `Command` for the binary with a clean environment for socket discovery: no
/// `KEYGATE_SOCKET`/`KEYGATE_CONFIG` from the caller, and a working directory without a
/// `keygate.toml`.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.env_remove("KEYGATE_SOCKET")
        .env_remove("KEYGATE_CONFIG")
        .env("NO_COLOR", "1")
        .current_dir(std::env::temp_dir());
    cmd
}

/// Runs `keygate args...`.
pub fn keygate(args: &[&str]) -> Run {
    run(command().args(args))
}

pub fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.output().expect("run the keygate binary"))
}

/// One request the fake admin server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The JSON body; `null` when empty or not JSON.
    pub body: serde_json::Value,
}

type Responder = dyn Fn(&Seen) -> (u16, serde_json::Value) + Send + Sync;

/// A stand-in admin server that records requests and answers what `respond` says. For the
/// endpoints whose server side is not built yet (`/api/usage`, `/api/explain`), it pins the
/// request the CLI sends and how the CLI prints the documented answer.
pub struct FakeAdmin {
    pub socket: PathBuf,
    /// Every request received, in order.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Ends the accept loop.
    shutdown: Option<oneshot::Sender<()>>,
    /// Runs the accept loop and the connections; dropping it ends them.
    _runtime: tokio::runtime::Runtime,
    /// Holds the socket; removed last.
    _dir: TempDir,
}

impl FakeAdmin {
    pub fn start(
        respond: impl Fn(&Seen) -> (u16, serde_json::Value) + Send + Sync + 'static,
    ) -> FakeAdmin {
        use http_body_util::BodyExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("fake.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&socket).expect("bind the fake socket")
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Responder> = Arc::new(respond);
        let (tx, mut rx) = oneshot::channel::<()>();
        let recorded = Arc::clone(&seen);
        runtime.spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut rx => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (respond, recorded) = (Arc::clone(&respond), Arc::clone(&recorded));
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (respond, recorded) = (Arc::clone(&respond), Arc::clone(&recorded));
                        async move {
                            let method = req.method().to_string();
                            let uri = req.uri().to_string();
                            let bytes = req.into_body().collect().await?.to_bytes();
                            let body =
                                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                            let seen = Seen { method, uri, body };
                            let (status, answer) = respond(&seen);
                            recorded.lock().expect("lock").push(seen);
                            let mut resp = http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(answer.to_string()),
                            ));
                            *resp.status_mut() =
                                http::StatusCode::from_u16(status).expect("status");
                            Ok::<_, hyper::Error>(resp)
                        }
                    });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        FakeAdmin {
            socket,
            seen,
            shutdown: Some(tx),
            _runtime: runtime,
            _dir: dir,
        }
    }

    pub fn cli(&self, args: &[&str]) -> Run {
        let mut full = vec!["--socket", self.socket.to_str().expect("utf-8 temp path")];
        full.extend_from_slice(args);
        keygate(&full)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for FakeAdmin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // The runtime, dropped next, ends any connection still open; then the dir goes.
    }
}
