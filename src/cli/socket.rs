//! Finding the admin socket (SPEC §4) and the config file commands read.
//!
//! The order is: `--socket`, else `KEYGATE_SOCKET`, else the `admin.socket` of the config file
//! (`--config`/`KEYGATE_CONFIG`, else `./keygate.toml`, else `/etc/keygate/keygate.toml`, the
//! first that exists), else the built-in default `./keygate-data/admin.sock`. [`discover`] takes
//! all of these as arguments, so it is tested without touching the process environment.
//!
//! The config file is only parsed as TOML here, not validated: an operator allowed on the admin
//! socket may well be unable to read the upstream credential files the config names, and the
//! socket path is all the client needs.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};

/// The built-in default of `keygate serve` without a config file (SPEC §5).
pub const BUILTIN_SOCKET: &str = "./keygate-data/admin.sock";
/// `admin.socket` of a config file that does not set it.
pub const FILE_DEFAULT_SOCKET: &str = "/run/keygate/admin.sock";
/// Where a packaged install keeps its config; looked at after `./keygate.toml`.
pub const SYSTEM_CONFIG: &str = "/etc/keygate/keygate.toml";

/// Where the socket path came from, for messages when it cannot be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    /// The `admin.socket` of this config file (or its default when the file sets none).
    ConfigFile(PathBuf),
    Builtin,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("from --socket"),
            Origin::Env => f.write_str("from KEYGATE_SOCKET"),
            Origin::ConfigFile(path) => write!(f, "admin.socket of {}", path.display()),
            Origin::Builtin => f.write_str("the built-in default; no config file found"),
        }
    }
}

/// The socket to connect to and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub path: PathBuf,
    pub origin: Origin,
}

/// A config file that could not be read for its `admin.socket`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read the config file {}: {source} (give the socket with --socket or KEYGATE_SOCKET)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}: admin.socket must be a string", path.display())]
    NotAString { path: PathBuf },
}

/// What [`discover`] looks at, gathered by the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// `--socket`.
    pub flag: Option<&'a Path>,
    /// `KEYGATE_SOCKET`; empty counts as unset.
    pub env_socket: Option<&'a OsStr>,
    /// `--config`, else `KEYGATE_CONFIG` (see [`config_choice`]).
    pub config: Option<&'a Path>,
    /// Config files tried in order when `config` is `None`; the first that exists is used.
    pub candidates: &'a [&'a Path],
}

/// The admin socket, in the order of SPEC §4.
pub fn discover(inputs: Inputs<'_>) -> Result<Socket, ConfigFileError> {
    if let Some(path) = inputs.flag {
        return Ok(Socket {
            path: path.to_owned(),
            origin: Origin::Flag,
        });
    }
    if let Some(env) = inputs.env_socket.filter(|v| !v.is_empty()) {
        return Ok(Socket {
            path: PathBuf::from(env),
            origin: Origin::Env,
        });
    }
    let file = match inputs.config {
        Some(path) => Some(path),
        None => inputs.candidates.iter().copied().find(|p| p.exists()),
    };
    match file {
        Some(file) => Ok(Socket {
            path: socket_of_file(file)?,
            origin: Origin::ConfigFile(file.to_owned()),
        }),
        None => Ok(Socket {
            path: PathBuf::from(BUILTIN_SOCKET),
            origin: Origin::Builtin,
        }),
    }
}

/// `--config`, else `KEYGATE_CONFIG` (empty counts as unset).
pub fn config_choice(flag: Option<&Path>, env: Option<&OsStr>) -> Option<PathBuf> {
    flag.map(Path::to_owned)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// The `admin.socket` a config file sets, or the file default when it sets none.
pub fn socket_of_file(path: &Path) -> Result<PathBuf, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    socket_of_text(&text, path)
}

