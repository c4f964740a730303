//! The admin API over the Unix socket, end to end (SPEC §3): keys and accounts through their
//! whole life, input validation naming the field, the key limit and the primary key, the audit
//! log, and persistence across a restart.

mod common;

use std::time::Duration;

use common::client::{self, post, send};
use common::upstream::FakeUpstream;
use common::{TestApp, UPSTREAM_SECRET, upstream_config};
use http::{Method, StatusCode};
use keygate::clock::Clock;
use serde_json::{Value, json};

fn chat() -> Value {
    json!({"model": "gpt-4o", "messages": []})
}

#[tokio::test]
async fn a_created_key_has_the_spec_shape_and_its_secret_is_shown_once() {
    let app = TestApp::start("").await;
    let (status, key) = app
        .admin(Method::POST, "/api/keys", Some(json!({"name": "first"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = key["key"].as_str().unwrap();
    let body = secret.strip_prefix("sk-kg-").unwrap();
    assert_eq!(body.len(), 28);
    assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert!(keygate::keys::parse(secret).is_ok());
    assert_eq!(key["key_prefix"], &secret[..18]);
    let id = key["id"].as_str().unwrap();
    assert!(id.starts_with("key_") && id.len() == 20);
    assert_eq!(key["account"], "default");
    assert_eq!(key["scopes"], json!(["chat", "read"]));
    assert_eq!(key["is_active"], true);
    assert_eq!(key["primary"], true);
    for field in [
        "expires_at",
        "last_used_at",
        "rate_limit",
        "token_limit",
        "quota",
    ] {
        assert_eq!(key[field], Value::Null, "{field}");
    }
    assert_eq!(
        key["usage"],
        json!({"requests": 0, "input_tokens": 0, "output_tokens": 0})
    );
    assert!(keygate::clock::parse_rfc3339(key["created_at"].as_str().unwrap()).is_some());

    let (_, shown) = app
        .admin(Method::GET, &format!("/api/keys/{id}"), None)
        .await;
    let (_, listed) = app.admin(Method::GET, "/api/keys", None).await;
    for view in [&shown, &listed] {
        assert!(
            !view.to_string().contains(secret),
            "the secret was shown again"
        );
    }
    assert!(shown.get("key").is_none());
}

#[tokio::test]
async fn bad_input_answers_400_naming_the_field() {
    let app = TestApp::start("").await;
    let cases = [
        (json!({}), "invalid_name", "name"),
        (json!({"name": ""}), "invalid_name", "name"),
        (
            json!({"name": "x", "scopes": ["root"]}),
            "invalid_scopes",
            "scopes",
        ),
        (
            json!({"name": "x", "scopes": "chat"}),
            "invalid_scopes",
            "scopes",
        ),
        (
            json!({"name": "x", "account": "a b"}),
            "invalid_account",
            "account",
        ),
        (
            json!({"name": "x", "allowed_ips": ["10.0.0.0/33"]}),
            "invalid_allowed_ips",
            "allowed_ips",
        ),
        (
            json!({"name": "x", "allowed_origins": ["http://"]}),
            "invalid_allowed_origins",
            "allowed_origins",
        ),
        (
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            "invalid_expires_at",
            "expires_at",
        ),
        (
            json!({"name": "x", "expires_at": "soon"}),
            "invalid_expires_at",
            "expires_at",
        ),
        (
            json!({"name": "x", "expires_in": "90"}),
            "invalid_expires_in",
            "expires_in",
        ),
        (
            json!({"name": "x", "expires_in": "1d", "expires_at": "2099-01-01T00:00:00Z"}),
            "invalid_expires_at",
            "expires_at",
        ),
        (
            json!({"name": "x", "rate_limit": {"requests": 0, "interval": "1s"}}),
            "invalid_rate_limit",
            "rate_limit",
        ),
        (
            json!({"name": "x", "rate_limit": {"requests": 5}}),
            "invalid_rate_limit",
            "rate_limit",
        ),
        (
            json!({"name": "x", "token_limit": {"tokens": 5, "interval": "never"}}),
            "invalid_token_limit",
            "token_limit",
        ),
        (
            json!({"name": "x", "quota": {"period": "week", "requests": 1}}),
            "invalid_quota",
            "quota",
        ),
        (
            json!({"name": "x", "quota": {"period": "day"}}),
            "invalid_quota",
            "quota",
        ),
        (
            json!({"name": "x", "metadata": [1]}),
            "invalid_metadata",
            "metadata",
        ),
        (
            json!({"name": "x", "metadata": {"k": "v".repeat(5000)}}),
            "invalid_metadata",
            "metadata",
        ),
        (
            json!({"name": "x", "nmae": "typo"}),
            "unknown_field",
            "nmae",
        ),
    ];
    for (body, code, param) in cases {
        let (status, err) = app
            .admin(Method::POST, "/api/keys", Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(err["error"]["code"], code, "{body}: {err}");
        assert_eq!(err["error"]["param"], param, "{body}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
    }
    let (_, listed) = app
        .admin(Method::GET, "/api/keys?include_inactive=true", None)
        .await;
    assert_eq!(listed, json!([]), "no bad request created anything");
    let (status, err) = app.admin(Method::GET, "/api/keys?limit=0", None).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_limit"))
    );
}

#[tokio::test]
async fn unknown_ids_and_paths_answer_404() {
    let app = TestApp::start("").await;
    for path in [
        "/api/keys/key_0000000000000000",
        "/api/keys/nonsense",
        "/api/accounts/nobody",
        "/api/nothing",
    ] {
        let (status, err) = app.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(err["error"]["type"], "not_found_error");
    }
    let (status, _) = app
        .admin(Method::DELETE, "/api/keys/key_0000000000000000", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.admin(Method::PUT, "/api/keys", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn keys_list_newest_first_with_cursor_account_filter_and_inactive() {
    let app = TestApp::start("").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let account = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            app.create_key(json!({"name": format!("k{i}"), "account": account}))
                .await
                .0,
        );
    }
    let list = |q: &'static str| {
        let app = &app;
        async move {
            let (s, v) = app.admin(Method::GET, &format!("/api/keys{q}"), None).await;
            assert_eq!(s, StatusCode::OK);
            v.as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
    assert_eq!(list("").await, newest_first);
    assert_eq!(list("?limit=2").await, newest_first[..2]);
    let (_, page) = app
        .admin(
            Method::GET,
            &format!("/api/keys?limit=2&before={}", newest_first[1]),
            None,
        )
        .await;
    let page: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(page, [newest_first[2].as_str(), newest_first[3].as_str()]);
    assert_eq!(
        list("?account=odd").await,
        vec![ids[3].clone(), ids[1].clone()]
    );

    let (s, _) = app
        .admin(Method::DELETE, &format!("/api/keys/{}", ids[4]), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .admin(
            Method::PATCH,
            &format!("/api/keys/{}", ids[3]),
            Some(json!({"is_active": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        list("").await,
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()]
    );
    assert_eq!(list("?include_inactive=true").await.len(), 5);
    let (_, revoked) = app
        .admin(Method::GET, &format!("/api/keys/{}", ids[4]), None)
        .await;
    assert_eq!(revoked["is_active"], false);
    assert!(revoked["revoked_at"].is_string());
}

#[tokio::test]
async fn a_patch_changes_only_what_it_names_and_null_clears() {
    let app = TestApp::start("").await;
    let (id, _) = app
        .create_key(
            json!({"name": "k", "rate_limit": {"requests": 5, "interval": "1m"},
            "allowed_models": ["gpt-*"], "metadata": {"team": "a"}, "expires_in": "30d"}),
        )
        .await;
    let path = format!("/api/keys/{id}");
    let (s, r) = app
        .admin(
            Method::PATCH,
            &path,
            Some(json!({"name": "renamed", "rate_limit": null, "scopes": ["chat"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["success"], true);
    let key = &r["key"];
    assert_eq!(key["name"], "renamed");
    assert_eq!(key["rate_limit"], Value::Null);
    assert_eq!(key["scopes"], json!(["chat"]));
    assert_eq!(key["allowed_models"], json!(["gpt-*"]));
    assert_eq!(key["metadata"], json!({"team": "a"}));
    assert!(key["expires_at"].is_string());
    let (_, r) = app
        .admin(Method::PATCH, &path, Some(json!({"expires_at": null})))
        .await;
    assert_eq!(r["key"]["expires_at"], Value::Null);
    let (s, err) = app
        .admin(Method::PATCH, &path, Some(json!({"id": "key_x"})))
        .await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("unknown_field"))
    );
}

#[tokio::test]
async fn an_account_holds_at_most_its_limit_of_active_keys() {
    let app = TestApp::start("[keys]\nmax_active_per_account = 2\n").await;
    let (a, _) = app
        .create_key(json!({"name": "a", "account": "acme"}))
        .await;
    app.create_key(json!({"name": "b", "account": "acme"}))
        .await;
    let (s, err) = app
        .admin(
            Method::POST,
            "/api/keys",
            Some(json!({"name": "c", "account": "acme"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "key_limit_reached");
    // Another account is not affected; a disabled key frees its slot, and re-enabling it is refused.
    app.create_key(json!({"name": "c", "account": "other"}))
        .await;
    app.admin(
        Method::PATCH,
        &format!("/api/keys/{a}"),
        Some(json!({"is_active": false})),
    )
    .await;
    app.create_key(json!({"name": "c", "account": "acme"}))
        .await;
    let (s, err) = app
        .admin(
            Method::PATCH,
            &format!("/api/keys/{a}"),
            Some(json!({"is_active": true})),
        )
        .await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("key_limit_reached"))
    );
    // The account's own limit overrides the config's.
    let (s, _) = app
        .admin(
            Method::PATCH,
            "/api/accounts/acme",
            Some(json!({"max_active_keys": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .admin(
            Method::PATCH,
            &format!("/api/keys/{a}"),
            Some(json!({"is_active": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

/// The account's primary key, checked against the keys' own flags: never more than one.
async fn primary(app: &TestApp) -> Option<String> {
    let (_, acct) = app.admin(Method::GET, "/api/accounts/acme", None).await;
    let (_, keys) = app.admin(Method::GET, "/api/keys?account=acme", None).await;
    let flagged: Vec<String> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["primary"] == true)
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(flagged.len() <= 1, "{flagged:?}");
    assert_eq!(
        acct["primary_key"].as_str().map(str::to_owned),
        flagged.first().cloned()
    );
    flagged.first().cloned()
}

#[tokio::test]
async fn an_account_always_has_exactly_one_primary_while_it_has_active_keys() {
    let app = TestApp::start("").await;
    let (a, _) = app
        .create_key(json!({"name": "a", "account": "acme"}))
        .await;
    let (b, _) = app
        .create_key(json!({"name": "b", "account": "acme"}))
        .await;
    assert_eq!(primary(&app).await.as_deref(), Some(a.as_str()));
    let (s, _) = app
        .admin(Method::POST, &format!("/api/keys/{b}/primary"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(primary(&app).await.as_deref(), Some(b.as_str()));
    app.admin(Method::DELETE, &format!("/api/keys/{b}"), None)
        .await;
    assert_eq!(
        primary(&app).await.as_deref(),
        Some(a.as_str()),
        "the remaining key was promoted"
    );
    let (s, err) = app
        .admin(Method::POST, &format!("/api/keys/{b}/primary"), None)
        .await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("key_inactive"))
    );
    app.admin(Method::DELETE, &format!("/api/keys/{a}"), None)
        .await;
    assert_eq!(primary(&app).await, None);
}

#[tokio::test]
async fn a_rotated_key_keeps_its_id_and_the_old_secret_works_until_the_grace_ends() {
    let upstream = FakeUpstream::start().await;
    let clock = Clock::manual(1_800_000_000_000);
    let app = TestApp::start_with(&upstream_config(upstream.addr), clock.clone()).await;
    let (id, old) = app
        .create_key(json!({"name": "r", "scopes": ["chat"]}))
        .await;
    let (s, rotated) = app
        .admin(
            Method::POST,
            &format!("/api/keys/{id}/rotate"),
            Some(json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["id"], id.as_str());
    assert_eq!(rotated["scopes"], json!(["chat"]));
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    assert_eq!(
        send(&c, post(&url, Some(&old), &chat())).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, post(&url, Some(&new), &chat())).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        send(&c, post(&url, Some(&old), &chat())).await.code(),
        "invalid_api_key"
    );
    assert_eq!(
        send(&c, post(&url, Some(&new), &chat())).await.status,
        StatusCode::OK
    );

    // Without grace the old secret stops at once; a revoked key cannot be rotated.
    let (_, again) = app
        .admin(Method::POST, &format!("/api/keys/{id}/rotate"), None)
        .await;
    assert_eq!(
        send(&c, post(&url, Some(&new), &chat())).await.code(),
        "invalid_api_key"
    );
    let newest = again["key"].as_str().unwrap();
    assert_eq!(
        send(&c, post(&url, Some(newest), &chat())).await.status,
        StatusCode::OK
    );
    app.admin(Method::DELETE, &format!("/api/keys/{id}"), None)
        .await;
    let (s, err) = app
        .admin(Method::POST, &format!("/api/keys/{id}/rotate"), None)
        .await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("key_revoked"))
    );
}

#[tokio::test]
async fn accounts_are_created_listed_changed_and_deleted() {
    let app = TestApp::start("").await;
    let body = json!({"name": "acme", "max_active_keys": 4, "quota": {"requests": 100, "period": "month"}});
    let (s, acct) = app
        .admin(Method::POST, "/api/accounts", Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{acct}");
    assert_eq!(
        acct["quota"],
        json!({"requests": 100, "tokens": null, "period": "month"})
    );
    assert_eq!(acct["rate_limit"], Value::Null);
    let (s, err) = app.admin(Method::POST, "/api/accounts", Some(body)).await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("account_exists"))
    );
    // A key for an unknown account creates it with defaults.
    let (key, _) = app
        .create_key(json!({"name": "k", "account": "newco"}))
        .await;
    let (_, all) = app.admin(Method::GET, "/api/accounts", None).await;
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "newco"]);
    let (_, newco) = app.admin(Method::GET, "/api/accounts/newco", None).await;
    assert_eq!(newco["max_active_keys"], Value::Null);
    assert_eq!(newco["active_keys"], 1);

    let (s, r) = app
        .admin(
            Method::PATCH,
            "/api/accounts/acme",
            Some(json!({"quota": null, "token_limit": {"tokens": 1000, "interval": "1m"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["account"]["quota"], Value::Null);
    // Intervals come back normalised, in the SPEC's form.
    assert_eq!(
        r["account"]["token_limit"],
        json!({"tokens": 1000, "interval": "60s"})
    );

    let (s, err) = app.admin(Method::DELETE, "/api/accounts/newco", None).await;
    assert_eq!(
        (s, err["error"]["code"].clone()),
        (StatusCode::CONFLICT, json!("account_has_keys"))
    );
    app.admin(Method::DELETE, &format!("/api/keys/{key}"), None)
        .await;
    let (s, _) = app.admin(Method::DELETE, "/api/accounts/newco", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app.admin(Method::GET, "/api/accounts/newco", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_audit_log_says_who_did_what_and_never_holds_a_secret() {
    let app = TestApp::start("").await;
    let (id, secret) = app.create_key(json!({"name": "audited"})).await;
    let (_, rotated) = app
        .admin(Method::POST, &format!("/api/keys/{id}/rotate"), None)
        .await;
    app.admin(Method::DELETE, &format!("/api/keys/{id}"), None)
        .await;
    let (s, log) = app.admin(Method::GET, "/api/audit?limit=10", None).await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.revoke", "key.rotate", "key.create"]);
    let me = rustix::process::getuid().as_raw();
    for entry in log.as_array().unwrap() {
        assert_eq!(entry["actor"]["uid"], me);
        assert_eq!(entry["actor"]["pid"], std::process::id());
        assert_eq!(entry["target"], id.as_str());
        assert!(keygate::clock::parse_rfc3339(entry["at"].as_str().unwrap()).is_some());
    }
    let text = log.to_string();
    assert!(!text.contains(&secret) && !text.contains(rotated["key"].as_str().unwrap()));
    let (_, one) = app.admin(Method::GET, "/api/audit?limit=1", None).await;
    assert_eq!(one.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn keys_accounts_and_revocations_survive_a_restart() {
    let upstream = FakeUpstream::start().await;
    let config = upstream_config(upstream.addr);
    let app = TestApp::start(&config).await;
    let (kept, kept_secret) = app
        .create_key(json!({"name": "kept", "account": "acme", "allowed_models": ["gpt-*"]}))
        .await;
    let (gone, gone_secret) = app
        .create_key(json!({"name": "gone", "account": "acme"}))
        .await;
    app.admin(Method::DELETE, &format!("/api/keys/{gone}"), None)
        .await;
    app.admin(
        Method::PATCH,
        "/api/accounts/acme",
        Some(json!({"rate_limit": {"requests": 7, "interval": "1m"}})),
    )
    .await;
    let dir = app.stop().await;

    let app = TestApp::start_in(dir, "", &config, Clock::system()).await;
    let c = client::client();
    let url = app.url("/v1/chat/completions");
    let ok = send(&c, post(&url, Some(&kept_secret), &chat())).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.header("x-ratelimit-limit"),
        Some("7"),
        "the account's limit was reloaded"
    );
    let other_model = json!({"model": "claude", "messages": []});
    assert_eq!(
        send(&c, post(&url, Some(&kept_secret), &other_model))
            .await
            .code(),
        "model_not_allowed"
    );
    assert_eq!(
        send(&c, post(&url, Some(&gone_secret), &chat()))
            .await
            .code(),
        "invalid_api_key"
    );
    let (_, key) = app
        .admin(Method::GET, &format!("/api/keys/{kept}"), None)
        .await;
    assert_eq!(key["name"], "kept");
    assert_eq!(key["primary"], true);
    let (_, log) = app.admin(Method::GET, "/api/audit", None).await;
    assert_eq!(log.as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn status_and_config_show_state_without_secrets() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    app.create_key(json!({"name": "k"})).await;
    let (s, status) = app.admin(Method::GET, "/api/status", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["config_generation"], 1);
    assert_eq!(status["keys"]["stored"], 1);
    assert_eq!(status["accounts"], 1);
    let (s, config) = app.admin(Method::GET, "/api/config", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!config.to_string().contains(UPSTREAM_SECRET), "{config}");
    assert_eq!(
        config["config"]["upstreams"]["openai"]["credential"],
        "[redacted]"
    );
}

#[tokio::test]
async fn a_reload_swaps_a_valid_file_and_keeps_serving_on_a_broken_one() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let (_, key) = app.create_key(json!({"name": "k"})).await;
    let c = client::client();
    let original = std::fs::read_to_string(&app.config_path).unwrap();

    std::fs::write(
        &app.config_path,
        original.replace("path = \"/v1/\"", "path = \"/v9/\""),
    )
    .unwrap();
    let (s, report) = app.admin(Method::POST, "/api/config/reload", None).await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["generation"], 2);
    assert_eq!(
        send(
            &c,
            post(&app.url("/v9/chat/completions"), Some(&key), &chat())
        )
        .await
        .status,
        StatusCode::OK
    );

    std::fs::write(&app.config_path, "[server]\nmax_body_byte = 1\n").unwrap();
    let (s, report) = app.admin(Method::POST, "/api/config/reload", None).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(report["ok"], false);
    assert!(
        report["errors"][0].as_str().unwrap().contains(":2:1"),
        "{report}"
    );
    assert_eq!(
        send(
            &c,
            post(&app.url("/v9/chat/completions"), Some(&key), &chat())
        )
        .await
        .status,
        StatusCode::OK
    );
    let (_, config) = app.admin(Method::GET, "/api/config", None).await;
    assert_eq!(config["generation"], 2);
    assert_eq!(config["last_reload"]["ok"], false);
}
