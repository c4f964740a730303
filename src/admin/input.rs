//! Turning admin request bodies into validated values, one named field at a time.
//!
//! A body is parsed as a JSON object and fields are taken out one by one, each with its own
//! validation, so an error names exactly the field at fault (`invalid_allowed_ips`). Fields left
//! over at the end are unknown and refused: a typo never silently does nothing. `take_nullable`
//! tells "absent" (leave as is) from `null` (clear), which PATCH needs.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::api::{QuotaJson, RateLimitJson, TokenLimitJson};
use super::error::ApiError;
use crate::config::{Rate, TokenRate, parse_duration};
use crate::policy::{self, Limits, OriginPattern, Quota};
use crate::scope::Scope;

/// Most entries in one allow-list: generous for real use, bounded for memory.
pub const MAX_LIST: usize = 256;
/// SPEC §3: `metadata` is a JSON object of at most 4 KiB.
pub const MAX_METADATA_BYTES: usize = 4096;

/// The fields of a JSON object body, consumed as they are validated.
pub struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    /// Parses a body that must be a JSON object; an empty body is an empty object.
    pub fn parse(body: &[u8]) -> Result<Fields, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Fields { map: Map::new() });
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields { map }),
            Ok(_) => Err(ApiError::BadBody("the body must be a JSON object".into())),
            Err(e) => Err(ApiError::BadBody(format!(
                "the body is not valid JSON: {e}"
            ))),
        }
    }

    /// A field that may be absent; `null` counts as absent.
    pub fn take<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ApiError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| ApiError::invalid(name, format!("{name}: {e}"))),
        }
    }

    /// A field where `null` means "clear": absent → `None`, null → `Some(None)`.
    pub fn take_nullable<T: DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> Result<Option<Option<T>>, ApiError> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => serde_json::from_value(v)
                .map(|t| Some(Some(t)))
                .map_err(|e| ApiError::invalid(name, format!("{name}: {e}"))),
        }
    }

    /// Refuses any field nobody took.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.map.into_iter().next() {
            Some((name, _)) => Err(ApiError::UnknownField(name)),
            None => Ok(()),
        }
    }
}

pub fn name(value: String) -> Result<String, ApiError> {
    let len = value.chars().count();
    if !(1..=255).contains(&len) || value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1 to 255 characters, without control characters",
        ));
    }
    Ok(value)
}

/// Account names appear in URLs and CLI arguments, so they are kept to a safe alphabet.
pub fn account_name(field: &str, value: &str) -> Result<String, ApiError> {
    // Dot-only names are dot segments in a URL: clients remove them before sending.
    let ok = (1..=64).contains(&value.len())
        && !value.bytes().all(|b| b == b'.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'));
    if !ok {
        return Err(ApiError::invalid(
            field,
            format!("{field} must be 1 to 64 characters of A-Z a-z 0-9 _ - . @"),
        ));
    }
    Ok(value.to_owned())
}

pub fn scopes(value: Vec<String>) -> Result<Vec<Scope>, ApiError> {
    if value.is_empty() {
        return Err(ApiError::invalid("scopes", "scopes must not be empty"));
    }
    value
        .iter()
        .map(|s| s.parse::<Scope>())
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::invalid("scopes", e.to_string()))
}

fn bounded(field: &str, list: &[String]) -> Result<(), ApiError> {
    if list.len() > MAX_LIST {
        return Err(ApiError::invalid(
            field,
            format!("{field} has more than {MAX_LIST} entries"),
        ));
    }
    Ok(())
}

/// Allowed origins, normalised to the host patterns that are stored.
pub fn origins(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    bounded("allowed_origins", &list)?;
    list.iter()
        .map(|o| OriginPattern::parse(o).map(|p| p.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::invalid("allowed_origins", e))
}

/// Allowed IPs, normalised to CIDR notation.
pub fn ips(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    bounded("allowed_ips", &list)?;
    list.iter()
        .map(|n| policy::parse_net(n).map(|n| n.to_string()))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::invalid("allowed_ips", e))
}

pub fn models(list: Vec<String>) -> Result<Vec<String>, ApiError> {
    bounded("allowed_models", &list)?;
    list.iter()
        .map(|m| policy::parse_glob(m))
        .collect::<Result<_, _>>()
        .map_err(|e| ApiError::invalid("allowed_models", e))
}

