//! Records as the admin API shows them: [`KeyObject`] and [`AccountObject`] built from what the
//! store holds, with usage totals merged in. Nothing here can reach a secret: records hold only
//! hashes, and the one-time secret is added by the create and rotate handlers alone.

use super::api::{AccountObject, ActorJson, AuditEntry, KeyObject, UsageTotals, limits_json};
use crate::clock::rfc3339;
use crate::policy::Limits;
use crate::scope::Scopes;
use crate::store::{AccountRecord, AuditRecord, KeyRecord};

/// A key object; `usage` and `last_used_ms` come from the metering totals.
pub fn key_object(key: &KeyRecord, usage: UsageTotals, last_used_ms: Option<i64>) -> KeyObject {
    let (rate_limit, token_limit, quota) = limits_json(&Limits::from_record(&key.limits));
    KeyObject {
        id: key.id.clone(),
        account: key.account.clone(),
        name: key.name.clone(),
        key_prefix: key.key_prefix.clone(),
        scopes: Scopes::from_bits(key.scopes).iter().collect(),
        is_active: key.is_live(),
        primary: key.primary,
        expires_at: key.expires_at_ms.map(rfc3339),
        created_at: rfc3339(key.created_at_ms),
        last_used_at: last_used_ms.map(rfc3339),
        revoked_at: key.revoked_at_ms.map(rfc3339),
        allowed_origins: key.allowed_origins.clone(),
        allowed_ips: key.allowed_ips.clone(),
        allowed_models: key.allowed_models.clone(),
        rate_limit,
        token_limit,
        quota,
        metadata: serde_json::from_str(&key.metadata)
            .unwrap_or_else(|_| serde_json::Value::Object(Default::default())),
        usage,
        key: None,
    }
}

/// An account object. `keys` are the account's keys, for the active count and primary.
pub fn account_object(
    account: &AccountRecord,
    keys: &[KeyRecord],
    now_ms: i64,
    usage: UsageTotals,
) -> AccountObject {
    let (rate_limit, token_limit, quota) = limits_json(&Limits::from_record(&account.limits));
    AccountObject {
        name: account.name.clone(),
        created_at: rfc3339(account.created_at_ms),
        max_active_keys: account.max_active_keys,
        rate_limit,
        token_limit,
        quota,
        usage,
        active_keys: keys.iter().filter(|k| k.counts_as_active(now_ms)).count() as u32,
        primary_key: keys
            .iter()
            .find(|k| k.primary && k.is_live())
            .map(|k| k.id.clone()),
    }
}

pub fn audit_entry(record: &AuditRecord) -> AuditEntry {
    AuditEntry {
        seq: record.seq,
        at: rfc3339(record.at_ms),
        actor: ActorJson {
            uid: record.actor.uid,
            gid: record.actor.gid,
            pid: record.actor.pid,
        },
        action: record.action.clone(),
        target: record.target.clone(),
        details: serde_json::from_str(&record.details).unwrap_or(serde_json::Value::Null),
    }
}
