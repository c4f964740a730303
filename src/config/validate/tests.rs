//! Tests of whole files: several sections at once, syntax errors, unknown sections, and the
//! shipped `config.example.toml`.

use std::path::Path as FsPath;

use crate::config::Snapshot;

/// Parses `text` with no environment, failing the test with every error if it does not load.
pub(super) fn parse_ok(text: &str) -> Snapshot {
    Snapshot::parse_with_env(text, FsPath::new("k.toml"), &|_| None)
        .unwrap_or_else(|errors| panic!("expected a valid config, got:\n{errors}"))
}

/// The errors of `text` as `LINE:COL: PATH: MESSAGE` (or `LINE:COL: MESSAGE` without a path).
pub(super) fn errors_of(text: &str) -> Vec<String> {
    match Snapshot::parse_with_env(text, FsPath::new("k.toml"), &|_| None) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .iter()
            .map(|e| match e.path.as_str() {
                "" => format!("{}:{}: {}", e.line, e.col, e.message),
                path => format!("{}:{}: {path}: {}", e.line, e.col, e.message),
            })
            .collect(),
    }
}

/// The shipped example, documenting every setting.
const EXAMPLE: &str = include_str!("../../../config.example.toml");

#[test]
fn problems_in_different_sections_are_all_reported_at_once() {
    let text = "\
[server]
max_body_bytes = \"lots\"

[upstreams.openai]
base_url = \"https://api.openai.com\"

[[routes]]
path = \"/v1/\"
upstream = \"openai\"
scop = \"chat\"

[[routes]]
path = \"/v2/\"
upstream = \"opnai\"
";
    assert_eq!(
        errors_of(text),
        [
            "2:18: server.max_body_bytes: expected an integer, found a string",
            "10:1: routes[0].scop: unknown key \"scop\" (did you mean \"scope\"?)",
            "14:12: routes[1].upstream: upstream \"opnai\" is not defined (defined: openai)",
        ]
    );
}

#[test]
fn errors_display_with_file_line_and_column() {
    let errors = Snapshot::parse_with_env(
        "[keys]\nprefix = \"1x\"\n[log]\nlevel = \"loud\"\n",
        FsPath::new("/etc/keygate/keygate.toml"),
        &|_| None,
    )
    .expect_err("invalid");
    let shown = errors.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0].starts_with("/etc/keygate/keygate.toml:2:10: keys.prefix: invalid key prefix"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("/etc/keygate/keygate.toml:4:9: log.level: unknown log level"),
        "{shown}"
    );
}

#[test]
fn syntax_errors_are_all_reported_and_stop_validation() {
    let text = "[server]\nmax_body_bytes = 5\nmax_body_bytes = 6\n[limits\nbogus = 1\nx = = 2\n";
    assert_eq!(
        errors_of(text),
        [
            "3:1: invalid TOML: duplicate key max_body_bytes",
            "4:8: invalid TOML: unclosed table, expected `]`",
            "6:5: invalid TOML: extra `=`, expected nothing",
            "6:7: invalid TOML: unexpected key or value, expected newline, `#`",
        ]
    );
}

#[test]
fn unknown_sections_are_named_with_a_suggestion() {
    assert_eq!(
        errors_of("[sever]\nmax_body_bytes = 1\n\n[extra]\ntitle = \"x\"\n"),
        [
            "1:2: sever: unknown section \"sever\" (did you mean \"server\"?); known sections: \
             server, admin, listeners, keys, limits, usage, log, metrics, upstreams, routes, presets",
            "4:2: extra: unknown section \"extra\"; known sections: server, admin, listeners, \
             keys, limits, usage, log, metrics, upstreams, routes, presets",
        ]
    );
    let errors = errors_of("title = \"keygate\"\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("1:1: title: unknown key \"title\";"),
        "{}",
        errors[0]
    );
}

#[test]
fn unknown_keys_anywhere_are_errors() {
    let text = "\
[server]
max_body_byte = 1
[admin]
sockets = \"/x\"
[[listeners]]
adr = \"127.0.0.1:1\"
[keys]
prefx = \"a\"
[limits]
token_limit = { tokens = 1, interval = \"1s\", burst = 2 }
[usage]
flush = \"1s\"
[log]
colour = true
[metrics]
address = \"127.0.0.1:9\"
[upstreams.a]
base_url = \"http://a\"
api_key = \"sk-nope\"
[presets.p]
upstream = \"a\"
model = \"m\"
system_prompt = \"\"
temperature = 1
";
    assert_eq!(
        errors_of(text),
        [
            "2:1: server.max_body_byte: unknown key \"max_body_byte\" (did you mean \"max_body_bytes\"?)",
            "4:1: admin.sockets: unknown key \"sockets\" (did you mean \"socket\"?)",
            "5:1: listeners[0].addr: missing required key \"addr\"",
            "6:1: listeners[0].adr: unknown key \"adr\" (did you mean \"addr\"?)",
            "8:1: keys.prefx: unknown key \"prefx\" (did you mean \"prefix\"?)",
            "10:46: limits.token_limit.burst: unknown key \"burst\"",
            "12:1: usage.flush: unknown key \"flush\"",
            "14:1: log.colour: unknown key \"colour\"",
            "16:1: metrics.address: unknown key \"address\"",
            "19:1: upstreams.a.api_key: unknown key \"api_key\"",
            "24:1: presets.p.temperature: unknown key \"temperature\"",
        ]
    );
}

#[test]
fn a_file_without_upstreams_or_routes_has_none() {
    let s = parse_ok("[server]\nstate_dir = \"/srv/keygate\"\n");
    assert!(s.upstreams.is_empty());
    assert!(s.routes.is_empty());
    assert!(s.presets.is_empty());
    assert_eq!(s.source.as_deref(), Some(FsPath::new("k.toml")));
}

#[test]
fn an_unreadable_file_is_one_error_without_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("keygate.toml");
    let errors = Snapshot::load_file(&missing).expect_err("missing file");
    assert_eq!(errors.len(), 1);
    let error = &errors.0[0];
    assert_eq!((error.line, error.col, error.path.as_str()), (0, 0, ""));
    assert_eq!(error.file, missing);
    assert!(
        error.message.starts_with("cannot read the config file: "),
        "{}",
        error.message
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );
}

