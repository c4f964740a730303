//! [`Ctx`]: what validation carries along — the parsed document (to place errors), the
//! environment lookup, and the errors and warnings found so far — plus the checks shared by every
//! section (required keys, ranges, durations, addresses, names, files).
//!
//! Each check records its own error and returns `None` (or a default) so that validation goes on
//! and reports everything at once; a snapshot is only built when no error was recorded.

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use toml::de::DeTable;

use super::locate::{self, Path};
use crate::config::duration::{format_duration, parse_duration};
use crate::config::error::{ConfigError, ConfigErrors};

/// Looks up an environment variable; injectable so that tests need not touch the process's.
pub(crate) type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One error before it has a line and column.
struct Problem {
    offset: usize,
    path: String,
    message: String,
}

pub(super) struct Ctx<'a, 'i> {
    pub doc: &'a DeTable<'i>,
    env: EnvLookup<'a>,
    problems: Vec<Problem>,
    /// Settings whose value could not be read at all; later checks stay quiet about them.
    failed: Vec<Path>,
    pub warnings: Vec<String>,
}

impl<'a, 'i> Ctx<'a, 'i> {
    pub fn new(doc: &'a DeTable<'i>, env: EnvLookup<'a>) -> Self {
        Ctx {
            doc,
            env,
            problems: Vec::new(),
            failed: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// An error about the value at `path` (or, when it is missing, its enclosing table).
    pub fn error(&mut self, path: &Path, message: impl Into<String>) {
        let offset = locate::value_span(self.doc, path).start;
        self.error_at(offset, path, message);
    }

    /// An error about the key that ends `path` (an unknown or misnamed key).
    pub fn error_at_key(&mut self, path: &Path, message: impl Into<String>) {
        let offset = locate::key_span(self.doc, path).start;
        self.error_at(offset, path, message);
    }

    pub fn error_at(&mut self, offset: usize, path: &Path, message: impl Into<String>) {
        self.problems.push(Problem {
            offset,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Marks `path` as unreadable (its error is already recorded).
    pub fn fail(&mut self, path: &Path) {
        self.failed.push(path.clone());
    }

    /// Whether `path` or a table around it could not be read.
    pub fn failed(&self, path: &Path) -> bool {
        self.failed.iter().any(|failed| path.starts_with(failed))
    }

    pub fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    pub fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    pub fn error_count(&self) -> usize {
        self.problems.len()
    }

    /// The errors with their lines and columns, or `Ok` when there are none.
    pub fn finish(self, text: &str, file: &FsPath) -> Result<Vec<String>, ConfigErrors> {
        if self.problems.is_empty() {
            return Ok(self.warnings);
        }
        let errors = self
            .problems
            .into_iter()
            .map(|problem| {
                let (line, col) = locate::line_col(text, problem.offset);
                ConfigError {
                    file: file.to_path_buf(),
                    line,
                    col,
                    path: problem.path,
                    message: problem.message,
                }
            })
            .collect();
        Err(ConfigErrors::sorted(errors))
    }

    /// A required setting; records `missing required key` when it is absent.
    pub fn required<'v, T>(&mut self, path: &Path, value: &'v Option<T>) -> Option<&'v T> {
        if value.is_none() && !self.failed(path) {
            let key = path.last_key().unwrap_or_default();
            self.error(path, format!("missing required key \"{key}\""));
        }
        value.as_ref()
    }

    /// An integer setting within `min..=max`, else `default`.
    pub fn int<T: TryFrom<i64>>(
        &mut self,
        path: &Path,
        value: Option<i64>,
        default: T,
        min: i64,
        max: i64,
    ) -> T {
        let Some(value) = value else {
            return default;
        };
        if value < min {
            self.error(path, format!("must be at least {min}, not {value}"));
        } else if value > max {
            self.error(path, format!("must be at most {max}, not {value}"));
        } else if let Ok(value) = T::try_from(value) {
            return value;
        }
        default
    }

    /// A duration setting within `min..=max`; `default` when absent, `None` when invalid.
    pub fn duration(
        &mut self,
        path: &Path,
        value: Option<&str>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let Some(text) = value else {
            return Some(default);
        };
        match parse_duration(text) {
            Err(message) => self.error(path, message),
            Ok(d) if d < min && min == Duration::from_millis(1) => {
                self.error(path, format!("must be greater than 0s, not {text}"))
            }
            Ok(d) if d < min => self.error(
                path,
                format!("must be at least {}, not {text}", format_duration(min)),
            ),
            Ok(d) if d > max => self.error(
                path,
                format!("must be at most {}, not {text}", format_duration(max)),
            ),
            Ok(d) => return Some(d),
        }
        None
    }

    /// One of a fixed set of words, else `default`.
    pub fn choice<T: Copy>(
        &mut self,
        path: &Path,
        value: Option<&str>,
        default: T,
        options: &[(&str, T)],
    ) -> T {
        let Some(value) = value else {
            return default;
        };
        if let Some((_, choice)) = options.iter().find(|(name, _)| *name == value) {
            return *choice;
        }
        let names: Vec<String> = options
            .iter()
            .map(|(name, _)| format!("{name:?}"))
            .collect();
        self.error(
            path,
            format!("invalid value {value:?} (expected {})", names.join(" or ")),
        );
        default
    }

    /// An `IP:PORT` socket address.
    pub fn socket_addr(&mut self, path: &Path, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    path,
                    format!(
                        "invalid socket address {value:?}: expected IP:PORT, such as \
                         127.0.0.1:8080 or [::]:8443"
                    ),
                );
                None
            }
        }
    }

