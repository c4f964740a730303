//! [`Secret`]: an upstream credential that never prints.
//!
//! The value is reachable only through [`Secret::expose`], so every place that sends it upstream
//! is easy to find, and `Debug`/`Display` of any struct holding one (a whole `Snapshot`, an error,
//! a log field) show `[redacted]` instead.

use std::fmt;

/// What `Debug` and `Display` print instead of the value.
pub const REDACTED: &str = "[redacted]";

/// A secret string, such as an upstream API key. Cloning copies the value; nothing else touches it.
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into().into_boxed_str())
    }

    /// The secret itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "sk-canary-5f3e1d0c";

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::new(CANARY);
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", Some(secret.clone())),
            format!("{:>40}", secret),
        ] {
            assert!(!shown.contains(CANARY), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
    }

    #[test]
    fn expose_and_clone_keep_the_value() {
        let secret = Secret::from(CANARY.to_owned());
        assert_eq!(secret.expose(), CANARY);
        assert_eq!(secret.clone().expose(), CANARY);
    }
}
