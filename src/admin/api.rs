//! The JSON shapes of the admin API (SPEC §3), shared by the server and the CLI client.
//!
//! The server builds these from records; the CLI deserializes them to print tables. Field names
//! and formats here are the external contract: timestamps are RFC 3339 UTC strings or `null`,
//! durations are `60s`-style strings.

use serde::{Deserialize, Serialize};

use crate::config::{Rate, TokenRate, format_duration};
use crate::policy::{Limits, Quota, QuotaPeriod};
use crate::scope::Scope;

/// `rate_limit` on keys and accounts: `{"requests":60,"interval":"60s"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitJson {
    pub requests: u64,
    pub interval: String,
}

/// `token_limit`: `{"tokens":100000,"interval":"60s"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLimitJson {
    pub tokens: u64,
    pub interval: String,
}

/// `quota`: `{"requests":N|null,"tokens":N|null,"period":"day"|"month"|"total"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaJson {
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    pub period: QuotaPeriod,
}

/// Usage totals of a key or account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The key object of SPEC §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyObject {
    pub id: String,
    pub account: String,
    pub name: String,
    pub key_prefix: String,
    pub scopes: Vec<Scope>,
    pub is_active: bool,
    pub primary: bool,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// Beyond SPEC: when the key was revoked, if it was.
    #[serde(default)]
    pub revoked_at: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_ips: Vec<String>,
    pub allowed_models: Vec<String>,
    pub rate_limit: Option<RateLimitJson>,
    pub token_limit: Option<TokenLimitJson>,
    pub quota: Option<QuotaJson>,
    pub metadata: serde_json::Value,
    pub usage: UsageTotals,
    /// Present only in create and rotate answers: the secret, shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The account object of SPEC §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountObject {
    pub name: String,
    pub created_at: String,
    /// The account's own key limit, or `null` when `keys.max_active_per_account` applies.
    pub max_active_keys: Option<u32>,
    pub rate_limit: Option<RateLimitJson>,
    pub token_limit: Option<TokenLimitJson>,
    pub quota: Option<QuotaJson>,
    pub usage: UsageTotals,
    /// Beyond SPEC: keys that count against the limit now, and the primary key's id.
    #[serde(default)]
    pub active_keys: u32,
    #[serde(default)]
    pub primary_key: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    pub actor: ActorJson,
    pub action: String,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

/// The peer that made an admin change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorJson {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// `{"success":true}` answers, optionally with the changed key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Success {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountObject>,
}

/// The error body of SPEC §2 (OpenAI style), as the admin API sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

pub fn rate_json(rate: Rate) -> RateLimitJson {
    RateLimitJson {
        requests: rate.requests,
        interval: format_duration(rate.interval),
    }
}

pub fn token_json(rate: TokenRate) -> TokenLimitJson {
    TokenLimitJson {
        tokens: rate.tokens,
        interval: format_duration(rate.interval),
    }
}

pub fn quota_json(quota: Quota) -> QuotaJson {
    QuotaJson {
        requests: quota.requests,
        tokens: quota.tokens,
        period: quota.period,
    }
}

/// The three limit fields of a key or account object.
pub fn limits_json(
    limits: &Limits,
) -> (
    Option<RateLimitJson>,
    Option<TokenLimitJson>,
    Option<QuotaJson>,
) {
    (
        limits.rate_limit.map(rate_json),
        limits.token_limit.map(token_json),
        limits.quota.map(quota_json),
    )
}
