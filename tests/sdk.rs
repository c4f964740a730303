//! Real clients: the official Python `openai` and `anthropic` SDKs (pinned in
//! `tests/sdk/requirements.txt`) talking to keygate's plain-HTTP listener in front of the fake
//! upstream. Each test starts keygate, makes keys over the admin API, runs one scenario of
//! `tests/sdk/openai_client.py` or `tests/sdk/anthropic_client.py` and asserts on the JSON it
//! prints: plain and streamed calls yield the upstream's content, and keygate's 401, 403 and
//! 429 surface as the SDKs' own exception classes with the right codes and headers.
//!
//! The interpreter comes from `$KEYGATE_SDK_PYTHON`, which `.ci/test.sh` sets after installing
//! the requirements into `.venv`. CI always runs through that script; a bare `cargo test`
//! without it prints `skipped: …` for these tests and passes them, so that a machine without
//! Python can still run the rest of the suite.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::upstream::FakeUpstream;
use common::{TestApp, UPSTREAM_SECRET, upstream_config};
use serde_json::{Value, json};

/// A generous bound on one SDK scenario (the interpreter's start and a few local calls).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// The Python interpreter with the SDKs installed, or `None` (after saying so) to skip.
fn sdk_python() -> Option<String> {
    match std::env::var("KEYGATE_SDK_PYTHON") {
        Ok(python) if !python.is_empty() => Some(python),
        _ => {
            println!("skipped: KEYGATE_SDK_PYTHON is not set (run .ci/test.sh)");
            None
        }
    }
}

/// keygate in front of a fresh fake upstream, with three keys: a plain one, one allowed only
/// from 10.0.0.0/8 (the tests connect from 127.0.0.1) and one allowed one request a minute.
struct Setup {
    app: TestApp,
    upstream: FakeUpstream,
    key: String,
    key_id: String,
    ip_key: String,
    rate_key: String,
}

async fn setup() -> Setup {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (key_id, key) = app.create_key(json!({"name": "sdk"})).await;
    let (_, ip_key) = app
        .create_key(json!({"name": "sdk-ip", "allowed_ips": ["10.0.0.0/8"]}))
        .await;
    let (_, rate_key) = app
        .create_key(json!({"name": "sdk-rate", "rate_limit": {"requests": 1, "interval": "60s"}}))
        .await;
    Setup {
        app,
        upstream,
        key,
        key_id,
        ip_key,
        rate_key,
    }
}

/// The usage keygate recorded for the plain key, once `requests` of them are in (a request is
/// recorded when its response body ends, which may be just after the SDK returned).
async fn recorded_usage(s: &Setup, requests: u64) -> Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, key) = s
            .app
            .admin(http::Method::GET, &format!("/api/keys/{}", s.key_id), None)
            .await;
        if key["usage"]["requests"] == requests {
            return key["usage"].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "usage never reached {requests} requests: {key}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Runs `tests/sdk/{script} {scenario}` with a clean environment (no proxies, no
/// `OPENAI_*`/`ANTHROPIC_*` settings) and returns the JSON object it printed.
async fn run(python: &str, s: &Setup, script: &str, scenario: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(&path)
        .arg(scenario)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("KEYGATE_BASE_URL", format!("http://{}", s.app.addr))
        .env("KEYGATE_KEY", &s.key)
        .env("KEYGATE_IP_KEY", &s.ip_key)
        .env("KEYGATE_RATE_KEY", &s.rate_key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The server runs on this test's runtime, so the child is awaited, never waited on.
    let out = tokio::time::timeout(SCENARIO_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} {scenario} did not finish in {SCENARIO_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {python} (KEYGATE_SDK_PYTHON): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} {scenario} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!("{script} {scenario} printed no JSON ({e}):\n{stdout}\n{stderr}")
    })
}

/// The chunks of a streamed chat that carry content, in order.
fn contents(chunks: &Value) -> Vec<&str> {
    chunks
        .as_array()
        .expect("chunks")
        .iter()
        .filter_map(|c| c["content"].as_str())
        .collect()
}

#[tokio::test]
async fn openai_sdk_gets_plain_and_streamed_chat_completions() {
    let Some(python) = sdk_python() else { return };
    let s = setup().await;
    let out = run(&python, &s, "openai_client.py", "chat").await;

    assert_eq!(out["content"], "hi", "{out}");
    assert_eq!(out["model"], "gpt-4o");
    assert_eq!(out["prompt_tokens"], 11);
    assert_eq!(out["completion_tokens"], 7);
    assert!(out["x_request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(out["limit_requests"], "60", "the default [limits] bucket");
    assert_eq!(out["remaining_requests"], "59");

    assert_eq!(contents(&out["stream"]), ["t0", "t1", "t2"], "{out}");
    // Asked for, the usage chunk arrives last, with no choices.
    let with_usage = out["stream_with_usage"].as_array().unwrap();
    assert_eq!(contents(&out["stream_with_usage"]), ["t0", "t1", "t2"]);
    let last = with_usage.last().unwrap();
    assert_eq!(last["choices"], 0, "{out}");
    assert_eq!(last["usage"]["prompt_tokens"], 11, "{out}");
    assert_eq!(last["usage"]["completion_tokens"], 3, "{out}");
    assert_eq!(
        with_usage.iter().filter(|c| !c["usage"].is_null()).count(),
        1,
        "{out}"
    );

    let seen = s.upstream.received();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(
            r.headers["authorization"],
            format!("Bearer {UPSTREAM_SECRET}")
        );
        assert_eq!(r.json()["model"], "gpt-4o");
    }
    // keygate metered all three: 11 in each, 7 out for the plain call, 3 per stream.
    assert_eq!(
        recorded_usage(&s, 3).await,
        json!({"requests": 3, "input_tokens": 33, "output_tokens": 13})
    );
}

#[tokio::test]
async fn openai_stream_without_usage_request_gets_no_usage_chunk() {
    let Some(python) = sdk_python() else { return };
    let s = setup().await;
    let out = run(&python, &s, "openai_client.py", "stream_without_usage").await;

    // keygate asked the upstream for usage, to meter the stream (SPEC §2, Usage) ...
    let sent = s.upstream.last().json();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "keygate should ask the upstream for the usage chunk: {sent}"
    );
    // ... and dropped that chunk, which the client did not ask for.
    let chunks = out["stream"].as_array().unwrap();
    assert!(
        chunks
            .iter()
            .all(|c| c["usage"].is_null() && c["choices"] != 0),
        "a usage chunk reached a client that did not ask for one: {out}"
    );
    assert_eq!(contents(&out["stream"]), ["t0", "t1", "t2"], "{out}");
}

