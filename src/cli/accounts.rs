//! `keygate accounts …`: create, list, show, update and delete accounts.
//!
//! An account's `--rate`, `--tokens` and `--quota` are shared by all of its keys; `--max-keys`
//! overrides `keys.max_active_per_account` for it. `update` sends only what is given, and the
//! `--no-*` flags send `null` to clear a setting.

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::client::{Client, parse, segment};
use super::error::CliError;
use super::flags::{ClearLimitArgs, LimitArgs, put};
use super::output::{self, Table, fields, print_err, print_out, when};
use super::{Done, now_ms};
use crate::admin::api::AccountObject;

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create an account (keys also create theirs when it is new)
    Create(CreateArgs),
    /// List accounts
    List {
        /// Print the server's JSON
        #[arg(long)]
        json: bool,
    },
    /// Show one account
    Show {
        name: String,
        /// Print the server's JSON
        #[arg(long)]
        json: bool,
    },
    /// Change an account: only the given settings change
    Update(UpdateArgs),
    /// Delete an account that has no live keys
    Delete { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Account name: 1 to 64 characters of A-Z a-z 0-9 _ - . @
    pub name: String,
    /// Most active keys the account may hold [default: keys.max_active_per_account]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_keys: Option<u32>,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Print the server's JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct UpdateArgs {
    pub name: String,
    /// Most active keys the account may hold
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_keys: Option<u32>,
    /// Use keys.max_active_per_account again
    #[arg(long, conflicts_with = "max_keys")]
    pub no_max_keys: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub clear: ClearLimitArgs,
    /// Print the server's JSON
    #[arg(long)]
    pub json: bool,
}

impl UpdateArgs {
    fn body(&self) -> Result<Map<String, Value>, CliError> {
        let mut body = Map::new();
        put(&mut body, "max_active_keys", self.max_keys);
        if self.no_max_keys {
            body.insert("max_active_keys".into(), Value::Null);
        }
        self.limits.write(&mut body);
        self.clear.write(&mut body);
        if body.is_empty() {
            return Err(CliError::Usage(
                "nothing to change: give at least one setting (see keygate accounts update --help)"
                    .into(),
            ));
        }
        Ok(body)
    }
}

pub async fn run(client: &Client, command: AccountsCommand) -> Result<Done, CliError> {
    match command {
        AccountsCommand::Create(args) => {
            let mut body = Map::new();
            body.insert("name".into(), Value::String(args.name));
            put(&mut body, "max_active_keys", args.max_keys);
            args.limits.write(&mut body);
            let value = client.post("/api/accounts", &Value::Object(body)).await?;
            if args.json {
                print_out(&output::pretty(&value))?;
            } else {
                let account: AccountObject = parse(value)?;
                print_out(&format!("created account {}\n", account.name))?;
            }
        }
        AccountsCommand::List { json } => {
            let value = client.get("/api/accounts").await?;
            if json {
                print_out(&output::pretty(&value))?;
            } else {
                let accounts: Vec<AccountObject> = parse(value)?;
                if accounts.is_empty() {
                    print_err("no accounts\n")?;
                } else {
                    print_out(&table(&accounts))?;
                }
            }
        }
        AccountsCommand::Show { name, json } => {
            let value = client.get(&account_path(&name)).await?;
            if json {
                print_out(&output::pretty(&value))?;
            } else {
                print_out(&show(&parse(value)?, now_ms()))?;
            }
        }
        AccountsCommand::Update(args) => {
            let body = args.body()?;
            let value = client
                .patch(&account_path(&args.name), &Value::Object(body))
                .await?;
            if args.json {
                print_out(&output::pretty(&value))?;
            } else {
                let account: AccountObject =
                    parse(value.get("account").cloned().unwrap_or(Value::Null))?;
                print_out(&format!(
                    "updated account {}\n{}",
                    account.name,
                    show(&account, now_ms())
                ))?;
            }
        }
        AccountsCommand::Delete { name } => {
            client.delete(&account_path(&name)).await?;
            print_out(&format!("deleted account {name}\n"))?;
        }
    }
    Ok(Done::Ok)
}

fn account_path(name: &str) -> String {
    format!("/api/accounts/{}", segment(name))
}

