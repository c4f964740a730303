//! `keygate config check`: validates files with the real config module, without a server.

use crate::common::cli::{command, keygate, run};

#[test]
fn config_check_without_a_file_says_the_builtin_defaults_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(command().current_dir(dir.path()).args(["config", "check"])).ok();
    assert_eq!(out.stdout, "no config file: built-in defaults are valid\n");
}

#[test]
fn config_check_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.toml");
    std::fs::write(
        &file,
        "[keys]\nprefix = \"sk-test-\"\nmax_active_per_account = 5\n",
    )
    .unwrap();
    let out = keygate(&["config", "check", file.to_str().unwrap()]).ok();
    assert_eq!(out.stdout, format!("{}: ok\n", file.display()));

    // The file is found through --config, KEYGATE_CONFIG and ./keygate.toml too.
    keygate(&["--config", file.to_str().unwrap(), "config", "check"]).ok();
    run(command()
        .env("KEYGATE_CONFIG", &file)
        .args(["config", "check"]))
    .ok();
    std::fs::copy(&file, dir.path().join("keygate.toml")).unwrap();
    let out = run(command().current_dir(dir.path()).args(["config", "check"])).ok();
    assert_eq!(out.stdout, "keygate.toml: ok\n");
}

#[test]
fn config_check_reports_every_error_with_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nstat_dir = \"/tmp/x\"\n\n[keys]\nprefixx = \"sk-\"\n",
    )
    .unwrap();
    let out = keygate(&["config", "check", file.to_str().unwrap()]).expect_code(1);
    assert_eq!(out.stdout, "");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "one line per error: {}", out.stderr);
    assert!(
        lines[0].starts_with(&format!("{}:2:", file.display())),
        "{}",
        out.stderr
    );
    assert!(lines[0].contains("stat_dir"), "{}", out.stderr);
    assert!(
        lines[1].starts_with(&format!("{}:5:", file.display())),
        "{}",
        out.stderr
    );
    assert!(lines[1].contains("prefixx"), "{}", out.stderr);
}

#[test]
fn config_check_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let out = keygate(&["config", "check", missing.to_str().unwrap()]).expect_code(1);
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);
}
