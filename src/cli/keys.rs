//! `keygate keys …`: create, list, show, update, revoke, rotate and make primary.
//!
//! `create` and `rotate` print the new secret alone on stdout (so `KEY=$(keygate keys create
//! --name x)` works) and their summary on stderr; with `--json` the whole answer, secret
//! included, goes to stdout instead. No other command or message ever holds a secret: the
//! server sends it only in those two answers. `update` sends only the fields given, as a PATCH:
//! `--origin`/`--ip`/`--model`/`--meta` replace their list or object, and the `--clear-*` and
//! `--no-*` flags send an empty list or `null`.

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::client::{Client, parse, segment, with_query};
use super::error::CliError;
use super::flags::{self, ClearLimitArgs, LimitArgs, put};
use super::key_view::{scopes, show, table};
use super::output::{self, fields, print_err, print_out, when};
use super::{Done, now_ms};
use crate::admin::api::KeyObject;
use crate::scope::Scope;

/// SPEC §3: the server's default page size, for the "more may follow" hint.
const LIST_DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints the secret alone on stdout, the rest on stderr
    Create(CreateArgs),
    /// List keys, newest first
    List(ListArgs),
    /// Show one key
    Show {
        /// The key's id (key_…)
        id: String,
        /// Print the server's JSON
        #[arg(long)]
        json: bool,
    },
    /// Change a key: only the given settings change
    Update(UpdateArgs),
    /// Revoke a key now, for good
    Revoke {
        /// The key's id (key_…)
        id: String,
    },
    /// Give a key a new secret, keeping its id and policy
    Rotate {
        /// The key's id (key_…)
        id: String,
        /// How long the old secret keeps working, e.g. 24h (default: it stops at once)
        #[arg(long, value_name = "DURATION", value_parser = flags::duration_text)]
        grace: Option<String>,
        /// Print the whole JSON answer, new secret included, on stdout
        #[arg(long)]
        json: bool,
    },
    /// Make a key the primary key of its account
    Primary {
        /// The key's id (key_…)
        id: String,
    },
}

/// The policy flags `create` and `update` share.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Account of the key; created with default settings if new [create default: default]
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,
    /// Scopes, comma-separated: chat, read, write, admin, webhook [create default: keys.default_scopes]
    #[arg(long, value_name = "SCOPES", value_delimiter = ',', value_parser = flags::scope)]
    pub scopes: Option<Vec<Scope>>,
    /// Expire after this long, e.g. 90d
    #[arg(long, value_name = "DURATION", value_parser = flags::duration_text, conflicts_with = "expires_at")]
    pub expires_in: Option<String>,
    /// Expire at this RFC 3339 time, e.g. 2026-01-31T00:00:00Z
    #[arg(long, value_name = "TIMESTAMP", value_parser = flags::timestamp)]
    pub expires_at: Option<String>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Allowed Origin host, e.g. app.example.com or *.example.com; repeat for more (update: replaces the list)
    #[arg(long = "origin", value_name = "HOST", value_parser = flags::origin)]
    pub origins: Vec<String>,
    /// Allowed client IP or CIDR; repeat for more (update: replaces the list)
    #[arg(long = "ip", value_name = "CIDR", value_parser = flags::ip)]
    pub ips: Vec<String>,
    /// Allowed model glob, e.g. gpt-4o*; repeat for more (update: replaces the list)
    #[arg(long = "model", value_name = "GLOB", value_parser = flags::model)]
    pub models: Vec<String>,
    /// Metadata entry KEY=VALUE; repeat for more (update: replaces the metadata)
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = flags::meta)]
    pub meta: Vec<(String, String)>,
}

