//! The command line of SPEC §4: `keygate serve` runs the gateway, `keygate config check`
//! validates a file, and every other command is a client of the admin socket.
//!
//! [`main`] parses the arguments with clap (whose errors exit 2), finds the socket
//! (`socket`), runs the command on a current-thread runtime and maps the outcome to the exit
//! codes of SPEC §4 (`error`). Commands live in `keys` (rendered by `key_view`), `accounts`,
//! `usage`, `explain` and `system`; flag notations such as `60/60s` in `flags`; the HTTP client
//! in `client`; tables, times and the bar chart in `output`. People get tables, scripts get
//! `--json`.

mod accounts;
mod client;
mod error;
mod explain;
mod flags;
mod key_view;
mod keys;
mod output;
mod socket;
mod system;
mod usage;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use error::CliError;

use client::Client;

#[derive(Debug, Parser)]
#[command(
    name = "keygate",
    version,
    about = "An API-key gateway in front of OpenAI- and Anthropic-compatible LLM APIs",
    after_help = "Exit codes: 0 ok, 1 error from the server or bad input, 2 usage error, \
                  3 cannot reach the admin socket."
)]
pub struct Cli {
    /// The admin socket [default: $KEYGATE_SOCKET, else admin.socket of the config file]
    #[arg(long, global = true, value_name = "PATH", display_order = 900)]
    socket: Option<PathBuf>,
    /// The config file [default: $KEYGATE_CONFIG, else ./keygate.toml, else /etc/keygate/keygate.toml for the socket]
    #[arg(long, global = true, value_name = "FILE", display_order = 901)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only add noise"
)]
enum Command {
    /// Run the gateway (config: --config FILE or $KEYGATE_CONFIG, else ./keygate.toml, else built-in defaults)
    Serve,
    /// Create, list, change, rotate and revoke API keys
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Manage accounts and their shared limits
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// Requests and tokens per hour or day
    Usage(usage::UsageArgs),
    /// The log of admin changes, newest first
    Audit(system::AuditArgs),
    /// What the gateway would decide for a request with a key (exit 1 when denied)
    Explain(explain::ExplainArgs),
    /// Assistant presets of the running config
    #[command(subcommand)]
    Presets(system::PresetsCommand),
    /// Version, uptime, config and counts of the running server
    Status(system::JsonArg),
    /// Check a config file, or reload the server's
    #[command(subcommand)]
    Config(system::ConfigCommand),
}

/// How a command ended when it did not fail with a [`CliError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Ok,
    /// The command reported the failure itself (a denied `explain`, a rejected reload or
    /// config file): exit 1 with nothing more to print.
    Failed,
}

/// The process environment the CLI reads, gathered in one place so that the rest is pure.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `KEYGATE_SOCKET`.
    pub socket: Option<OsString>,
    /// `KEYGATE_CONFIG`.
    pub config: Option<OsString>,
}

impl Env {
    pub fn from_process() -> Env {
        Env {
            socket: std::env::var_os("KEYGATE_SOCKET"),
            config: std::env::var_os("KEYGATE_CONFIG"),
        }
    }
}

