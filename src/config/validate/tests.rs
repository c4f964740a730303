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
