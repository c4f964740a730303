//! What can go wrong in a client command, and the exit code each cause gets (SPEC §4).
//!
//! 0 ok; 1 the server answered with an error, or input was refused after parsing; 2 a usage
//! error (clap's own, plus the flag combinations clap cannot express); 3 the admin socket could
//! not be reached. Messages never carry a secret: the only secrets the client ever holds are the
//! ones create and rotate print, and those are not part of any error.

use std::path::PathBuf;

use super::socket::{ConfigFileError, Origin};

/// Exit code of a usage error, as clap uses it.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the admin socket cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Connecting to the admin socket failed (`ENOENT`, `ECONNREFUSED`, `EACCES`, ...).
    #[error("cannot reach the admin socket {} ({origin}): {source}{}", path.display(), connect_hint(source))]
    Connect {
        path: PathBuf,
        origin: Origin,
        source: std::io::Error,
    },
    /// The server answered with a non-2xx status and this error body.
    #[error("{message} ({code})")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The exchange failed after the connection was made (reset, timeout, bad HTTP).
    #[error("the admin request failed: {0}")]
    Exchange(String),
    /// The server answered 2xx with a body this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// A flag combination that clap could not refuse by itself.
    #[error("{0}")]
    Usage(String),
    /// The config file consulted for the socket is unreadable or not TOML.
    #[error(transparent)]
    ConfigFile(#[from] ConfigFileError),
    /// Writing the output failed (a closed pipe is not reported).
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Connect { .. } => EXIT_UNREACHABLE,
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Server { .. }
            | CliError::Exchange(_)
            | CliError::Protocol(_)
            | CliError::ConfigFile(_)
            | CliError::Output(_)
            | CliError::Runtime(_) => 1,
        }
    }

    /// Whether this is a write to a closed pipe (`keygate keys list | head -1`), which is not
    /// worth a message.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
}

fn connect_hint(error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            "; is keygate running? (use --socket PATH or KEYGATE_SOCKET to point elsewhere)"
        }
        std::io::ErrorKind::PermissionDenied => {
            "; the socket file is mode 0660: this user needs to be in the group that owns it"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_exit_code() {
        let connect = CliError::Connect {
            path: "/x.sock".into(),
            origin: Origin::Flag,
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(connect.exit_code(), 3);
        assert!(connect.to_string().contains("/x.sock (from --socket)"));
        assert!(connect.to_string().contains("is keygate running"));
        let server = CliError::Server {
            status: 409,
            code: "key_limit_reached".into(),
            message: "account acme already has 10 active keys (limit 10)".into(),
        };
        assert_eq!(server.exit_code(), 1);
        assert_eq!(
            server.to_string(),
            "account acme already has 10 active keys (limit 10) (key_limit_reached)"
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Protocol("x".into()).exit_code(), 1);
        let pipe = CliError::Output(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(pipe.is_broken_pipe());
    }
}