/// Checks one refusal as `openai_client.py` describes it.
fn assert_openai_refusal(e: &Value, class: &str, status: u16, code: &str, kind: &str) {
    assert_eq!(e["class"], class, "{e}");
    assert_eq!(e["status"], status, "{e}");
    assert_eq!(e["code"], code, "{e}");
    assert_eq!(e["type"], kind, "{e}");
    let id = e["x_request_id"].as_str().unwrap();
    assert!(id.starts_with("req_"), "{e}");
    assert_eq!(
        e["request_id"], id,
        "the SDK's request_id is keygate's: {e}"
    );
}

#[tokio::test]
async fn openai_sdk_raises_its_error_classes_for_401_403_and_429() {
    let Some(python) = sdk_python() else { return };
    let s = setup().await;
    let out = run(&python, &s, "openai_client.py", "errors").await;

    assert_openai_refusal(
        &out["bad_key"],
        "AuthenticationError",
        401,
        "invalid_api_key",
        "authentication_error",
    );
    assert_openai_refusal(
        &out["ip"],
        "PermissionDeniedError",
        403,
        "ip_not_allowed",
        "permission_error",
    );
    assert_eq!(out["rate_first"], "hi");
    assert_openai_refusal(
        &out["rate"],
        "RateLimitError",
        429,
        "rate_limit_exceeded",
        "rate_limit_error",
    );
    let retry_after: u64 = out["rate"]["retry_after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{out}");
    assert_eq!(
        s.upstream.received().len(),
        1,
        "only the rate-limited key's first call went upstream"
    );
}

#[tokio::test]
async fn anthropic_sdk_gets_plain_and_streamed_messages() {
    let Some(python) = sdk_python() else { return };
    let s = setup().await;
    let out = run(&python, &s, "anthropic_client.py", "messages").await;

    assert_eq!(out["text"], "hi", "{out}");
    assert_eq!(out["model"], "claude-sonnet-4-5");
    assert_eq!(out["input_tokens"], 13);
    assert_eq!(out["output_tokens"], 9);
    assert!(out["x_request_id"].as_str().unwrap().starts_with("req_"));
    assert_eq!(out["limit_requests"], "60", "the default [limits] bucket");

    assert_eq!(
        out["event_types"],
        json!([
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]),
        "{out}"
    );
    assert_eq!(out["deltas"], json!(["t0", "t1", "t2"]));
    assert_eq!(out["stream_text"], "t0t1t2");
    assert_eq!(out["final_text"], "t0t1t2");
    assert_eq!(out["final_stop_reason"], "end_turn");
    assert_eq!(out["final_input_tokens"], 13);
    assert_eq!(out["final_output_tokens"], 3);

    let seen = s.upstream.received();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert_eq!(r.path, "/anthropic/v1/messages");
        assert_eq!(r.headers["x-api-key"], UPSTREAM_SECRET);
        assert!(r.headers.get("authorization").is_none());
        assert!(r.headers.get("anthropic-version").is_some());
    }
    // 13 in each; 9 out for the plain call, 3 for each stream (message_delta's count).
    assert_eq!(
        recorded_usage(&s, 3).await,
        json!({"requests": 3, "input_tokens": 39, "output_tokens": 15})
    );
}

/// Checks one refusal as `anthropic_client.py` describes it: the SDK's class, and keygate's
/// Anthropic-style body.
fn assert_anthropic_refusal(e: &Value, class: &str, status: u16, kind: &str) {
    assert_eq!(e["class"], class, "{e}");
    assert_eq!(e["status"], status, "{e}");
    assert_eq!(e["type"], kind, "{e}");
    assert_eq!(e["body"]["type"], "error", "{e}");
    assert_eq!(e["body"]["error"]["type"], kind, "{e}");
    assert!(e["body"]["error"]["message"].is_string(), "{e}");
    let id = e["x_request_id"].as_str().unwrap();
    assert!(id.starts_with("req_"), "{e}");
    assert_eq!(e["body"]["request_id"], id, "{e}");
}

#[tokio::test]
async fn anthropic_sdk_raises_its_error_classes_for_401_403_and_429() {
    let Some(python) = sdk_python() else { return };
    let s = setup().await;
    let out = run(&python, &s, "anthropic_client.py", "errors").await;

    assert_anthropic_refusal(
        &out["bad_key"],
        "AuthenticationError",
        401,
        "authentication_error",
    );
    assert_anthropic_refusal(&out["ip"], "PermissionDeniedError", 403, "permission_error");
    assert_eq!(out["rate_first"], "hi");
    assert_anthropic_refusal(&out["rate"], "RateLimitError", 429, "rate_limit_error");
    let retry_after: u64 = out["rate"]["retry_after"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{out}");
    assert_eq!(
        s.upstream.received().len(),
        1,
        "only the rate-limited key's first call went upstream"
    );
}
