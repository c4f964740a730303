//! The config file exactly as written: serde structs mirroring SPEC §5's TOML, every setting
//! optional, nothing checked yet.
//!
//! Values that need checking with a good message (durations, addresses, enums, ranges) are kept as
//! strings and `i64`s here; `validate` turns them into the typed `Snapshot`. The field lists of
//! these structs are also the list of known keys ([`known_keys`]), read from serde itself so they
//! cannot drift from what is accepted.

use std::collections::BTreeMap;

use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{
    self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// The whole file. `validate` fills it section by section, so that a mistake in one section does
/// not hide those in others; here it names the top-level sections.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawConfig {
    pub server: Option<RawServer>,
    pub admin: Option<RawAdmin>,
    pub listeners: Option<Vec<RawListener>>,
    pub keys: Option<RawKeys>,
    pub limits: Option<RawLimits>,
    pub usage: Option<RawUsage>,
    pub log: Option<RawLog>,
    pub metrics: Option<RawMetrics>,
    pub upstreams: Option<BTreeMap<String, RawUpstream>>,
    pub routes: Option<Vec<RawRoute>>,
    pub presets: Option<BTreeMap<String, RawPreset>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawServer {
    pub state_dir: Option<String>,
    pub max_body_bytes: Option<i64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub shutdown_grace: Option<String>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_header_bytes: Option<i64>,
    pub max_headers: Option<i64>,
    pub max_connections: Option<i64>,
    pub tls_handshake_timeout: Option<String>,
    pub h2_max_concurrent_streams: Option<i64>,
    pub auth_failure_limit: Option<RawRate>,
}

/// `{ requests = 60, interval = "60s" }`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRate {
    pub requests: Option<i64>,
    pub interval: Option<String>,
}