/// The `keygate` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Serve = cli.command {
        let config =
            socket::config_choice(cli.config.as_deref(), Env::from_process().config.as_deref());
        return match crate::serve::serve(config.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("keygate: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli, &Env::from_process()) {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::Failed) => ExitCode::FAILURE,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            // stderr itself may be gone; there is nowhere else to report that.
            let _ = output::print_err(&format!("error: {e}\n"));
            if let CliError::Server { code, .. } = &e
                && code == "permission_denied"
            {
                let uid = rustix::process::getuid().as_raw();
                let _ = output::print_err(&format!(
                    "hint: the admin socket serves uid 0, the server's own uid, and the uids and gids \
                     in admin.allowed_uids / admin.allowed_gids; you are uid {uid}\n"
                ));
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Runs a command other than `serve`.
pub fn run(cli: Cli, env: &Env) -> Result<Done, CliError> {
    let chosen_config = socket::config_choice(cli.config.as_deref(), env.config.as_deref());
    let command = match cli.command {
        Command::Serve => {
            return Err(CliError::Usage("serve is not a client command".into()));
        }
        Command::Config(system::ConfigCommand::Check { file }) => {
            return system::check(file, chosen_config);
        }
        other => other,
    };
    let candidates = [
        Path::new(crate::config::DEFAULT_CONFIG_FILE),
        Path::new(socket::SYSTEM_CONFIG),
    ];
    let found = socket::discover(socket::Inputs {
        flag: cli.socket.as_deref(),
        env_socket: env.socket.as_deref(),
        config: chosen_config.as_deref(),
        candidates: &candidates,
    })?;
    let client = Client::new(found);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    runtime.block_on(dispatch(&client, command))
}

async fn dispatch(client: &Client, command: Command) -> Result<Done, CliError> {
    match command {
        Command::Keys(c) => keys::run(client, c).await,
        Command::Accounts(c) => accounts::run(client, c).await,
        Command::Usage(args) => usage::run(client, args).await,
        Command::Audit(args) => system::audit(client, args).await,
        Command::Explain(args) => explain::run(client, args).await,
        Command::Presets(system::PresetsCommand::List(args)) => system::presets(client, args).await,
        Command::Status(args) => system::status(client, args).await,
        Command::Config(system::ConfigCommand::Reload(args)) => system::reload(client, args).await,
        Command::Serve | Command::Config(system::ConfigCommand::Check { .. }) => Err(
            CliError::Usage("this command does not use the admin socket".into()),
        ),
    }
}

/// The wall clock in Unix milliseconds, for relative times in tables.
fn now_ms() -> i64 {
    crate::clock::Clock::system().now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_socket_flag_is_accepted_before_and_after_the_subcommand() {
        for args in [
            &["keygate", "--socket", "/x.sock", "keys", "list"][..],
            &["keygate", "keys", "--socket", "/x.sock", "list"],
            &["keygate", "keys", "list", "--socket", "/x.sock"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(
                cli.socket.as_deref(),
                Some(Path::new("/x.sock")),
                "{args:?}"
            );
        }
    }

    #[test]
    fn bad_flag_values_are_usage_errors() {
        for args in [
            &["keygate", "keys", "create", "--name", "x", "--rate", "60"][..],
            &[
                "keygate", "keys", "create", "--name", "x", "--tokens", "1000",
            ],
            &[
                "keygate",
                "keys",
                "create",
                "--name",
                "x",
                "--quota",
                "requests=5",
            ],
            &[
                "keygate", "keys", "create", "--name", "x", "--meta", "novalue",
            ],
            &[
                "keygate",
                "keys",
                "create",
                "--name",
                "x",
                "--scopes",
                "chat,root",
            ],
            &[
                "keygate",
                "keys",
                "create",
                "--name",
                "x",
                "--ip",
                "10.0.0.300",
            ],
            &[
                "keygate",
                "keys",
                "create",
                "--name",
                "x",
                "--expires-in",
                "soon",
            ],
            &["keygate", "keys", "create"],
            &[
                "keygate",
                "keys",
                "rotate",
                "key_0000000100000001",
                "--grace",
                "1",
            ],
            &["keygate", "usage", "--key", "k", "--account", "a"],
            &["keygate", "usage", "--granularity", "week"],
            &["keygate", "accounts", "create", "a", "--max-keys", "0"],
            &["keygate", "explain", "key_0000000100000001", "--path", "v1"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn a_rate_error_shows_the_expected_form() {
        let err = Cli::try_parse_from(["keygate", "keys", "create", "--name", "x", "--rate", "60"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--rate") && err.contains("60/60s"), "{err}");
    }

    #[test]
    fn scopes_take_a_comma_list() {
        let cli = Cli::try_parse_from([
            "keygate",
            "keys",
            "create",
            "--name",
            "x",
            "--scopes",
            "chat,read",
        ])
        .unwrap();
        let Command::Keys(keys::KeysCommand::Create(args)) = cli.command else {
            panic!("not keys create");
        };
        assert_eq!(
            args.policy.scopes,
            Some(vec![crate::scope::Scope::Chat, crate::scope::Scope::Read])
        );
    }
}
