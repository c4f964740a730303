//! The records keygate persists, and their versioned encoding.
//!
//! Every stored value is one version byte followed by the postcard encoding of that version's
//! struct. A later schema adds a `V2` struct and a migration in [`decode`]'s match; old files keep
//! loading. Timestamps are Unix milliseconds; durations are milliseconds.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Schema version written by this build, for every record type.
pub const VERSION: u8 = 1;

/// Why a stored value could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("stored {what} has unknown schema version {version} (this build reads {VERSION})")]
    UnknownVersion { what: &'static str, version: u8 },
    #[error("stored {what} is empty")]
    Empty { what: &'static str },
    #[error("stored {what} does not decode: {source}")]
    Decode {
        what: &'static str,
        source: postcard::Error,
    },
}

/// A record type with a stable name (for messages) and a versioned encoding.
pub trait Record: Serialize + DeserializeOwned {
    const WHAT: &'static str;

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        // Serializing plain structs into a Vec cannot fail: postcard only fails on a full buffer
        // or on types it cannot represent, and these records have neither.
        let body = postcard::to_allocvec(self).expect("records are postcard-representable");
        out.extend_from_slice(&body);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&version, body) = bytes
            .split_first()
            .ok_or(CodecError::Empty { what: Self::WHAT })?;
        match version {
            VERSION => postcard::from_bytes(body).map_err(|source| CodecError::Decode {
                what: Self::WHAT,
                source,
            }),
            version => Err(CodecError::UnknownVersion {
                what: Self::WHAT,
                version,
            }),
        }
    }
}

/// A request or token rate as stored: `amount` per `interval_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateRecord {
    pub amount: u64,
    pub interval_ms: u64,
}

/// A quota as stored. `period`: 0 = day, 1 = month, 2 = total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRecord {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub period: u8,
}

/// The limits a key or an account may set; `None` defers to the next layer or the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsRecord {
    pub rate_limit: Option<RateRecord>,
    pub token_limit: Option<RateRecord>,
    pub quota: Option<QuotaRecord>,
}

/// A key's previous secret, still accepted until `until_ms` after a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraceRecord {
    pub hash: [u8; 32],
    pub until_ms: i64,
}

/// One API key. The secret itself is never stored, only `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub account: String,
    pub name: String,
    /// blake3 of the whole current secret.
    pub hash: [u8; 32],
    /// The secret replaced by the last rotation, while its grace period lasts.
    pub previous: Option<GraceRecord>,
    /// `prefix` + first 12 body characters, for lists.
    pub key_prefix: String,
    /// Bits of [`crate::scope::Scopes`].
    pub scopes: u8,
    pub is_active: bool,
    pub primary: bool,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    /// Set by revocation, which is final: the hash is no longer indexed.
    pub revoked_at_ms: Option<i64>,
    pub allowed_origins: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub allowed_models: Vec<String>,
    pub limits: LimitsRecord,
    /// A JSON object, as text (postcard cannot carry free-form JSON values).
    pub metadata: String,
}

impl Record for KeyRecord {
    const WHAT: &'static str = "key";
}

/// A [`KeyRecord`] borrowed from the stored bytes, without copying its strings: what startup
/// reads a million times. Its fields are [`KeyRecord`]'s, in the same order (a test pins it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KeyRecordRef<'a> {
    pub id: &'a str,
    pub account: &'a str,
    pub name: &'a str,
    pub hash: [u8; 32],
    pub previous: Option<GraceRecord>,
    pub key_prefix: &'a str,
    pub scopes: u8,
    pub is_active: bool,
    pub primary: bool,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    #[serde(borrow)]
    pub allowed_origins: Vec<&'a str>,
    #[serde(borrow)]
    pub allowed_ips: Vec<&'a str>,
    #[serde(borrow)]
    pub allowed_models: Vec<&'a str>,
    pub limits: LimitsRecord,
    pub metadata: &'a str,
}

