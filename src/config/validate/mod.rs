//! Config text → [`Snapshot`], reporting every problem at once with its file:line:col.
//!
//! The steps: parse the TOML with error recovery (any syntax error stops here, all of them
//! reported); read each section into the raw structs on its own (`deser`), so a type error or
//! unknown key in one section does not hide the others; then check each section and the
//! references between them (`server`, `policy`, `upstreams`, `routes`). Every check names the path of the
//! setting it is about, and `locate` turns that path into a line and column. A snapshot is built
//! only when nothing was wrong; warnings (such as an unset `api_key_env`) travel inside it.

mod ctx;
mod deser;
mod locate;
mod policy;
mod routes;
mod server;
mod upstreams;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path as FsPath;

use toml::de::DeTable;

use self::ctx::Ctx;
pub(crate) use self::ctx::EnvLookup;
use self::locate::Path;
use super::Snapshot;
use super::error::{ConfigError, ConfigErrors};
use super::raw::{self, RawConfig};

/// Reads and validates a config file, with credentials from the process environment.
pub(super) fn load_file(file: &FsPath) -> Result<Snapshot, ConfigErrors> {
    let text = std::fs::read_to_string(file).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("cannot read the config file: {err}"),
        }])
    })?;
    parse(&text, file)
}

/// Validates config text, with credentials from the process environment.
pub(super) fn parse(text: &str, origin: &FsPath) -> Result<Snapshot, ConfigErrors> {
    parse_with_env(text, origin, &|name| std::env::var(name).ok())
}

/// Validates config text; `env` stands in for the process environment (`api_key_env`).
pub(crate) fn parse_with_env(
    text: &str,
    origin: &FsPath,
    env: EnvLookup<'_>,
) -> Result<Snapshot, ConfigErrors> {
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax_errors(text, origin, &syntax));
    }
    let doc = doc.into_inner();
    let mut cx = Ctx::new(&doc, env);
    let raw = read_sections(&mut cx);
    let mut snapshot = check(&mut cx, &raw);
    snapshot.source = Some(origin.to_path_buf());
    snapshot.warnings = cx.finish(text, origin)?;
    Ok(snapshot)
}

fn syntax_errors(text: &str, origin: &FsPath, errors: &[toml::de::Error]) -> ConfigErrors {
    let errors = errors
        .iter()
        .map(|err| {
            let (line, col, message) = match err.span() {
                Some(span) => {
                    let (line, col) = locate::line_col(text, span.start);
                    let mut message = err.message().to_owned();
                    // Name the key: "duplicate key" alone leaves the reader counting columns.
                    if message == "duplicate key" {
                        let key = text.get(span).unwrap_or_default();
                        // One error, one line: a key with a newline in it is shown escaped.
                        message = if key.contains(char::is_control) {
                            format!("duplicate key {}", key.escape_debug())
                        } else {
                            format!("duplicate key {key}")
                        };
                    }
                    (line, col, message)
                }
                None => (0, 0, err.message().to_owned()),
            };
            ConfigError {
                file: origin.to_path_buf(),
                line,
                col,
                path: String::new(),
                message: format!("invalid TOML: {message}"),
            }
        })
        .collect();
    ConfigErrors::sorted(errors)
}

/// Each top-level section into its raw struct, on its own; unknown sections are errors.
fn read_sections(cx: &mut Ctx<'_, '_>) -> RawConfig {
    let mut raw = RawConfig::default();
    let doc = cx.doc;
    for (key, value) in doc.iter() {
        let name = key.get_ref().as_ref();
        let path = Path::root().key(name);
        match name {
            "server" => raw.server = Some(deser::table(cx, &path, value)),
            "admin" => raw.admin = Some(deser::table(cx, &path, value)),
            "listeners" => raw.listeners = Some(deser::array_of(cx, &path, value)),
            "keys" => raw.keys = Some(deser::table(cx, &path, value)),
            "limits" => raw.limits = Some(deser::table(cx, &path, value)),
            "usage" => raw.usage = Some(deser::table(cx, &path, value)),
            "log" => raw.log = Some(deser::table(cx, &path, value)),
            "metrics" => raw.metrics = Some(deser::table(cx, &path, value)),
            "upstreams" => {
                raw.upstreams = Some(deser::map_of(cx, &path, value).into_iter().collect())
            }
            "routes" => raw.routes = Some(deser::array_of(cx, &path, value)),
            "presets" => raw.presets = Some(deser::map_of(cx, &path, value).into_iter().collect()),
            _ => {
                let known = raw::known_keys(&[]).unwrap_or_default();
                let what = if value.get_ref().is_table() {
                    "section"
                } else {
                    "key"
                };
                let message = deser::unknown_key_message(what, name, known);
                cx.error_at_key(
                    &path,
                    format!("{message}; known sections: {}", known.join(", ")),
                );
            }
        }
    }
    raw
}

/// Checks every section and builds the snapshot; only meaningful when no error was recorded.
fn check(cx: &mut Ctx<'_, '_>, raw: &RawConfig) -> Snapshot {
    let server = server::server(cx, raw.server.as_ref().unwrap_or(&Default::default()));
    let admin = server::admin(cx, raw.admin.as_ref().unwrap_or(&Default::default()));
    let listeners = server::listeners(cx, raw.listeners.as_ref());
    let keys = policy::keys(cx, raw.keys.as_ref().unwrap_or(&Default::default()));
    let limits = policy::limits(cx, raw.limits.as_ref().unwrap_or(&Default::default()));
    let usage = policy::usage(cx, raw.usage.as_ref().unwrap_or(&Default::default()));
    let log = policy::log(cx, raw.log.as_ref().unwrap_or(&Default::default()));
    let metrics = server::metrics(
        cx,
        raw.metrics.as_ref().unwrap_or(&Default::default()),
        &listeners,
    );
    let no_upstreams = BTreeMap::new();
    let raw_upstreams = raw.upstreams.as_ref().unwrap_or(&no_upstreams);
    // Every name written in the file counts as defined, even one whose table has errors, so that
    // a mistake there is reported once rather than again at each route that uses it.
    let defined: Vec<String> = raw_upstreams.keys().cloned().collect();
    let upstreams = upstreams::upstreams(cx, raw_upstreams);
    let routes = routes::routes(cx, raw.routes.as_deref().unwrap_or_default(), &defined);
    let presets = routes::presets(
        cx,
        raw.presets.as_ref().unwrap_or(&BTreeMap::new()),
        &defined,
    );
    Snapshot {
        source: None,
        warnings: Vec::new(),
        server,
        admin,
        listeners,
        keys,
        limits,
        usage,
        log,
        metrics,
        upstreams,
        routes,
        presets,
    }
}
