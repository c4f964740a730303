//! Scopes: the coarse permissions a key carries and a route requires (SPEC §3).
//!
//! A key's scopes are a small bit set, so the per-request check is one AND.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One permission a route may require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Chat,
    Read,
    Write,
    Admin,
    Webhook,
}

impl Scope {
    /// Every scope, in the SPEC's order.
    pub const ALL: [Scope; 5] = [
        Scope::Chat,
        Scope::Read,
        Scope::Write,
        Scope::Admin,
        Scope::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Webhook => "webhook",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a string that names no scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (expected one of chat, read, write, admin, webhook)")]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| UnknownScope(s.to_owned()))
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of scopes, stored as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the SPEC's order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The raw bits, for storage.
    pub fn bits(self) -> u8 {
        self.0
    }

    /// From stored bits; unknown bits are dropped.
    pub fn from_bits(bits: u8) -> Scopes {
        let all = Scope::ALL.iter().fold(0, |acc, s| acc | s.bit());
        Scopes(bits & all)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut set = Scopes::default();
        for scope in iter {
            set.insert(scope);
        }
        set
    }
}

impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Scope>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_through_its_name() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("Chat".parse::<Scope>().is_err());
    }

    #[test]
    fn a_set_holds_exactly_what_was_inserted() {
        let set: Scopes = [Scope::Chat, Scope::Admin].into_iter().collect();
        assert!(set.contains(Scope::Chat) && set.contains(Scope::Admin));
        assert!(!set.contains(Scope::Read));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![Scope::Chat, Scope::Admin]
        );
        assert_eq!(Scopes::from_bits(set.bits()), set);
        assert_eq!(serde_json::to_string(&set).unwrap(), r#"["chat","admin"]"#);
    }
}