#[test]
fn a_file_is_loaded_from_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("keygate.toml");
    std::fs::write(&file, "[keys]\nprefix = \"kg_\"\n").expect("write config");
    let s = Snapshot::load_file(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.keys.prefix, "kg_");
    assert_eq!(s.source.as_deref(), Some(file.as_path()));
    let resolved = Snapshot::resolve(Some(&file)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resolved.keys.prefix, "kg_");
}

#[test]
fn the_example_config_loads_with_the_documented_values() {
    let env = |name: &str| Some(format!("sk-{name}"));
    let s = Snapshot::parse_with_env(EXAMPLE, FsPath::new("config.example.toml"), &env)
        .unwrap_or_else(|e| panic!("config.example.toml is invalid:\n{e}"));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let defaults = parse_ok("");
    // The example spells out the defaults, so it reads the same as an empty file for these.
    assert_eq!(format!("{:?}", s.server), format!("{:?}", defaults.server));
    assert_eq!(format!("{:?}", s.admin), format!("{:?}", defaults.admin));
    assert_eq!(s.listeners, defaults.listeners);
    assert_eq!(format!("{:?}", s.keys), format!("{:?}", defaults.keys));
    assert_eq!(format!("{:?}", s.limits), format!("{:?}", defaults.limits));
    assert_eq!(format!("{:?}", s.usage), format!("{:?}", defaults.usage));
    assert_eq!(format!("{:?}", s.log), format!("{:?}", defaults.log));
    assert_eq!(s.metrics.addr, None);
    // Upstreams and routes are those of the built-in defaults.
    let builtin = crate::config::defaults::builtin_with_env(&env);
    assert_eq!(
        serde_json::to_string(&s.to_json()["upstreams"]).ok(),
        serde_json::to_string(&builtin.to_json()["upstreams"]).ok()
    );
    assert_eq!(s.to_json()["routes"], builtin.to_json()["routes"]);
    assert_eq!(s.routes.len(), 3);
    assert_eq!(
        s.upstream("openai")
            .and_then(|u| u.credential.as_ref())
            .map(|c| c.expose()),
        Some("sk-OPENAI_API_KEY")
    );
    assert!(s.presets.is_empty());
}

#[test]
fn the_example_config_documents_every_setting() {
    let blocks = example_blocks();
    for (shape, keys) in crate::config::raw::schema() {
        if shape.is_empty() {
            for section in *keys {
                assert!(
                    blocks.iter().any(
                        |(name, _)| name == section || name.starts_with(&format!("{section}."))
                    ),
                    "config.example.toml has no [{section}] section"
                );
            }
            continue;
        }
        // Keys of nested inline tables (limits.rate_limit) are written in their section's block.
        let wanted = |name: &str| match shape.get(1).map(String::as_str) {
            Some("*") => name.starts_with(&format!("{}.", shape[0])) || name == shape[0],
            _ => name == shape[0],
        };
        for key in *keys {
            let documented = blocks
                .iter()
                .filter(|(name, _)| wanted(name))
                .any(|(_, body)| sets_key(body, key));
            assert!(
                documented,
                "config.example.toml does not show {}.{key}",
                shape.join(".")
            );
        }
    }
}

/// The example split at its section headers (commented-out ones too): (header name, body).
fn example_blocks() -> Vec<(String, String)> {
    let mut blocks: Vec<(String, String)> = vec![(String::new(), String::new())];
    for line in EXAMPLE.lines() {
        let bare = line.trim_start_matches(['#', ' ']);
        if bare.starts_with('[') {
            let name = bare.trim_matches(['[', ']']).to_owned();
            blocks.push((name, String::new()));
        } else if let Some((_, body)) = blocks.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    blocks
}

/// Whether `body` assigns `key`, as `key = …` at a line's start (commented or not) or inside an
/// inline table.
fn sets_key(body: &str, key: &str) -> bool {
    let assignment = format!("{key} =");
    body.match_indices(&assignment).any(|(at, _)| {
        body[..at]
            .chars()
            .next_back()
            .is_none_or(|c| matches!(c, '\n' | ' ' | '{' | ',' | '#'))
    })
}

#[test]
fn example_key_search_is_strict() {
    assert!(sets_key("# tls_key = \"x\"\n", "tls_key"));
    assert!(sets_key("rate_limit = { requests = 1 }\n", "requests"));
    assert!(!sets_key("# the tls_key\n", "tls_key"));
    assert!(!sets_key("max_tls_key = 1\n", "tls_key"));
}