impl<'a> KeyRecordRef<'a> {
    /// Reads a stored key record in place.
    pub fn decode(bytes: &'a [u8]) -> Result<KeyRecordRef<'a>, CodecError> {
        const WHAT: &str = KeyRecord::WHAT;
        let (&version, body) = bytes
            .split_first()
            .ok_or(CodecError::Empty { what: WHAT })?;
        match version {
            VERSION => postcard::from_bytes(body)
                .map_err(|source| CodecError::Decode { what: WHAT, source }),
            version => Err(CodecError::UnknownVersion {
                what: WHAT,
                version,
            }),
        }
    }
}

impl KeyRecord {
    /// The same record, borrowed.
    pub fn as_ref(&self) -> KeyRecordRef<'_> {
        KeyRecordRef {
            id: &self.id,
            account: &self.account,
            name: &self.name,
            hash: self.hash,
            previous: self.previous,
            key_prefix: &self.key_prefix,
            scopes: self.scopes,
            is_active: self.is_active,
            primary: self.primary,
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            revoked_at_ms: self.revoked_at_ms,
            allowed_origins: self.allowed_origins.iter().map(String::as_str).collect(),
            allowed_ips: self.allowed_ips.iter().map(String::as_str).collect(),
            allowed_models: self.allowed_models.iter().map(String::as_str).collect(),
            limits: self.limits.clone(),
            metadata: &self.metadata,
        }
    }

    /// Not revoked and not disabled (expiry is checked against the clock separately).
    pub fn is_live(&self) -> bool {
        self.revoked_at_ms.is_none() && self.is_active
    }

    /// Counts against the account's key limit: live and not expired at `now_ms`.
    pub fn counts_as_active(&self, now_ms: i64) -> bool {
        self.is_live() && self.expires_at_ms.is_none_or(|at| at > now_ms)
    }
}

/// An account: a group of keys that may share limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub name: String,
    pub created_at_ms: i64,
    /// Overrides `keys.max_active_per_account` for this account.
    pub max_active_keys: Option<u32>,
    pub limits: LimitsRecord,
}

impl Record for AccountRecord {
    const WHAT: &'static str = "account";
}

/// Who made an admin change: the socket peer's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// One admin action. `details` is a JSON object (as text) that never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_ms: i64,
    pub actor: Actor,
    /// e.g. `key.create`, `key.revoke`, `account.update`, `config.reload`.
    pub action: String,
    /// The key id or account name acted on, if any.
    pub target: Option<String>,
    pub details: String,
}

impl Record for AuditRecord {
    const WHAT: &'static str = "audit entry";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account() -> AccountRecord {
        AccountRecord {
            name: "acme".into(),
            created_at_ms: 1,
            max_active_keys: Some(3),
            limits: LimitsRecord {
                rate_limit: Some(RateRecord {
                    amount: 5,
                    interval_ms: 1000,
                }),
                token_limit: None,
                quota: Some(QuotaRecord {
                    requests: None,
                    tokens: Some(9),
                    period: 1,
                }),
            },
        }
    }

    #[test]
    fn a_record_round_trips_with_its_version_byte() {
        let bytes = account().encode();
        assert_eq!(bytes[0], VERSION);
        assert_eq!(AccountRecord::decode(&bytes).unwrap(), account());
    }

    /// The borrowed view must read exactly what the owned record wrote: same fields, same order.
    #[test]
    fn a_key_record_reads_back_in_place() {
        let key = KeyRecord {
            id: "key_0000000000000001".into(),
            account: "acme".into(),
            name: "name".into(),
            hash: [7; 32],
            previous: Some(GraceRecord {
                hash: [8; 32],
                until_ms: 99,
            }),
            key_prefix: "sk-kg-abc".into(),
            scopes: 5,
            is_active: true,
            primary: false,
            created_at_ms: 1,
            expires_at_ms: Some(2),
            revoked_at_ms: None,
            allowed_origins: vec!["a.example".into()],
            allowed_ips: vec!["10.0.0.0/8".into()],
            allowed_models: vec!["gpt-*".into()],
            limits: account().limits,
            metadata: "{\"k\":1}".into(),
        };
        let bytes = key.encode();
        assert_eq!(KeyRecordRef::decode(&bytes).unwrap(), key.as_ref());
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let mut bytes = account().encode();
        bytes[0] = 99;
        let err = AccountRecord::decode(&bytes).unwrap_err();
        assert!(
            matches!(err, CodecError::UnknownVersion { version: 99, .. }),
            "{err}"
        );
        assert!(matches!(
            AccountRecord::decode(&[]),
            Err(CodecError::Empty { .. })
        ));
        assert!(matches!(
            AccountRecord::decode(&[VERSION, 0xff]),
            Err(CodecError::Decode { .. })
        ));
    }
}
