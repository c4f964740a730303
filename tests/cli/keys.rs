//! Keys: create, list, show, update, revoke, rotate, primary, and where secrets may appear.

use serde_json::{Value, json};

use crate::common::cli::{Run, TestServer};
use crate::{create_key, looks_like_a_secret, show};

#[test]
fn keys_create_prints_the_secret_alone_on_the_last_stdout_line() {
    let server = TestServer::start();
    let out = server
        .cli(&[
            "keys",
            "create",
            "--name",
            "ci deploy",
            "--account",
            "acme",
            "--scopes",
            "chat",
            "--expires-in",
            "90d",
            "--rate",
            "60/60s",
            "--tokens",
            "100000/60s",
            "--quota",
            "requests=1000,period=month",
            "--origin",
            "app.example.com",
            "--ip",
            "10.0.0.0/8",
            "--model",
            "gpt-4o*",
            "--meta",
            "team=search",
            "--meta",
            "env=prod",
        ])
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout holds the secret and nothing else: {:?}",
        out.stdout
    );
    let secret = lines[0];
    assert!(looks_like_a_secret(secret), "{secret:?}");
    assert!(!out.stderr.contains(secret), "the secret is not on stderr");
    assert!(
        out.stderr
            .contains("store this key now; it cannot be shown again"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("in account acme (primary)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&secret[..18]),
        "stderr shows the prefix: {}",
        out.stderr
    );

    let id = out
        .stderr
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .expect("the id on stderr");
    let key = show(&server, id);
    assert_eq!(key["name"], "ci deploy");
    assert_eq!(key["scopes"], json!(["chat"]));
    assert_eq!(
        key["rate_limit"],
        json!({"requests": 60, "interval": "60s"})
    );
    assert_eq!(
        key["token_limit"],
        json!({"tokens": 100000, "interval": "60s"})
    );
    assert_eq!(
        key["quota"],
        json!({"requests": 1000, "tokens": null, "period": "month"})
    );
    assert_eq!(key["allowed_origins"], json!(["app.example.com"]));
    assert_eq!(key["allowed_ips"], json!(["10.0.0.0/8"]));
    assert_eq!(key["allowed_models"], json!(["gpt-4o*"]));
    assert_eq!(key["metadata"], json!({"team": "search", "env": "prod"}));
    assert!(key["expires_at"].is_string());
    assert!(key.get("key").is_none(), "show never carries the secret");
    assert_eq!(key["key_prefix"].as_str(), Some(&secret[..18]));
}

#[test]
fn keys_create_json_prints_the_whole_object_with_the_secret() {
    let server = TestServer::start();
    let out = server
        .cli(&["keys", "create", "--name", "bot", "--json"])
        .ok();
    let object = out.json();
    assert!(looks_like_a_secret(object["key"].as_str().unwrap()));
    assert_eq!(object["account"], "default");
    assert_eq!(object["scopes"], json!(["chat", "read"]));
    assert_eq!(out.stderr, "", "nothing else is printed");
}

#[test]
fn keys_list_and_show_print_tables_and_json() {
    let server = TestServer::start();
    let (a, secret_a) = create_key(&server, "alpha", &["--account", "acme"]);
    let (b, secret_b) = create_key(
        &server,
        "beta",
        &["--account", "globex", "--expires-in", "30d"],
    );

    let out = server.cli(&["keys", "list"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ID", "NAME", "ACCOUNT", "PREFIX", "SCOPES", "STATUS", "PRIMARY", "EXPIRES", "LAST",
            "USED"
        ]
    );
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(lines[1].starts_with(&b), "newest first: {}", out.stdout);
    let row_b: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        row_b[1..],
        [
            "beta",
            "globex",
            &secret_b[..18],
            "chat,read",
            "active",
            "yes",
            "in",
            "29d",
            "never"
        ]
    );
    let row_a: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row_a[..3], [a.as_str(), "alpha", "acme"]);
    assert_eq!(row_a[row_a.len() - 2..], ["never", "never"]);
    // Columns line up: every row's STATUS starts where the header's does.
    let col = lines[0].find("STATUS").unwrap();
    assert!(
        lines[1..].iter().all(|l| l[col..].starts_with("active")),
        "{}",
        out.stdout
    );
    for secret in [&secret_a, &secret_b] {
        assert!(!out.stdout.contains(secret.as_str()));
    }

    let listed = server
        .cli(&["keys", "list", "--account", "acme", "--json"])
        .ok()
        .json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a.as_str()]);

    let page = server.cli(&["keys", "list", "--limit", "1"]).ok();
    assert_eq!(page.stdout.lines().count(), 2, "{}", page.stdout);
    assert!(
        page.stderr.contains(&format!("--before {b}")),
        "{}",
        page.stderr
    );
    let next = server
        .cli(&["keys", "list", "--limit", "1", "--before", &b, "--json"])
        .ok()
        .json();
    assert_eq!(next[0]["id"], a.as_str());

    let out = server.cli(&["keys", "show", &a]).ok();
    assert!(
        out.stdout
            .starts_with(&format!("id:          {a}\nname:        alpha\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\nstatus:      active\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\nrate limit:  config default\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\nexpires:     never\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn keys_update_disables_then_enables_and_changes_only_what_is_given() {
    let server = TestServer::start();
    let (id, _) = create_key(
        &server,
        "svc",
        &["--origin", "a.example.com", "--rate", "5/1s"],
    );

    let out = server.cli(&["keys", "update", &id, "--disable"]).ok();
    assert!(
        out.stdout.starts_with(&format!("updated key {id}\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\nstatus:      disabled\n"),
        "{}",
        out.stdout
    );
    assert!(
        !server.cli(&["keys", "list"]).ok().stdout.contains(&id),
        "inactive keys are hidden"
    );
    let all = server.cli(&["keys", "list", "--all"]).ok().stdout;
    assert!(
        all.lines()
            .any(|l| l.starts_with(&id) && l.contains(" disabled ")),
        "{all}"
    );

    server
        .cli(&["keys", "update", &id, "--enable", "--name", "svc-2"])
        .ok();
    let key = show(&server, &id);
    assert_eq!(key["is_active"], true);
    assert_eq!(key["name"], "svc-2");
    assert_eq!(
        key["allowed_origins"],
        json!(["a.example.com"]),
        "untouched"
    );
    assert_eq!(
        key["rate_limit"],
        json!({"requests": 5, "interval": "1s"}),
        "untouched"
    );

    server
        .cli(&[
            "keys",
            "update",
            &id,
            "--origin",
            "b.example.com",
            "--origin",
            "*.c.com",
            "--no-rate",
        ])
        .ok();
    let key = show(&server, &id);
    assert_eq!(
        key["allowed_origins"],
        json!(["b.example.com", "*.c.com"]),
        "replaced"
    );
    assert_eq!(key["rate_limit"], Value::Null);

    let patched = server
        .cli(&["keys", "update", &id, "--clear-origins", "--json"])
        .ok()
        .json();
    assert_eq!(patched["success"], true);
    assert_eq!(patched["key"]["allowed_origins"], json!([]));

    let none = server.cli(&["keys", "update", &id]).expect_code(2);
    assert!(none.stderr.contains("nothing to change"), "{}", none.stderr);
}

#[test]
fn keys_revoke_is_final() {
    let server = TestServer::start();
    let (id, _) = create_key(&server, "old", &[]);
    let out = server.cli(&["keys", "revoke", &id]).ok();
    assert_eq!(
        out.stdout,
        format!("revoked key {id}; its secret no longer works\n")
    );
    let key = show(&server, &id);
    assert!(key["revoked_at"].is_string());
    assert_eq!(key["is_active"], false);
    assert!(
        server
            .cli(&["keys", "show", &id])
            .ok()
            .stdout
            .contains("\nstatus:      revoked\n")
    );
    let again = server
        .cli(&["keys", "update", &id, "--enable"])
        .expect_code(1);
    assert!(
        again.stderr.ends_with("(key_revoked)\n"),
        "{}",
        again.stderr
    );
}

#[test]
fn keys_rotate_with_grace_prints_only_the_new_secret() {
    let server = TestServer::start();
    let (id, old) = create_key(&server, "rotating", &[]);
    let out = server.cli(&["keys", "rotate", &id, "--grace", "24h"]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    let new = lines[0];
    assert!(looks_like_a_secret(new) && new != old, "{new}");
    assert!(
        out.stderr.contains("the old secret keeps working for 24h"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("store this key now"), "{}", out.stderr);
    assert!(!out.stderr.contains(new) && !out.stderr.contains(&old));
    let key = show(&server, &id);
    assert_eq!(key["id"], id.as_str());
    assert_eq!(key["key_prefix"].as_str(), Some(&new[..18]));

    let again = server.cli(&["keys", "rotate", &id, "--json"]).ok().json();
    assert!(looks_like_a_secret(again["key"].as_str().unwrap()));
    assert_ne!(again["key"].as_str(), Some(new));
}

#[test]
fn keys_primary_moves_the_primary_flag_within_the_account() {
    let server = TestServer::start();
    let (first, _) = create_key(&server, "first", &["--account", "acme"]);
    let (second, _) = create_key(&server, "second", &["--account", "acme"]);
    assert_eq!(show(&server, &first)["primary"], true);
    assert_eq!(show(&server, &second)["primary"], false);

    let out = server.cli(&["keys", "primary", &second]).ok();
    assert_eq!(
        out.stdout,
        format!("key {second} is now the primary key of its account\n")
    );
    assert_eq!(show(&server, &first)["primary"], false);
    assert_eq!(show(&server, &second)["primary"], true);
    let account = server
        .cli(&["accounts", "show", "acme", "--json"])
        .ok()
        .json();
    assert_eq!(account["primary_key"], second.as_str());
}

#[test]
fn secrets_appear_nowhere_but_the_create_and_rotate_answers() {
    let server = TestServer::start();
    let (id, secret) = create_key(&server, "quiet", &["--account", "acme"]);
    let outputs: Vec<Run> = vec![
        server.cli(&["keys", "list", "--all"]),
        server.cli(&["keys", "list", "--json"]),
        server.cli(&["keys", "show", &id]),
        server.cli(&["keys", "show", &id, "--json"]),
        server.cli(&["keys", "update", &id, "--name", "still-quiet"]),
        server.cli(&["accounts", "show", "acme", "--json"]),
        server.cli(&["audit"]),
        server.cli(&["status", "--json"]),
    ];
    for out in outputs {
        let out = out.ok();
        assert!(
            !out.stdout.contains(&secret[6..]) && !out.stderr.contains(&secret[6..]),
            "{out:?}"
        );
    }
}