/// A metadata object, stored as compact JSON text of at most 4 KiB.
pub fn metadata(value: Value) -> Result<String, ApiError> {
    if !value.is_object() {
        return Err(ApiError::invalid(
            "metadata",
            "metadata must be a JSON object",
        ));
    }
    let text = value.to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(
            "metadata",
            format!("metadata is larger than {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(text)
}

fn interval(field: &str, text: &str) -> Result<std::time::Duration, ApiError> {
    match parse_duration(text) {
        Ok(d) if d.is_zero() => Err(ApiError::invalid(
            field,
            format!("{field}: interval must be positive"),
        )),
        Ok(d) if d > crate::limits::MAX_INTERVAL => Err(ApiError::invalid(
            field,
            format!("{field}: interval must be at most 366d; use a quota for longer periods"),
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(ApiError::invalid(field, format!("{field}: {e}"))),
    }
}

pub fn rate_limit(json: RateLimitJson) -> Result<Rate, ApiError> {
    if json.requests == 0 {
        return Err(ApiError::invalid(
            "rate_limit",
            "rate_limit: requests must be at least 1",
        ));
    }
    Ok(Rate {
        requests: json.requests,
        interval: interval("rate_limit", &json.interval)?,
    })
}

pub fn token_limit(json: TokenLimitJson) -> Result<TokenRate, ApiError> {
    if json.tokens == 0 {
        return Err(ApiError::invalid(
            "token_limit",
            "token_limit: tokens must be at least 1",
        ));
    }
    Ok(TokenRate {
        tokens: json.tokens,
        interval: interval("token_limit", &json.interval)?,
    })
}

pub fn quota(json: QuotaJson) -> Result<Quota, ApiError> {
    if json.requests.is_none() && json.tokens.is_none() {
        return Err(ApiError::invalid(
            "quota",
            "quota needs requests, tokens or both",
        ));
    }
    Ok(Quota {
        requests: json.requests,
        tokens: json.tokens,
        period: json.period,
    })
}

/// Changes to `rate_limit`, `token_limit` and `quota`: `None` keeps a field, `Some(None)`
/// clears it (PATCH semantics). Validated when taken, applied later inside the transaction.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitsPatch {
    rate_limit: Option<Option<Rate>>,
    token_limit: Option<Option<TokenRate>>,
    quota: Option<Option<Quota>>,
}

impl LimitsPatch {
    pub fn take(fields: &mut Fields) -> Result<LimitsPatch, ApiError> {
        Ok(LimitsPatch {
            rate_limit: fields
                .take_nullable::<RateLimitJson>("rate_limit")?
                .map(|v| v.map(rate_limit).transpose())
                .transpose()?,
            token_limit: fields
                .take_nullable::<TokenLimitJson>("token_limit")?
                .map(|v| v.map(token_limit).transpose())
                .transpose()?,
            quota: fields
                .take_nullable::<QuotaJson>("quota")?
                .map(|v| v.map(quota).transpose())
                .transpose()?,
        })
    }

    /// `limits` with this patch applied.
    pub fn apply(self, mut limits: Limits) -> Limits {
        if let Some(v) = self.rate_limit {
            limits.rate_limit = v;
        }
        if let Some(v) = self.token_limit {
            limits.token_limit = v;
        }
        if let Some(v) = self.quota {
            limits.quota = v;
        }
        limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_present_fields_are_told_apart() {
        let mut f = Fields::parse(br#"{"a":null,"b":5}"#).unwrap();
        assert_eq!(f.take_nullable::<u32>("a").unwrap(), Some(None));
        assert_eq!(f.take_nullable::<u32>("b").unwrap(), Some(Some(5)));
        assert_eq!(f.take_nullable::<u32>("c").unwrap(), None);
        f.finish().unwrap();
    }

    #[test]
    fn leftover_fields_are_refused_by_name() {
        let mut f = Fields::parse(br#"{"name":"x","nmae":"y"}"#).unwrap();
        f.take::<String>("name").unwrap();
        let err = f.finish().unwrap_err();
        assert_eq!(err.code(), "unknown_field");
        assert!(err.to_string().contains("nmae"));
    }

    #[test]
    fn a_wrong_type_names_its_field() {
        let mut f = Fields::parse(br#"{"scopes":"chat"}"#).unwrap();
        assert_eq!(
            f.take::<Vec<String>>("scopes").unwrap_err().code(),
            "invalid_scopes"
        );
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(Fields::parse(b"").is_ok());
        assert_eq!(Fields::parse(b"[1]").err().unwrap().code(), "invalid_body");
        assert_eq!(Fields::parse(b"{").err().unwrap().code(), "invalid_body");
    }

    #[test]
    fn values_are_validated_and_normalised() {
        assert!(name(String::new()).is_err());
        assert!(name("x".repeat(256)).is_err());
        assert!(name("ok name".into()).is_ok());
        assert_eq!(
            account_name("account", "a/b").unwrap_err().code(),
            "invalid_account"
        );
        assert_eq!(ips(vec!["10.1.2.3".into()]).unwrap(), vec!["10.1.2.3/32"]);
        assert_eq!(
            origins(vec!["https://App.example.com".into()]).unwrap(),
            vec!["app.example.com"]
        );
        assert!(scopes(vec!["chat".into(), "root".into()]).is_err());
        assert!(metadata(serde_json::json!([1])).is_err());
        assert!(metadata(serde_json::json!({"k": "x".repeat(5000)})).is_err());
        assert_eq!(
            rate_limit(RateLimitJson {
                requests: 0,
                interval: "1s".into()
            })
            .unwrap_err()
            .code(),
            "invalid_rate_limit"
        );
        assert!(
            rate_limit(RateLimitJson {
                requests: 1,
                interval: "0s".into()
            })
            .is_err()
        );
    }
}