/// `{ tokens = 100000, interval = "60s" }`
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawTokenRate {
    pub tokens: Option<i64>,
    pub interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawAdmin {
    pub socket: Option<String>,
    pub allowed_uids: Option<Vec<i64>>,
    pub allowed_gids: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawListener {
    pub addr: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawKeys {
    pub prefix: Option<String>,
    pub max_active_per_account: Option<i64>,
    pub default_scopes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLimits {
    pub rate_limit: Option<RawRate>,
    pub token_limit: Option<RawTokenRate>,
    pub reserve_tokens: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawUsage {
    pub flush_interval: Option<String>,
    pub hourly_retention: Option<String>,
    pub daily_retention: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMetrics {
    pub addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawUpstream {
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
    pub auth: Option<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRoute {
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub scope: Option<String>,
    pub errors: Option<String>,
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPreset {
    pub upstream: Option<String>,
    pub model: Option<String>,
    pub system_prompt: Option<String>,
}

/// Every table of the file whose keys are fixed: its place as path segments (`*` for any
/// upstream name, preset id or array index) and its keys, in field order. Read from the serde
/// derives of [`RawConfig`] and everything below it, so it lists exactly what is accepted; used
/// for "did you mean" suggestions and to check that `config.example.toml` documents every key.
pub(super) fn schema() -> &'static [(Vec<String>, &'static [&'static str])] {
    static SCHEMA: OnceLock<Vec<(Vec<String>, &'static [&'static str])>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut tables = Vec::new();
        let probe = Probe {
            path: Vec::new(),
            tables: &mut tables,
        };
        // Every raw field is optional, so the probe's made-up values always deserialize; the
        // schema tests would show an empty list if that ever stopped being true.
        let _ = RawConfig::deserialize(probe);
        tables
    })
}

/// The keys allowed in the table at `parent` (segments as written, indexes as digits), if its
/// keys are fixed.
pub(super) fn known_keys(parent: &[String]) -> Option<&'static [&'static str]> {
    schema().iter().find_map(|(shape, keys)| {
        let fits = shape.len() == parent.len()
            && shape.iter().zip(parent).all(|(s, p)| s == "*" || s == p);
        fits.then_some(*keys)
    })
}

/// A deserializer that walks a type instead of data: it records the fields of every struct it is
/// asked for, and feeds each collection one made-up element so that nested types are reached.
struct Probe<'a> {
    path: Vec<String>,
    tables: &'a mut Vec<(Vec<String>, &'static [&'static str])>,
}

impl Probe<'_> {
    fn child(&mut self, segment: &str) -> Probe<'_> {
        let mut path = self.path.clone();
        path.push(segment.to_owned());
        Probe {
            path,
            tables: self.tables,
        }
    }
}

/// The probe met a type that the raw structs do not use.
#[derive(Debug)]
struct Unprobed(String);

impl fmt::Display for Unprobed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unprobed {}

impl de::Error for Unprobed {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Unprobed(msg.to_string())
    }
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Unprobed;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Unprobed> {
        self.tables.push((self.path.clone(), fields));
        visitor.visit_map(Fields {
            probe: self,
            fields,
            next: 0,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unprobed> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unprobed> {
        visitor.visit_seq(One {
            probe: self,
            done: false,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unprobed> {
        visitor.visit_map(One {
            probe: self,
            done: false,
        })
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unprobed> {
        visitor.visit_str("")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unprobed> {
        visitor.visit_str("")
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unprobed> {
        visitor.visit_i64(0)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Unprobed> {
        Err(Unprobed(format!(
            "the schema probe does not know the type at {}",
            self.path.join(".")
        )))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// A struct's fields, each with a probe for its value.
struct Fields<'a> {
    probe: Probe<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Unprobed;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Unprobed> {
        match self.fields.get(self.next) {
            Some(field) => seed.deserialize(field.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Unprobed> {
        let field = self.fields.get(self.next).copied().unwrap_or("*");
        self.next += 1;
        seed.deserialize(self.probe.child(field))
    }
}

/// A collection of one made-up element (keyed `*` in a map).
struct One<'a> {
    probe: Probe<'a>,
    done: bool,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Unprobed;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Unprobed> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(None);
        }
        seed.deserialize(self.probe.child("*")).map(Some)
    }
}

impl<'de> MapAccess<'de> for One<'_> {
    type Error = Unprobed;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Unprobed> {
        if self.done {
            return Ok(None);
        }
        seed.deserialize("*".into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Unprobed> {
        self.done = true;
        seed.deserialize(self.probe.child("*"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys_at(path: &[&str]) -> Option<&'static [&'static str]> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        known_keys(&path)
    }

    #[test]
    fn the_schema_lists_every_table_with_fixed_keys() {
        let shapes: Vec<String> = schema().iter().map(|(shape, _)| shape.join(".")).collect();
        assert_eq!(
            shapes,
            [
                "",
                "server",
                "server.auth_failure_limit",
                "admin",
                "listeners.*",
                "keys",
                "limits",
                "limits.rate_limit",
                "limits.token_limit",
                "usage",
                "log",
                "metrics",
                "upstreams.*",
                "routes.*",
                "presets.*",
            ]
        );
    }

    #[test]
    fn field_names_come_from_serde() {
        assert_eq!(
            keys_at(&["presets", "support-bot"]),
            Some(&["upstream", "model", "system_prompt"][..])
        );
        assert_eq!(
            keys_at(&["limits", "rate_limit"]),
            Some(&["requests", "interval"][..])
        );
        assert_eq!(
            keys_at(&["limits", "token_limit"]),
            Some(&["tokens", "interval"][..])
        );
        let server = keys_at(&["server"]).unwrap_or_default();
        assert_eq!(server.len(), 12);
        assert!(server.contains(&"max_body_bytes"));
        assert!(keys_at(&[]).unwrap_or_default().contains(&"upstreams"));
        assert!(
            keys_at(&["routes", "3"])
                .unwrap_or_default()
                .contains(&"models")
        );
        assert!(
            keys_at(&["upstreams", "openai"])
                .unwrap_or_default()
                .contains(&"api_key_file")
        );
    }

    #[test]
    fn free_form_tables_have_no_known_keys() {
        assert_eq!(keys_at(&["upstreams", "openai", "headers"]), None);
        assert_eq!(keys_at(&["upstreams"]), None);
        assert_eq!(keys_at(&["nonsense"]), None);
    }
}
