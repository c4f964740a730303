//! The real `keygate` binary as a child process, for tests of signals, logs and the files it
//! leaves: started with a config file in a temp dir, on a free port, and killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Polls `check` every 10 ms until it returns `Some`, failing after `secs` seconds.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    check: impl Fn() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The real binary, started with a config file.
pub struct Process {
    pub child: Child,
    pub socket: std::path::PathBuf,
}

impl Process {
    pub async fn start(dir: &Path, extra: &str) -> Process {
        Self::start_with_env(dir, extra, &[], Stdio::inherit()).await
    }

    /// Starts it with extra environment variables and its stderr going to `stderr`.
    pub async fn start_with_env(
        dir: &Path,
        extra: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Process {
        Self::launch(dir, "", extra, env, stderr).await
    }

    /// Starts it with `server` lines in its `[server]` table, too.
    pub async fn launch(
        dir: &Path,
        server: &str,
        extra: &str,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> Process {
        let config = dir.join("keygate.toml");
        let socket = dir.join("admin.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            &config,
            format!(
                "[server]\nstate_dir = \"{}\"\nshutdown_grace = \"10s\"\n{server}\n[admin]\nsocket = \"{}\"\n[[listeners]]\naddr = \"127.0.0.1:{port}\"\n{extra}",
                dir.join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keygate"));
        command
            .args(["serve", "--config"])
            .arg(&config)
            .env("UPSTREAM_KEY", super::UPSTREAM_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap();
        let p = Process { child, socket };
        let socket = p.socket.clone();
        eventually(10, "keygate to listen", || {
            let socket = socket.clone();
            async move {
                tokio::net::UnixStream::connect(&socket)
                    .await
                    .ok()
                    .map(|_| ())
            }
        })
        .await;
        p
    }

    pub fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    pub fn url(&self, dir: &Path, path: &str) -> String {
        let text = std::fs::read_to_string(dir.join("keygate.toml")).unwrap();
        let addr = text
            .split("addr = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        format!("http://{addr}{path}")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
