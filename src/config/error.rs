//! [`ConfigError`] and [`ConfigErrors`]: every problem of a config file, each with the place it is at.
//!
//! Each error names the file, the 1-based line and column, and the dotted path of the setting
//! (`routes[2].upstream`), so `keygate config check`, the reload log and `GET /api/config` can all
//! show `FILE:LINE:COL: PATH: MESSAGE`. Messages never contain a secret.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the text (the file cannot be read).
    pub line: usize,
    /// 1-based, counted in characters; 0 together with `line`.
    pub col: usize,
    /// The setting, e.g. `routes[2].upstream`; empty for syntax errors and unreadable files.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file.display())?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.col)?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one config file, in the order they appear in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Sorts by position; problems without a position (line 0) come first.
    pub(crate) fn sorted(mut errors: Vec<ConfigError>) -> ConfigErrors {
        errors.sort_by_key(|e| (e.line, e.col));
        ConfigErrors(errors)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: usize, col: usize, path: &str, message: &str) -> ConfigError {
        ConfigError {
            file: PathBuf::from("/etc/keygate/keygate.toml"),
            line,
            col,
            path: path.into(),
            message: message.into(),
        }
    }

    #[test]
    fn display_is_file_line_col_path_message() {
        let e = error(
            12,
            5,
            "routes[2].upstream",
            "upstream \"opnai\" is not defined",
        );
        assert_eq!(
            e.to_string(),
            "/etc/keygate/keygate.toml:12:5: routes[2].upstream: upstream \"opnai\" is not defined"
        );
        assert_eq!(
            error(3, 1, "", "duplicate key").to_string(),
            "/etc/keygate/keygate.toml:3:1: duplicate key"
        );
        assert_eq!(
            error(0, 0, "", "cannot read the file: denied").to_string(),
            "/etc/keygate/keygate.toml: cannot read the file: denied"
        );
    }

    #[test]
    fn errors_are_sorted_by_position_and_shown_one_per_line() {
        let all = ConfigErrors::sorted(vec![
            error(9, 1, "b", "second"),
            error(2, 7, "a", "first"),
            error(9, 3, "c", "third"),
        ]);
        let lines: Vec<String> = all.to_string().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with("2:7: a: first"));
        assert!(lines[1].ends_with("9:1: b: second"));
        assert!(lines[2].ends_with("9:3: c: third"));
    }
}