fn socket_of_text(text: &str, path: &Path) -> Result<PathBuf, ConfigFileError> {
    let table = toml::from_str::<toml::Table>(text).map_err(|e| ConfigFileError::Toml {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    match table.get("admin").and_then(|admin| admin.get("socket")) {
        None => Ok(PathBuf::from(FILE_DEFAULT_SOCKET)),
        Some(toml::Value::String(socket)) => Ok(PathBuf::from(socket)),
        Some(_) => Err(ConfigFileError::NotAString {
            path: path.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_flag_wins_over_everything() {
        let found = discover(Inputs {
            flag: Some(Path::new("/a.sock")),
            env_socket: Some(OsStr::new("/b.sock")),
            config: Some(Path::new("/does/not/exist.toml")),
            candidates: &[],
        })
        .unwrap();
        assert_eq!(found.path, PathBuf::from("/a.sock"));
        assert_eq!(found.origin, Origin::Flag);
    }

    #[test]
    fn the_env_wins_over_config_files_and_empty_env_is_unset() {
        let found = discover(Inputs {
            env_socket: Some(OsStr::new("/b.sock")),
            config: Some(Path::new("/does/not/exist.toml")),
            ..Inputs::default()
        })
        .unwrap();
        assert_eq!(
            (found.path, found.origin),
            (PathBuf::from("/b.sock"), Origin::Env)
        );

        let found = discover(Inputs {
            env_socket: Some(OsStr::new("")),
            ..Inputs::default()
        })
        .unwrap();
        assert_eq!(found.origin, Origin::Builtin);
    }

    #[test]
    fn a_named_config_file_gives_its_admin_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "k.toml", "[admin]\nsocket = \"/srv/kg.sock\"\n");
        let found = discover(Inputs {
            config: Some(&file),
            ..Inputs::default()
        })
        .unwrap();
        assert_eq!(found.path, PathBuf::from("/srv/kg.sock"));
        assert_eq!(found.origin, Origin::ConfigFile(file));
    }

    #[test]
    fn a_config_file_is_not_validated_beyond_toml() {
        // Unknown settings and unreadable credential files are the server's business.
        let dir = tempfile::tempdir().unwrap();
        let text = "[admin]\nsocket = \"/x.sock\"\nbogus = 1\n[upstreams.a]\napi_key_file = \"/root/secret\"\n";
        let file = write(dir.path(), "k.toml", text);
        assert_eq!(socket_of_file(&file).unwrap(), PathBuf::from("/x.sock"));
    }

    #[test]
    fn a_config_file_without_admin_socket_means_the_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "k.toml", "[keys]\nprefix = \"sk-\"\n");
        assert_eq!(
            socket_of_file(&file).unwrap(),
            PathBuf::from(FILE_DEFAULT_SOCKET)
        );
        let file = write(dir.path(), "empty.toml", "");
        assert_eq!(
            socket_of_file(&file).unwrap(),
            PathBuf::from(FILE_DEFAULT_SOCKET)
        );
    }

    #[test]
    fn the_first_existing_candidate_is_used_else_the_builtin_default() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("keygate.toml");
        let system = write(dir.path(), "etc.toml", "[admin]\nsocket = \"/etc.sock\"\n");
        let found = discover(Inputs {
            candidates: &[&missing, &system],
            ..Inputs::default()
        })
        .unwrap();
        assert_eq!(found.path, PathBuf::from("/etc.sock"));
        assert_eq!(found.origin, Origin::ConfigFile(system.clone()));

        let found = discover(Inputs {
            candidates: &[&missing],
            ..Inputs::default()
        })
        .unwrap();
        assert_eq!(found.path, PathBuf::from(BUILTIN_SOCKET));
        assert_eq!(found.origin, Origin::Builtin);
    }

    #[test]
    fn bad_config_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "bad.toml", "[admin\nsocket = 1\n");
        let err = socket_of_file(&file).unwrap_err();
        assert!(matches!(err, ConfigFileError::Toml { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&file.display().to_string()),
            "{err}"
        );

        let file = write(dir.path(), "num.toml", "[admin]\nsocket = 1\n");
        assert!(matches!(
            socket_of_file(&file),
            Err(ConfigFileError::NotAString { .. })
        ));

        let missing = dir.path().join("missing.toml");
        let err = discover(Inputs {
            config: Some(&missing),
            ..Inputs::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err}");
    }

    #[test]
    fn the_config_flag_wins_over_the_env() {
        let (flag, env) = (Path::new("/flag.toml"), OsStr::new("/env.toml"));
        assert_eq!(config_choice(Some(flag), Some(env)), Some(flag.to_owned()));
        assert_eq!(config_choice(None, Some(env)), Some(PathBuf::from(env)));
        assert_eq!(config_choice(None, Some(OsStr::new(""))), None);
        assert_eq!(config_choice(None, None), None);
    }
}
