//! How keys look to people: their status, the `keys list` table and the `keys show` fields.
//!
//! Pure functions of a [`KeyObject`] and the current time, so the rendering is tested without a
//! server. Settings a key leaves to the config (`rate_limit: null`) are spelled out as such
//! rather than left blank.

use super::output::{self, Table, fields, relative, when};
use crate::admin::api::KeyObject;
use crate::scope::Scope;

/// Names longer than this are cut in tables; `keys show` has the whole name.
const NAME_WIDTH: usize = 32;

/// What a key is now: revoked, expired, disabled or active, in the order the data plane
/// checks them.
pub fn status(key: &KeyObject, now_ms: i64) -> &'static str {
    let expired = key
        .expires_at
        .as_deref()
        .and_then(crate::clock::parse_rfc3339)
        .is_some_and(|at| at <= now_ms);
    if key.revoked_at.is_some() {
        "revoked"
    } else if expired {
        "expired"
    } else if !key.is_active {
        "disabled"
    } else {
        "active"
    }
}

pub fn scopes(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The `keys list` table.
pub fn table(keys: &[KeyObject], now_ms: i64) -> String {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "ACCOUNT",
        "PREFIX",
        "SCOPES",
        "STATUS",
        "PRIMARY",
        "EXPIRES",
        "LAST USED",
    ]);
    for key in keys {
        t.push(vec![
            key.id.clone(),
            output::truncate(&key.name, NAME_WIDTH),
            key.account.clone(),
            key.key_prefix.clone(),
            scopes(&key.scopes),
            status(key, now_ms).to_owned(),
            if key.primary { "yes" } else { "-" }.to_owned(),
            relative(key.expires_at.as_deref(), now_ms, "never"),
            relative(key.last_used_at.as_deref(), now_ms, "never"),
        ]);
    }
    t.render()
}

/// `keys show`: every field, one per line.
pub fn show(key: &KeyObject, now_ms: i64) -> String {
    let mut rows = vec![
        ("id", key.id.clone()),
        ("name", key.name.clone()),
        ("account", key.account.clone()),
        ("prefix", key.key_prefix.clone()),
        ("status", status(key, now_ms).to_owned()),
        ("primary", if key.primary { "yes" } else { "no" }.to_owned()),
        ("scopes", scopes(&key.scopes)),
        ("created", when(Some(&key.created_at), now_ms, "")),
        ("expires", when(key.expires_at.as_deref(), now_ms, "never")),
        (
            "last used",
            when(key.last_used_at.as_deref(), now_ms, "never"),
        ),
    ];
    if let Some(revoked) = &key.revoked_at {
        rows.push(("revoked", when(Some(revoked), now_ms, "")));
    }
    rows.extend([
        ("origins", output::list(&key.allowed_origins, "any")),
        ("ips", output::list(&key.allowed_ips, "any")),
        ("models", output::list(&key.allowed_models, "any")),
        (
            "rate limit",
            key.rate_limit
                .as_ref()
                .map_or("config default".into(), output::rate),
        ),
        (
            "token limit",
            key.token_limit
                .as_ref()
                .map_or("config default".into(), output::tokens),
        ),
        (
            "quota",
            key.quota.as_ref().map_or("none".into(), output::quota),
        ),
        ("metadata", key.metadata.to_string()),
        (
            "usage",
            format!(
                "{} requests, {} input tokens, {} output tokens",
                key.usage.requests, key.usage.input_tokens, key.usage.output_tokens
            ),
        ),
    ]);
    fields(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn key(overrides: Value) -> KeyObject {
        let mut base = json!({
            "id": "key_0000000100000001", "account": "acme", "name": "ci",
            "key_prefix": "sk-kg-4fT9aQ2mXbLc", "scopes": ["chat", "read"], "is_active": true,
            "primary": true, "expires_at": null, "created_at": "2025-01-01T00:00:00Z",
            "last_used_at": null, "revoked_at": null, "allowed_origins": [], "allowed_ips": [],
            "allowed_models": [], "rate_limit": null, "token_limit": null, "quota": null,
            "metadata": {}, "usage": {"requests": 0, "input_tokens": 0, "output_tokens": 0}
        });
        if let (Some(base), Value::Object(o)) = (base.as_object_mut(), overrides) {
            base.extend(o);
        }
        serde_json::from_value(base).unwrap()
    }

    const NOW: i64 = 1_736_467_200_000; // 2025-01-10T00:00:00Z

    #[test]
    fn status_follows_the_data_plane_order() {
        assert_eq!(status(&key(json!({})), NOW), "active");
        assert_eq!(status(&key(json!({"is_active": false})), NOW), "disabled");
        let expired = json!({"is_active": false, "expires_at": "2025-01-09T00:00:00Z"});
        assert_eq!(status(&key(expired), NOW), "expired");
        assert_eq!(
            status(&key(json!({"expires_at": "2025-01-11T00:00:00Z"})), NOW),
            "active"
        );
        let revoked = json!({"is_active": false, "revoked_at": "2025-01-05T00:00:00Z"});
        assert_eq!(status(&key(revoked), NOW), "revoked");
    }

    #[test]
    fn the_list_table_has_the_documented_columns() {
        let keys = vec![
            key(
                json!({"expires_at": "2025-04-10T00:00:00Z", "last_used_at": "2025-01-09T23:55:00Z"}),
            ),
            key(
                json!({"id": "key_0000000100000002", "primary": false, "is_active": false,
                       "name": "a name that is far too long to fit in the column"}),
            ),
        ];
        let text = table(&keys, NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID", "NAME", "ACCOUNT", "PREFIX", "SCOPES", "STATUS", "PRIMARY", "EXPIRES",
                "LAST", "USED"
            ]
        );
        assert!(lines[1].starts_with("key_0000000100000001  ci "), "{text}");
        assert!(lines[1].contains("chat,read  active    yes"), "{text}");
        assert!(lines[1].ends_with("in 90d   5m ago"), "{text}");
        assert!(
            lines[2].contains("a name that is far too long to…  acme"),
            "{text}"
        );
        assert!(lines[2].contains("disabled  -"), "{text}");
        assert!(lines[2].ends_with("never    never"), "{text}");
    }

    #[test]
    fn show_spells_out_defaults() {
        let text = show(
            &key(json!({"rate_limit": {"requests": 5, "interval": "1s"},
                                    "allowed_ips": ["10.0.0.0/8"], "metadata": {"team": "x"}})),
            NOW,
        );
        assert!(text.contains("rate limit:  5/1s\n"), "{text}");
        assert!(text.contains("token limit: config default\n"), "{text}");
        assert!(text.contains("ips:         10.0.0.0/8\n"), "{text}");
        assert!(text.contains("origins:     any\n"), "{text}");
        assert!(text.contains("metadata:    {\"team\":\"x\"}\n"), "{text}");
        assert!(!text.contains("revoked"), "{text}");
    }
}
