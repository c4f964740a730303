//! `keygate::config::Snapshot::parse_with_env`: config text → validated snapshot, or every
//! problem with its place.
//!
//! Input: the file's text (config files are read as UTF-8, so other bytes are skipped).
//! Checked: it never panics; an error list is non-empty, sorted, and each error names the file
//! and a line and column that exist in the text (1-based; line 0 is for problems without a
//! place: an unreadable file, which text cannot be, or a TOML error without a span) and prints
//! on one line, as `keygate config check` shows them; a valid
//! snapshot's routes and presets name upstreams it defines.
//!
//! `api_key_file` is the one setting validation reads from disk. An input whose key file is an
//! absolute path or climbs out with `..` is skipped, so that the fuzzer cannot make the harness
//! read `/dev/stdin` or a FIFO and hang; relative names still exercise the read errors.

#![no_main]

use std::path::Path;

use keygate::config::Snapshot;
use libfuzzer_sys::fuzz_target;

/// Whether any `api_key_file` in the document could name a file outside the working directory.
fn reads_outside(text: &str) -> bool {
    fn walk(value: &toml::Value) -> bool {
        match value {
            toml::Value::Table(table) => table.iter().any(|(k, v)| {
                (k == "api_key_file"
                    && v.as_str()
                        .is_none_or(|f| f.starts_with('/') || f.contains("..")))
                    || walk(v)
            }),
            toml::Value::Array(items) => items.iter().any(walk),
            _ => false,
        }
    }
    match text.parse::<toml::Table>() {
        Ok(table) => table.values().any(walk),
        // keygate stops at syntax errors before reading files; be careful anyway.
        Err(_) => text.contains("api_key_file"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if reads_outside(text) {
        return;
    }
    let file = Path::new("fuzz.toml");
    match Snapshot::parse_with_env(text, file, &|_| None) {
        Ok(snapshot) => {
            assert_eq!(snapshot.source.as_deref(), Some(file));
            for route in &snapshot.routes {
                assert!(route.path.starts_with('/'), "{route:?}");
                assert!(snapshot.upstream(&route.upstream).is_some(), "{route:?}");
            }
            for (id, preset) in &snapshot.presets {
                assert_eq!(id, &preset.id);
                assert!(snapshot.upstream(&preset.upstream).is_some(), "{preset:?}");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "an Err without errors");
            let lines: Vec<&str> = text.split('\n').collect();
            let mut last = (0, 0);
            for e in errors.iter() {
                assert_eq!(e.file, file);
                // A TOML error can come without a span (the parser's "recursion limit" on a
                // deeply dotted key): keygate then gives no place, as for an unreadable file.
                if (e.line, e.col) == (0, 0) && e.message.starts_with("invalid TOML: ") {
                    assert!(e.path.is_empty());
                    assert_eq!(last, (0, 0), "errors without a place come first");
                    continue;
                }
                assert!(
                    (1..=lines.len()).contains(&e.line),
                    "line {} of a {}-line text: {e}",
                    e.line,
                    lines.len()
                );
                let width = lines[e.line - 1].chars().count();
                assert!(
                    (1..=width + 1).contains(&e.col),
                    "col {} of a {width}-character line: {e}",
                    e.col
                );
                assert!((e.line, e.col) >= last, "errors out of order");
                last = (e.line, e.col);
                let shown = e.to_string();
                assert!(
                    shown.starts_with(&format!("fuzz.toml:{}:{}:", e.line, e.col)),
                    "{shown:?}"
                );
                assert!(!shown.contains('\n'), "an error spans lines: {shown:?}");
            }
            assert_eq!(errors.to_string().lines().count(), errors.len());
        }
    }
});
