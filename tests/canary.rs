//! The canary: a key secret and an upstream credential with unique values go through real
//! traffic and every admin command, with logs at their most verbose; afterwards neither value
//! may be found in the logs, the database file, the metrics, the effective config, the audit log
//! or any CLI output but the one line that hands out the secret.

mod common;

use std::process::{Command, Stdio};

use common::client::{self, post, send};
use common::process::Process;
use common::upstream::FakeUpstream;
use common::upstream_config;
use serde_json::json;

/// Runs the CLI against the server's socket; returns stdout and stderr together.
fn cli(socket: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_anywhere_keygate_writes() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream_canary = format!(
        "upstream-canary-{}",
        keygate::keys::generate("x").unwrap().secret.expose()
    );
    let log_path = dir.path().join("keygate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut p = Process::start_with_env(
        dir.path(),
        &upstream_config(upstream.addr),
        &[("UPSTREAM_KEY", &upstream_canary), ("RUST_LOG", "trace")],
        Stdio::from(log),
    )
    .await;
    let socket = p.socket.clone();
    let mut outputs = Vec::new();

    // Every admin command, through the real CLI.
    let (ok, first, created_err) = cli(
        &socket,
        &[
            "keys",
            "create",
            "--name",
            "canary",
            "--account",
            "acme",
            "--rate",
            "100/60s",
        ],
    );
    assert!(ok, "{created_err}");
    let first = first.trim().to_owned();
    assert!(
        keygate::keys::parse(&first).is_ok(),
        "the secret is stdout's last line: {first:?}"
    );
    outputs.push(created_err);
    let (_, listed, _) = cli(&socket, &["keys", "list", "--json"]);
    let id = serde_json::from_str::<serde_json::Value>(&listed).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ok, second, rotate_err) = cli(&socket, &["keys", "rotate", &id, "--grace", "1h"]);
    assert!(ok);
    let second = second.trim().to_owned();
    outputs.push(rotate_err);
    for args in [
        vec!["keys", "list"],
        vec!["keys", "list", "--all", "--json"],
        vec!["keys", "show", &id],
        vec!["keys", "show", &id, "--json"],
        vec![
            "keys",
            "update",
            &id,
            "--origin",
            "app.example.com",
            "--quota",
            "requests=1000,period=month",
        ],
        vec!["keys", "primary", &id],
        vec!["accounts", "list", "--json"],
        vec!["accounts", "show", "acme"],
        vec!["accounts", "update", "acme", "--rate", "500/60s"],
        vec![
            "explain",
            &id,
            "--path",
            "/v1/chat/completions",
            "--model",
            "gpt-4o",
        ],
        vec!["status", "--json"],
        vec!["presets", "list"],
        vec!["config", "reload"],
    ] {
        let (_, out, err) = cli(&socket, &args);
        outputs.push(out);
        outputs.push(err);
    }

    // Traffic: both secrets (the old one is in its grace period), streams, typos, errors.
    let c = client::client();
    let url = p.url(dir.path(), "/v1/chat/completions");
    let chat = json!({"model": "gpt-4o", "messages": []});
    let stream = json!({"model": "gpt-4o", "stream": true, "messages": []});
    for key in [&first, &second] {
        assert_eq!(
            send(&c, post(&url, Some(key), &chat)).await.status,
            http::StatusCode::OK
        );
        send(&c, post(&url, Some(key), &stream)).await;
        let typo = format!("{}A", &key[..key.len() - 1]);
        send(&c, post(&url, Some(&typo), &chat)).await;
        let mut failing = post(&url, Some(key), &chat);
        failing
            .headers_mut()
            .insert("x-fake-status", "500".parse().unwrap());
        send(&c, failing).await;
        let mut elsewhere = post(&url, Some(key), &chat);
        elsewhere
            .headers_mut()
            .insert("origin", "https://evil.example".parse().unwrap());
        outputs.push(send(&c, elsewhere).await.text());
    }
    assert!(
        upstream
            .received()
            .iter()
            .all(|r| r.headers["authorization"] == format!("Bearer {upstream_canary}")),
        "the upstream canary was live"
    );
    let (_, usage, _) = cli(&socket, &["usage", "--key", &id, "--json"]);
    outputs.push(usage);
    let (_, audit, _) = cli(&socket, &["audit", "--json"]);
    let (_, metrics) = common::admin_call(&socket, http::Method::GET, "/metrics", None).await;
    let (_, config) = common::admin_call(&socket, http::Method::GET, "/api/config", None).await;
    let (ok, _, _) = cli(&socket, &["keys", "revoke", &id]);
    assert!(ok);

    p.signal(rustix::process::Signal::TERM);
    let status = tokio::task::spawn_blocking(move || p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.lines().count() > 1000, "trace logging was on");
    let database = std::fs::read(dir.path().join("state/keygate.redb")).unwrap();
    let places: Vec<(&str, Vec<u8>)> = vec![
        ("the log", logs.into_bytes()),
        ("the database", database),
        ("the metrics", metrics.to_string().into_bytes()),
        ("GET /api/config", config.to_string().into_bytes()),
        ("the audit log", audit.into_bytes()),
        ("CLI output", outputs.concat().into_bytes()),
    ];
    for secret in [first.as_str(), second.as_str(), upstream_canary.as_str()] {
        // The whole secret, and the part after the display prefix that lists show.
        let tail = &secret[18..];
        for (place, bytes) in &places {
            for needle in [secret, tail] {
                let hits = bytes
                    .windows(needle.len())
                    .filter(|w| *w == needle.as_bytes())
                    .count();
                assert_eq!(hits, 0, "{needle:?} found in {place}");
            }
        }
    }
}
