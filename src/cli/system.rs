//! `keygate audit`, `status`, `presets list`, `config reload` and `config check`.
//!
//! All but `config check` ask the running server. `config check` validates a file with the
//! same code `keygate serve` uses, without a server, and reports every problem with its
//! `file:line:col`. `config reload` exits 1 when the server rejected the file (it answers 422
//! with the same report), so a deploy script stops there; the old config keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::Done;
use super::client::{Client, parse, server_error, with_query};
use super::error::CliError;
use super::output::{self, Table, fields, print_err, print_out};
use crate::admin::api::AuditEntry;
use crate::config::{DEFAULT_CONFIG_FILE, Snapshot, format_duration};

/// Presets' system prompts are cut to this many characters in the table.
const PROMPT_WIDTH: usize = 50;

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// At most this many entries, newest first (server default 100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Print the server's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct JsonArg {
    /// Print the server's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PresetsCommand {
    /// List the assistant presets of the running config
    List(JsonArg),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file without a server; exit 1 with file:line:col on error
    Check {
        /// The file [default: --config, KEYGATE_CONFIG, else ./keygate.toml]
        file: Option<PathBuf>,
    },
    /// Make the server reload its config file now
    Reload(JsonArg),
}

pub async fn audit(client: &Client, args: AuditArgs) -> Result<Done, CliError> {
    let path = with_query(
        "/api/audit",
        &[("limit", args.limit.map(|n| n.to_string()))],
    );
    let value = client.get(&path).await?;
    if args.json {
        print_out(&output::pretty(&value))?;
        return Ok(Done::Ok);
    }
    let entries: Vec<AuditEntry> = parse(value)?;
    if entries.is_empty() {
        print_err("the audit log is empty\n")?;
    } else {
        print_out(&audit_table(&entries))?;
    }
    Ok(Done::Ok)
}

