//! Finding the socket (flag, environment, config files) and the exit codes of SPEC §4.

use serde_json::json;

use crate::common::cli::{TestServer, command, keygate, run};

#[test]
fn the_socket_flag_works_before_and_after_the_subcommand() {
    let server = TestServer::start();
    let socket = server.socket.to_str().unwrap();
    for args in [
        &["--socket", socket, "keys", "list"][..],
        &["keys", "--socket", socket, "list"],
        &["keys", "list", "--socket", socket],
        &["status", "--socket", socket],
    ] {
        keygate(args).ok();
    }
}

#[test]
fn keygate_socket_env_points_the_cli_at_the_server() {
    let server = TestServer::start();
    let out = run(command()
        .env("KEYGATE_SOCKET", &server.socket)
        .args(["status"]))
    .ok();
    assert!(
        out.stdout
            .contains(&format!("socket:          {}\n", server.socket.display())),
        "{}",
        out.stdout
    );

    // The flag wins over the environment.
    let out = run(command()
        .env("KEYGATE_SOCKET", "/nonexistent/admin.sock")
        .args(["status", "--socket"])
        .arg(&server.socket));
    out.ok();
}

#[test]
fn the_socket_is_found_through_the_config_file() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keygate.toml");
    // Settings the client does not read, and credential files it could not read, do not matter.
    let text = format!(
        "[admin]\nsocket = {:?}\n[upstreams.openai]\nbase_url = \"https://api.openai.com\"\n\
         api_key_file = \"/root/no-such-file\"\n",
        server.socket.display().to_string()
    );
    std::fs::write(&file, text).unwrap();

    keygate(&["--config", file.to_str().unwrap(), "status"]).ok();
    run(command().env("KEYGATE_CONFIG", &file).arg("status")).ok();
    run(command().current_dir(dir.path()).arg("status")).ok();

    // Without admin.socket, a file means /run/keygate/admin.sock; said when it cannot be reached.
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, "[keys]\nprefix = \"sk-x-\"\n").unwrap();
    let out = keygate(&["--config", bare.to_str().unwrap(), "status"]).expect_code(3);
    assert!(
        out.stderr
            .contains("/run/keygate/admin.sock (admin.socket of"),
        "{}",
        out.stderr
    );

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[admin\nsocket = 1\n").unwrap();
    let out = keygate(&["--config", broken.to_str().unwrap(), "status"]).expect_code(1);
    assert!(out.stderr.contains("not valid TOML"), "{}", out.stderr);
    assert!(out.stderr.contains("broken.toml"), "{}", out.stderr);
}

#[test]
fn an_unreachable_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let out = keygate(&["--socket", missing.to_str().unwrap(), "keys", "list"]).expect_code(3);
    assert!(
        out.stderr
            .starts_with("error: cannot reach the admin socket"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("(from --socket)"), "{}", out.stderr);
    assert_eq!(out.stdout, "");

    // A socket file nobody listens on any more (a crashed server): connection refused.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    keygate(&["--socket", stale.to_str().unwrap(), "status"]).expect_code(3);

    // With nothing configured, the built-in default is tried and named.
    let out = run(command().current_dir(dir.path()).arg("status")).expect_code(3);
    assert!(
        out.stderr.contains("./keygate-data/admin.sock"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_bad_flag_value_exits_2() {
    let server = TestServer::start();
    let out = server
        .cli(&["keys", "create", "--name", "x", "--rate", "60"])
        .expect_code(2);
    assert!(
        out.stderr.contains("--rate") && out.stderr.contains("60/60s"),
        "{}",
        out.stderr
    );
    for bad in [
        &["keys", "create", "--name", "x", "--quota", "requests=5"][..],
        &["keys", "create", "--name", "x", "--meta", "novalue"],
        &[
            "keys", "create", "--name", "x", "--meta", "a=1", "--meta", "a=2",
        ],
        &["keys", "create", "--name", "x", "--scopes", "root"],
        &["keys", "list", "--limit", "0"],
        &[
            "keys",
            "update",
            "key_0000000000000000",
            "--enable",
            "--disable",
        ],
    ] {
        server.cli(bad).expect_code(2);
    }
    let listed = server.cli(&["keys", "list", "--all", "--json"]).ok().json();
    assert_eq!(listed, json!([]), "nothing reached the server");
}

#[test]
fn server_errors_exit_1_with_message_and_code() {
    let server = TestServer::start();
    let out = server
        .cli(&["keys", "show", "key_0000000000000000"])
        .expect_code(1);
    assert_eq!(
        out.stderr,
        "error: key \"key_0000000000000000\" not found (not_found)\n"
    );
    assert_eq!(out.stdout, "");

    for n in 0..10 {
        server
            .cli(&[
                "keys",
                "create",
                "--name",
                &format!("k{n}"),
                "--account",
                "acme",
            ])
            .ok();
    }
    let out = server
        .cli(&["keys", "create", "--name", "k10", "--account", "acme"])
        .expect_code(1);
    assert_eq!(
        out.stderr,
        "error: account acme already has 10 active keys (limit 10) (key_limit_reached)\n"
    );
    assert_eq!(out.stdout, "", "no secret for a key that was not created");

    let out = server
        .cli(&["keys", "create", "--name", "x", "--account", "a/b"])
        .expect_code(1);
    assert!(
        out.stderr.ends_with("(invalid_account)\n"),
        "{}",
        out.stderr
    );
}