    /// A non-empty filesystem path.
    pub fn fs_path(&mut self, path: &Path, value: &str) -> Option<PathBuf> {
        if value.is_empty() {
            self.error(path, "must not be empty");
            return None;
        }
        Some(PathBuf::from(value))
    }

    /// A path that must name an existing file now (a certificate, key or CA bundle).
    pub fn existing_file(&mut self, path: &Path, value: &str) -> Option<PathBuf> {
        let file = self.fs_path(path, value)?;
        match std::fs::metadata(&file) {
            Ok(meta) if meta.is_file() => Some(file),
            Ok(_) => {
                self.error(path, format!("{value:?} is not a file"));
                None
            }
            Err(err) => {
                self.error(path, format!("cannot use {value:?}: {err}"));
                None
            }
        }
    }

    /// An upstream name or preset id, `^[A-Za-z0-9_-]{1,64}$`; the error points at the key.
    pub fn name(&mut self, path: &Path, what: &str, name: &str) -> bool {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            self.error_at_key(
                path,
                format!("invalid {what} {name:?}: use 1 to 64 letters, digits, '_' or '-'"),
            );
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[server]\nmax_body_bytes = -1\nshutdown_grace = \"60\"\n";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(check: impl FnOnce(&mut Ctx<'_, '_>)) -> Vec<String> {
        let doc = DeTable::parse(TEXT).expect("test text parses").into_inner();
        let mut cx = Ctx::new(&doc, &no_env);
        check(&mut cx);
        match cx.finish(TEXT, FsPath::new("k.toml")) {
            Ok(_) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    fn server(key: &str) -> Path {
        Path::root().key("server").key(key)
    }

    #[test]
    fn integers_out_of_range_are_errors_at_their_value() {
        let got = errors(|cx| {
            assert_eq!(cx.int(&server("max_body_bytes"), Some(-1), 7u64, 1, 9), 7);
            assert_eq!(cx.int(&server("max_body_bytes"), Some(3), 7u64, 1, 9), 3);
            assert_eq!(cx.int(&server("max_body_bytes"), None, 7u64, 1, 9), 7);
        });
        assert_eq!(
            got,
            ["k.toml:2:18: server.max_body_bytes: must be at least 1, not -1"]
        );
    }

    #[test]
    fn durations_are_parsed_and_bounded() {
        let s = Duration::from_secs;
        let got = errors(|cx| {
            let path = server("shutdown_grace");
            assert_eq!(cx.duration(&path, Some("60"), s(1), s(0), s(9)), None);
            assert_eq!(cx.duration(&path, None, s(1), s(0), s(9)), Some(s(1)));
            assert_eq!(cx.duration(&path, Some("5s"), s(1), s(0), s(9)), Some(s(5)));
            assert_eq!(cx.duration(&path, Some("10s"), s(1), s(0), s(9)), None);
            assert_eq!(
                cx.duration(&path, Some("0s"), s(1), Duration::from_millis(1), s(9)),
                None
            );
            assert_eq!(cx.duration(&path, Some("1s"), s(1), s(2), s(9)), None);
        });
        let at = "k.toml:3:18: server.shutdown_grace: ";
        assert_eq!(
            got,
            [
                format!("{at}invalid duration \"60\": missing unit (use ms, s, m, h or d)"),
                format!("{at}must be at most 9s, not 10s"),
                format!("{at}must be greater than 0s, not 0s"),
                format!("{at}must be at least 2s, not 1s"),
            ]
        );
    }

    #[test]
    fn a_missing_required_key_points_at_its_table_unless_it_failed_already() {
        let got = errors(|cx| {
            assert_eq!(cx.required::<String>(&server("state_dir"), &None), None);
            cx.fail(&server("idle_timeout"));
            assert_eq!(cx.required::<String>(&server("idle_timeout"), &None), None);
        });
        assert_eq!(
            got,
            ["k.toml:1:1: server.state_dir: missing required key \"state_dir\""]
        );
    }

    #[test]
    fn choices_and_names_are_checked() {
        let got = errors(|cx| {
            let options = [("text", 1), ("json", 2)];
            assert_eq!(cx.choice(&server("x"), Some("json"), 1, &options), 2);
            assert_eq!(cx.choice(&server("x"), Some("yaml"), 1, &options), 1);
            assert!(cx.name(&server("max_body_bytes"), "upstream name", "ok_name-1"));
            assert!(!cx.name(&server("max_body_bytes"), "upstream name", "no.dots"));
            assert!(!cx.name(&server("max_body_bytes"), "upstream name", ""));
            assert!(!cx.name(&server("max_body_bytes"), "upstream name", &"x".repeat(65)));
        });
        assert_eq!(got.len(), 4);
        assert!(got[0].ends_with("invalid value \"yaml\" (expected \"text\" or \"json\")"));
        assert!(got[1].starts_with("k.toml:2:1: server.max_body_bytes: invalid upstream name"));
    }

    #[test]
    fn files_must_exist() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "pem").expect("write");
        let dir_name = dir.path().to_string_lossy().into_owned();
        let got = errors(|cx| {
            let path = server("x");
            assert_eq!(
                cx.existing_file(&path, &file.to_string_lossy()),
                Some(file.clone())
            );
            assert_eq!(
                cx.existing_file(&path, &format!("{dir_name}/missing.pem")),
                None
            );
            assert_eq!(cx.existing_file(&path, &dir_name), None);
            assert_eq!(cx.existing_file(&path, ""), None);
        });
        assert_eq!(got.len(), 3);
        assert!(
            got[0].contains("missing.pem") && got[0].contains("No such file"),
            "{}",
            got[0]
        );
        assert!(got[1].ends_with("is not a file"));
        assert!(got[2].ends_with("must not be empty"));
    }
}