/// The audit table: who (uid and pid of the admin socket peer) did what, when.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let mut t =
        Table::new(&["SEQ", "AT", "UID", "PID", "ACTION", "TARGET", "DETAILS"]).right(&[0, 2, 3]);
    for e in entries {
        let details = match &e.details {
            Value::Object(o) if o.is_empty() => String::new(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        t.push(vec![
            e.seq.to_string(),
            e.at.clone(),
            e.actor.uid.to_string(),
            e.actor.pid.map_or("-".into(), |p| p.to_string()),
            e.action.clone(),
            e.target.clone().unwrap_or_else(|| "-".into()),
            details,
        ]);
    }
    t.render()
}

pub async fn status(client: &Client, args: JsonArg) -> Result<Done, CliError> {
    let value = client.get("/api/status").await?;
    if args.json {
        print_out(&output::pretty(&value))?;
    } else {
        print_out(&status_text(&value, client.path()))?;
    }
    Ok(Done::Ok)
}

/// `keygate status` for people; fields the server leaves out are left out.
pub fn status_text(v: &Value, socket: &Path) -> String {
    let num = |path: &[&str]| {
        path.iter()
            .try_fold(v, |v, k| v.get(k))
            .and_then(Value::as_u64)
    };
    let mut rows = Vec::new();
    let version = v.get("version").and_then(Value::as_str).unwrap_or("?");
    let uptime =
        num(&["uptime_seconds"]).map_or("?".into(), |s| format_duration(Duration::from_secs(s)));
    rows.push(("keygate", format!("{version}, up {uptime}")));
    rows.push(("socket", socket.display().to_string()));
    let source = v
        .get("config_source")
        .and_then(Value::as_str)
        .unwrap_or("built-in defaults");
    let generation = num(&["config_generation"]).map_or("?".into(), |g| g.to_string());
    rows.push(("config", format!("{source} (generation {generation})")));
    if let Some(report) = v.get("last_reload").filter(|r| !r.is_null()) {
        rows.push(("last reload", reload_summary(report)));
    }
    if let Some(stored) = num(&["keys", "stored"]) {
        let indexed = num(&["keys", "indexed_secrets"])
            .map_or(String::new(), |n| format!(", {n} secrets indexed"));
        rows.push(("keys", format!("{stored} stored{indexed}")));
    }
    if let Some(n) = num(&["accounts"]) {
        rows.push(("accounts", n.to_string()));
    }
    if let Some(n) = num(&["requests_served"]) {
        rows.push(("requests served", n.to_string()));
    }
    fields(&rows)
}

/// The report of `POST /api/config/reload` (and `last_reload` of status).
#[derive(Debug, Clone, Deserialize)]
pub struct ReloadReport {
    #[serde(default)]
    pub at: String,
    #[serde(default)]
    pub trigger: String,
    pub ok: bool,
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub restart_needed: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

fn reload_summary(report: &Value) -> String {
    match serde_json::from_value::<ReloadReport>(report.clone()) {
        Ok(r) if r.ok => format!("ok at {} ({})", r.at, r.trigger),
        Ok(r) => format!(
            "rejected at {} ({}): {} errors",
            r.at,
            r.trigger,
            r.errors.len()
        ),
        Err(_) => report.to_string(),
    }
}

pub async fn reload(client: &Client, args: JsonArg) -> Result<Done, CliError> {
    let answer = client
        .send(
            Method::POST,
            "/api/config/reload",
            Some(&Value::Object(Map::new())),
        )
        .await?;
    let report = match answer.status {
        StatusCode::OK | StatusCode::UNPROCESSABLE_ENTITY => answer.json()?,
        _ => return Err(server_error(&answer)),
    };
    if args.json {
        print_out(&output::pretty(&report))?;
    }
    let parsed: ReloadReport = parse(report)?;
    if !args.json {
        let (out, err) = reload_text(&parsed);
        print_out(&out)?;
        print_err(&err)?;
    }
    Ok(if parsed.ok { Done::Ok } else { Done::Failed })
}

/// What `config reload` prints: (stdout, stderr).
pub fn reload_text(r: &ReloadReport) -> (String, String) {
    let mut err = String::new();
    let out = if r.ok {
        format!("config reloaded (generation {})\n", r.generation)
    } else {
        err.push_str("error: the config was rejected; the previous config keeps serving\n");
        String::new()
    };
    for e in &r.errors {
        err.push_str(&format!("{}\n", output::clean(e)));
    }
    for w in &r.warnings {
        err.push_str(&format!("warning: {}\n", output::clean(w)));
    }
    for s in &r.restart_needed {
        err.push_str(&format!("restart needed: {}\n", output::clean(s)));
    }
    (out, err)
}

pub async fn presets(client: &Client, args: JsonArg) -> Result<Done, CliError> {
    let value = client.get("/api/config").await?;
    let presets = value
        .get("config")
        .and_then(|c| c.get("presets"))
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if args.json {
        print_out(&output::pretty(&presets))?;
        return Ok(Done::Ok);
    }
    let Value::Object(presets) = presets else {
        return Err(CliError::Protocol("config.presets is not an object".into()));
    };
    if presets.is_empty() {
        print_err("no presets in the running config\n")?;
    } else {
        print_out(&presets_table(&presets))?;
    }
    Ok(Done::Ok)
}

/// ID, UPSTREAM, MODEL and the start of the system prompt.
pub fn presets_table(presets: &Map<String, Value>) -> String {
    let text = |p: &Value, field: &str| {
        p.get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let mut t = Table::new(&["ID", "UPSTREAM", "MODEL", "PROMPT"]);
    for (id, p) in presets {
        let prompt = text(p, "system_prompt").replace(['\n', '\r', '\t'], " ");
        t.push(vec![
            id.clone(),
            text(p, "upstream"),
            text(p, "model"),
            output::truncate(&prompt, PROMPT_WIDTH),
        ]);
    }
    t.render()
}

/// Which file `config check` validates: the argument, else `--config`/`KEYGATE_CONFIG`, else
/// `default` (`./keygate.toml`) when it exists; `None` means the built-in defaults.
pub fn check_target(
    argument: Option<PathBuf>,
    chosen: Option<PathBuf>,
    default: &Path,
) -> Option<PathBuf> {
    argument
        .or(chosen)
        .or_else(|| default.exists().then(|| default.to_owned()))
}

/// `config check`: no server involved.
pub fn check(argument: Option<PathBuf>, chosen: Option<PathBuf>) -> Result<Done, CliError> {
    let Some(file) = check_target(argument, chosen, Path::new(DEFAULT_CONFIG_FILE)) else {
        print_out("no config file: built-in defaults are valid\n")?;
        return Ok(Done::Ok);
    };
    match Snapshot::load_file(&file) {
        Ok(snapshot) => {
            print_out(&format!("{}: ok\n", file.display()))?;
            for warning in &snapshot.warnings {
                print_err(&format!("warning: {warning}\n"))?;
            }
            Ok(Done::Ok)
        }
        Err(errors) => {
            print_err(&format!("{}\n", errors.to_string().trim_end()))?;
            Ok(Done::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_audit_table_shows_who_did_what() {
        let entries: Vec<AuditEntry> = serde_json::from_value(json!([
            {"seq": 2, "at": "2025-01-01T00:00:01Z", "actor": {"uid": 1000, "gid": 1000, "pid": 42},
             "action": "key.revoke", "target": "key_0000000100000001", "details": {}},
            {"seq": 1, "at": "2025-01-01T00:00:00Z", "actor": {"uid": 0, "gid": 0, "pid": null},
             "action": "config.reload", "target": null, "details": {"ok": true}}
        ]))
        .unwrap();
        let text = audit_table(&entries);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SEQ  AT                     UID  PID  ACTION         TARGET                DETAILS"
        );
        assert_eq!(
            lines[1],
            "  2  2025-01-01T00:00:01Z  1000   42  key.revoke     key_0000000100000001"
        );
        assert_eq!(
            lines[2],
            "  1  2025-01-01T00:00:00Z     0    -  config.reload  -                     {\"ok\":true}"
        );
    }

    #[test]
    fn status_text_names_the_config_and_counts() {
        let v = json!({"version": "0.1.0", "uptime_seconds": 3725, "config_generation": 2,
            "config_source": null, "last_reload": null, "keys": {"stored": 3, "indexed_secrets": 2},
            "accounts": 1, "requests_served": 0});
        let text = status_text(&v, Path::new("/run/keygate/admin.sock"));
        assert!(
            text.starts_with("keygate:         0.1.0, up 1h2m5s\n"),
            "{text}"
        );
        assert!(
            text.contains("config:          built-in defaults (generation 2)\n"),
            "{text}"
        );
        assert!(
            text.contains("keys:            3 stored, 2 secrets indexed\n"),
            "{text}"
        );
        assert!(!text.contains("last reload"), "{text}");
    }

    #[test]
    fn a_rejected_reload_lists_its_errors_on_stderr() {
        let r: ReloadReport =
            serde_json::from_value(json!({"at": "x", "trigger": "api", "ok": false,
            "generation": 1, "errors": ["k.toml:3:1: limits.rate: unknown setting"],
            "restart_needed": [], "warnings": []}))
            .unwrap();
        let (out, err) = reload_text(&r);
        assert_eq!(out, "");
        assert!(err.contains("rejected"));
        assert!(err.contains("k.toml:3:1: limits.rate: unknown setting\n"));
        let ok: ReloadReport = serde_json::from_value(json!({"ok": true, "generation": 4,
            "restart_needed": ["metrics.addr"]}))
        .unwrap();
        let (out, err) = reload_text(&ok);
        assert_eq!(out, "config reloaded (generation 4)\n");
        assert_eq!(err, "restart needed: metrics.addr\n");
    }

    #[test]
    fn the_presets_table_cuts_long_prompts() {
        let presets = json!({"support-bot": {"upstream": "openai", "model": "gpt-4o-mini",
            "system_prompt": "You are the support assistant of Example Inc.\nBe brief and always polite."}});
        let text = presets_table(presets.as_object().unwrap());
        assert_eq!(
            text.lines().nth(1).unwrap(),
            "support-bot  openai    gpt-4o-mini  You are the support assistant of Example Inc. Be…"
        );
    }

    #[test]
    fn config_check_picks_the_argument_then_the_choice_then_an_existing_default() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("keygate.toml");
        let (arg, chosen) = (PathBuf::from("/a.toml"), PathBuf::from("/b.toml"));
        assert_eq!(
            check_target(Some(arg.clone()), Some(chosen.clone()), &default),
            Some(arg)
        );
        assert_eq!(
            check_target(None, Some(chosen.clone()), &default),
            Some(chosen)
        );
        assert_eq!(check_target(None, None, &default), None);
        std::fs::write(&default, "").unwrap();
        assert_eq!(check_target(None, None, &default), Some(default.clone()));
    }
}