impl PolicyArgs {
    /// Writes the given settings into a request body.
    fn write(&self, body: &mut Map<String, Value>) -> Result<(), CliError> {
        put(body, "account", self.account.as_ref());
        put(body, "scopes", self.scopes.as_ref());
        put(body, "expires_in", self.expires_in.as_ref());
        put(body, "expires_at", self.expires_at.as_ref());
        self.limits.write(body);
        for (field, list) in [
            ("allowed_origins", &self.origins),
            ("allowed_ips", &self.ips),
            ("allowed_models", &self.models),
        ] {
            put(body, field, Some(list).filter(|l| !l.is_empty()));
        }
        if !self.meta.is_empty() {
            let object = flags::metadata(&self.meta).map_err(CliError::Usage)?;
            body.insert("metadata".into(), Value::Object(object));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// A name people recognise the key by (1 to 255 characters)
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print the whole JSON answer, secret included, on stdout
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this account's keys
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,
    /// Include revoked, disabled and expired keys
    #[arg(long)]
    pub all: bool,
    /// At most this many keys (server default 100, at most 1000)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Only keys older than this key id (the next page)
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// Print the server's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    /// The key's id (key_…)
    pub id: String,
    /// New name
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub clear: ClearLimitArgs,
    /// Remove the expiry: the key never expires
    #[arg(long, conflicts_with_all = ["expires_in", "expires_at"])]
    pub clear_expiry: bool,
    /// Allow every origin again
    #[arg(long, conflicts_with = "origins")]
    pub clear_origins: bool,
    /// Allow every client IP again
    #[arg(long, conflicts_with = "ips")]
    pub clear_ips: bool,
    /// Allow every model again
    #[arg(long, conflicts_with = "models")]
    pub clear_models: bool,
    /// Remove all metadata
    #[arg(long, conflicts_with = "meta")]
    pub clear_meta: bool,
    /// Enable the key
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Disable the key (it answers 401 api_key_disabled until enabled again)
    #[arg(long)]
    pub disable: bool,
    /// Print the server's JSON
    #[arg(long)]
    pub json: bool,
}

impl UpdateArgs {
    /// The PATCH body: only what was given.
    fn body(&self) -> Result<Map<String, Value>, CliError> {
        let mut body = Map::new();
        put(&mut body, "name", self.name.as_ref());
        self.policy.write(&mut body)?;
        self.clear.write(&mut body);
        if self.clear_expiry {
            body.insert("expires_at".into(), Value::Null);
        }
        for (clear, field) in [
            (self.clear_origins, "allowed_origins"),
            (self.clear_ips, "allowed_ips"),
            (self.clear_models, "allowed_models"),
        ] {
            if clear {
                body.insert(field.into(), Value::Array(Vec::new()));
            }
        }
        if self.clear_meta {
            body.insert("metadata".into(), Value::Object(Map::new()));
        }
        if self.enable || self.disable {
            body.insert("is_active".into(), Value::Bool(self.enable));
        }
        if body.is_empty() {
            return Err(CliError::Usage(
                "nothing to change: give at least one setting (see keygate keys update --help)"
                    .into(),
            ));
        }
        Ok(body)
    }
}

pub async fn run(client: &Client, command: KeysCommand) -> Result<Done, CliError> {
    match command {
        KeysCommand::Create(args) => create(client, args).await,
        KeysCommand::List(args) => list(client, args).await,
        KeysCommand::Show { id, json } => {
            let value = client.get(&key_path(&id, "")).await?;
            if json {
                print_out(&output::pretty(&value))?;
            } else {
                print_out(&show(&parse(value)?, now_ms()))?;
            }
            Ok(Done::Ok)
        }
        KeysCommand::Update(args) => {
            let body = args.body()?;
            let value = client
                .patch(&key_path(&args.id, ""), &Value::Object(body))
                .await?;
            if args.json {
                print_out(&output::pretty(&value))?;
            } else {
                let key: KeyObject = parse(value.get("key").cloned().unwrap_or(Value::Null))?;
                print_out(&format!("updated key {}\n{}", key.id, show(&key, now_ms())))?;
            }
            Ok(Done::Ok)
        }
        KeysCommand::Revoke { id } => {
            client.delete(&key_path(&id, "")).await?;
            print_out(&format!("revoked key {id}; its secret no longer works\n"))?;
            Ok(Done::Ok)
        }
        KeysCommand::Rotate { id, grace, json } => rotate(client, &id, grace, json).await,
        KeysCommand::Primary { id } => {
            client
                .post(&key_path(&id, "/primary"), &Value::Object(Map::new()))
                .await?;
            print_out(&format!("key {id} is now the primary key of its account\n"))?;
            Ok(Done::Ok)
        }
    }
}

fn key_path(id: &str, rest: &str) -> String {
    format!("/api/keys/{}{rest}", segment(id))
}

async fn create(client: &Client, args: CreateArgs) -> Result<Done, CliError> {
    let mut body = Map::new();
    body.insert("name".into(), Value::String(args.name));
    args.policy.write(&mut body)?;
    let value = client.post("/api/keys", &Value::Object(body)).await?;
    if args.json {
        print_out(&output::pretty(&value))?;
        return Ok(Done::Ok);
    }
    let key: KeyObject = parse(value)?;
    let secret = secret_of(&key)?;
    let now = now_ms();
    let primary = if key.primary { " (primary)" } else { "" };
    print_err(&format!(
        "created key {} {:?} in account {}{primary}\n{}\
         store this key now; it cannot be shown again\n",
        key.id,
        output::clean(&key.name),
        key.account,
        fields(&[
            ("  prefix", key.key_prefix.clone()),
            ("  scopes", scopes(&key.scopes)),
            ("  expires", when(key.expires_at.as_deref(), now, "never")),
        ]),
    ))?;
    print_out(&format!("{secret}\n"))?;
    Ok(Done::Ok)
}

async fn rotate(
    client: &Client,
    id: &str,
    grace: Option<String>,
    json: bool,
) -> Result<Done, CliError> {
    let mut body = Map::new();
    put(&mut body, "grace", grace.as_ref());
    let value = client
        .post(&key_path(id, "/rotate"), &Value::Object(body))
        .await?;
    if json {
        print_out(&output::pretty(&value))?;
        return Ok(Done::Ok);
    }
    let key: KeyObject = parse(value)?;
    let secret = secret_of(&key)?;
    let old = match &grace {
        Some(grace) => format!("the old secret keeps working for {grace}"),
        None => "the old secret no longer works".to_owned(),
    };
    print_err(&format!(
        "rotated key {} (new prefix {}); {old}\n\
         store this key now; it cannot be shown again\n",
        key.id, key.key_prefix
    ))?;
    print_out(&format!("{secret}\n"))?;
    Ok(Done::Ok)
}

fn secret_of(key: &KeyObject) -> Result<&str, CliError> {
    key.key
        .as_deref()
        .ok_or_else(|| CliError::Protocol("the answer carries no key".into()))
}

async fn list(client: &Client, args: ListArgs) -> Result<Done, CliError> {
    let path = with_query(
        "/api/keys",
        &[
            ("account", args.account.clone()),
            ("include_inactive", args.all.then(|| "true".to_owned())),
            ("limit", args.limit.map(|n| n.to_string())),
            ("before", args.before.clone()),
        ],
    );
    let value = client.get(&path).await?;
    if args.json {
        print_out(&output::pretty(&value))?;
        return Ok(Done::Ok);
    }
    let keys: Vec<KeyObject> = parse(value)?;
    if keys.is_empty() {
        print_err(if args.all {
            "no keys\n"
        } else {
            "no active keys (--all also shows revoked, disabled and expired ones)\n"
        })?;
        return Ok(Done::Ok);
    }
    print_out(&table(&keys, now_ms()))?;
    let limit = args.limit.map_or(LIST_DEFAULT_LIMIT, |n| n as usize);
    if keys.len() >= limit
        && let Some(last) = keys.last()
    {
        print_err(&format!("more keys may follow: add --before {}\n", last.id))?;
    }
    Ok(Done::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    /// The update flags, parsed as the binary parses them.
    fn update_body(args: &[&str]) -> Result<Value, CliError> {
        let cli = super::super::Cli::try_parse_from(
            ["keygate", "keys", "update", "key_0000000100000001"]
                .iter()
                .chain(args),
        )
        .unwrap();
        match cli.command {
            super::super::Command::Keys(KeysCommand::Update(u)) => u.body().map(Value::Object),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn update_sends_only_what_was_given() {
        assert_eq!(
            update_body(&["--disable"]).unwrap(),
            json!({"is_active": false})
        );
        assert_eq!(
            update_body(&[
                "--origin",
                "a.example.com",
                "--origin",
                "*.b.com",
                "--no-rate"
            ])
            .unwrap(),
            json!({"allowed_origins": ["a.example.com", "*.b.com"], "rate_limit": null})
        );
        assert_eq!(
            update_body(&[
                "--clear-expiry",
                "--clear-ips",
                "--clear-meta",
                "--scopes",
                "chat"
            ])
            .unwrap(),
            json!({"expires_at": null, "allowed_ips": [], "metadata": {}, "scopes": ["chat"]})
        );
        assert_eq!(
            update_body(&["--meta", "a=1", "--meta", "b=2", "--expires-in", "30d"]).unwrap(),
            json!({"metadata": {"a": "1", "b": "2"}, "expires_in": "30d"})
        );
        assert!(matches!(update_body(&[]), Err(CliError::Usage(_))));
        assert!(matches!(
            update_body(&["--meta", "a=1", "--meta", "a=2"]),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn contradictory_update_flags_are_usage_errors() {
        for args in [
            &["--enable", "--disable"][..],
            &["--rate", "5/1s", "--no-rate"],
            &["--origin", "a.com", "--clear-origins"],
            &["--expires-in", "1d", "--clear-expiry"],
            &["--expires-in", "1d", "--expires-at", "2030-01-01T00:00:00Z"],
        ] {
            let err = super::super::Cli::try_parse_from(
                ["keygate", "keys", "update", "key_0000000100000001"]
                    .iter()
                    .chain(args),
            )
            .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