/// `3/10`, or `3` when the config's limit applies (the client does not know it).
fn key_count(account: &AccountObject) -> String {
    match account.max_active_keys {
        Some(max) => format!("{}/{max}", account.active_keys),
        None => account.active_keys.to_string(),
    }
}

/// The `accounts list` table.
pub fn table(accounts: &[AccountObject]) -> String {
    let mut t = Table::new(&[
        "NAME", "KEYS", "PRIMARY", "RATE", "TOKENS", "QUOTA", "REQUESTS", "CREATED",
    ])
    .right(&[1, 6]);
    for a in accounts {
        t.push(vec![
            a.name.clone(),
            key_count(a),
            a.primary_key.clone().unwrap_or_else(|| "-".into()),
            a.rate_limit.as_ref().map_or("-".into(), output::rate),
            a.token_limit.as_ref().map_or("-".into(), output::tokens),
            a.quota.as_ref().map_or("-".into(), output::quota),
            a.usage.requests.to_string(),
            a.created_at.get(..10).unwrap_or(&a.created_at).to_owned(),
        ]);
    }
    t.render()
}

/// `accounts show`: every field, one per line.
pub fn show(a: &AccountObject, now_ms: i64) -> String {
    let none = "none (each key's own limit applies)";
    fields(&[
        ("name", a.name.clone()),
        ("created", when(Some(&a.created_at), now_ms, "")),
        ("active keys", a.active_keys.to_string()),
        (
            "max keys",
            a.max_active_keys
                .map_or("config default (keys.max_active_per_account)".into(), |n| {
                    n.to_string()
                }),
        ),
        (
            "primary key",
            a.primary_key.clone().unwrap_or_else(|| "none".into()),
        ),
        (
            "rate limit",
            a.rate_limit.as_ref().map_or(none.into(), output::rate),
        ),
        (
            "token limit",
            a.token_limit.as_ref().map_or(none.into(), output::tokens),
        ),
        (
            "quota",
            a.quota.as_ref().map_or("none".into(), output::quota),
        ),
        (
            "usage",
            format!(
                "{} requests, {} input tokens, {} output tokens",
                a.usage.requests, a.usage.input_tokens, a.usage.output_tokens
            ),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn account(overrides: Value) -> AccountObject {
        let mut base = json!({
            "name": "acme", "created_at": "2025-01-01T00:00:00Z", "max_active_keys": null,
            "rate_limit": null, "token_limit": null, "quota": null,
            "usage": {"requests": 12, "input_tokens": 0, "output_tokens": 0},
            "active_keys": 3, "primary_key": "key_0000000100000001"
        });
        if let (Some(base), Value::Object(o)) = (base.as_object_mut(), overrides) {
            base.extend(o);
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn the_table_shows_limits_in_flag_notation() {
        let rows = vec![
            account(json!({})),
            account(
                json!({"name": "beta", "max_active_keys": 5, "primary_key": null,
                "rate_limit": {"requests": 100, "interval": "60s"},
                "quota": {"requests": 1000, "tokens": null, "period": "month"}}),
            ),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME  KEYS  PRIMARY               RATE     TOKENS  QUOTA                       REQUESTS  CREATED"
        );
        assert!(
            lines[1].starts_with("acme     3  key_0000000100000001  -"),
            "{text}"
        );
        assert!(
            lines[2].contains(
                "beta   3/5  -                     100/60s  -       requests=1000,period=month"
            ),
            "{text}"
        );
        assert!(lines[2].ends_with("12  2025-01-01"), "{text}");
    }

    #[test]
    fn update_needs_a_change_and_clears_with_null() {
        let args = UpdateArgs {
            name: "acme".into(),
            max_keys: None,
            no_max_keys: true,
            limits: LimitArgs::default(),
            clear: ClearLimitArgs {
                no_tokens: true,
                ..Default::default()
            },
            json: false,
        };
        assert_eq!(
            Value::Object(args.body().unwrap()),
            json!({"max_active_keys": null, "token_limit": null})
        );
        let nothing = UpdateArgs {
            no_max_keys: false,
            clear: ClearLimitArgs::default(),
            ..args
        };
        assert!(matches!(nothing.body(), Err(CliError::Usage(_))));
    }
}
