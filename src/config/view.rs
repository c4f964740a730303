//! [`Snapshot::to_json`]: the effective configuration as `GET /api/config` shows it.
//!
//! Every setting appears, defaults included, with durations in the config's own notation
//! (`format_duration`). Secrets never appear: an upstream's credential is `"[redacted]"` or
//! `null` beside its `credential_source`, and header values marked sensitive are redacted too.

use serde_json::{Value, json};

use super::secret::REDACTED;
use super::{
    AuthStyle, ErrorStyle, Listener, LogFormat, Preset, Rate, Route, Snapshot, TokenRate, Upstream,
    format_duration,
};

impl Snapshot {
    /// The effective configuration as JSON, with secrets redacted.
    pub fn to_json(&self) -> Value {
        let server = &self.server;
        json!({
            "source": self.source.as_ref().map(|p| p.display().to_string()),
            "warnings": self.warnings,
            "server": {
                "state_dir": server.state_dir.display().to_string(),
                "max_body_bytes": server.max_body_bytes,
                "trusted_proxies": server.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "shutdown_grace": format_duration(server.shutdown_grace),
                "header_read_timeout": format_duration(server.header_read_timeout),
                "idle_timeout": format_duration(server.idle_timeout),
                "max_header_bytes": server.max_header_bytes,
                "max_headers": server.max_headers,
                "max_connections": server.max_connections,
                "tls_handshake_timeout": format_duration(server.tls_handshake_timeout),
                "h2_max_concurrent_streams": server.h2_max_concurrent_streams,
                "auth_failure_limit": rate(&server.auth_failure_limit),
            },
            "admin": {
                "socket": self.admin.socket.display().to_string(),
                "allowed_uids": self.admin.allowed_uids,
                "allowed_gids": self.admin.allowed_gids,
            },
            "listeners": self.listeners.iter().map(listener).collect::<Vec<_>>(),
            "keys": {
                "prefix": self.keys.prefix,
                "max_active_per_account": self.keys.max_active_per_account,
                "default_scopes": self.keys.default_scopes,
            },
            "limits": {
                "rate_limit": self.limits.rate_limit.as_ref().map(rate),
                "token_limit": self.limits.token_limit.as_ref().map(token_rate),
                "reserve_tokens": self.limits.reserve_tokens,
            },
            "usage": {
                "flush_interval": format_duration(self.usage.flush_interval),
                "hourly_retention": format_duration(self.usage.hourly_retention),
                "daily_retention": self.usage.daily_retention.map(format_duration),
            },
            "log": {
                "format": match self.log.format {
                    LogFormat::Text => "text",
                    LogFormat::Json => "json",
                },
                "level": self.log.level,
            },
            "metrics": {
                "addr": self.metrics.addr.map(|a| a.to_string()),
            },
            "upstreams": self
                .upstreams
                .iter()
                .map(|(name, u)| (name.clone(), upstream(u)))
                .collect::<serde_json::Map<_, _>>(),
            "routes": self.routes.iter().map(route).collect::<Vec<_>>(),
            "presets": self
                .presets
                .iter()
                .map(|(id, p)| (id.clone(), preset(p)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }
}

fn rate(rate: &Rate) -> Value {
    json!({ "requests": rate.requests, "interval": format_duration(rate.interval) })
}

fn token_rate(rate: &TokenRate) -> Value {
    json!({ "tokens": rate.tokens, "interval": format_duration(rate.interval) })
}

fn listener(listener: &Listener) -> Value {
    json!({
        "addr": listener.addr.to_string(),
        "tls": listener.tls.as_ref().map(|tls| json!({
            "cert": tls.cert.display().to_string(),
            "key": tls.key.display().to_string(),
        })),
    })
}

fn upstream(u: &Upstream) -> Value {
    let headers: serde_json::Map<String, Value> = u
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if value.is_sensitive() {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), Value::String(shown))
        })
        .collect();
    json!({
        "base_url": u.base_url.to_string(),
        "credential": u.credential.as_ref().map(|_| REDACTED),
        "credential_source": u.credential_source,
        "auth": match u.auth {
            AuthStyle::Bearer => "bearer",
            AuthStyle::XApiKey => "x-api-key",
        },
        "connect_timeout": format_duration(u.connect_timeout),
        "timeout": format_duration(u.timeout),
        "headers": headers,
        "ca_file": u.ca_file.as_ref().map(|p| p.display().to_string()),
    })
}

fn route(r: &Route) -> Value {
    json!({
        "path": r.path,
        "methods": r.methods.as_ref().map(|ms| ms.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
        "upstream": r.upstream,
        "scope": r.scope,
        "errors": match r.errors {
            ErrorStyle::OpenAi => "openai",
            ErrorStyle::Anthropic => "anthropic",
        },
        "models": r.models,
    })
}

fn preset(p: &Preset) -> Value {
    json!({
        "upstream": p.upstream,
        "model": p.model,
        "system_prompt": p.system_prompt,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::Path;

    use super::*;

    const CANARY: &str = "sk-canary-7c1f9e2b4d";
    const HEADER_CANARY: &str = "hdr-canary-31a8";

    fn snapshot_with_secrets() -> (Snapshot, tempfile::NamedTempFile) {
        let mut key_file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(key_file, "  {CANARY}-file  ").expect("write key");
        let text = format!(
            "[upstreams.openai]\nbase_url = \"https://api.openai.com/\"\napi_key_env = \"OPENAI_API_KEY\"\n\
             [upstreams.local]\nbase_url = \"http://127.0.0.1:11434/v1/\"\napi_key_file = {:?}\n\
             auth = \"x-api-key\"\nheaders = {{ \"x-goog-api-key\" = \"{HEADER_CANARY}\", \"x-team\" = \"blue\" }}\n\
             [[routes]]\npath = \"/v1/\"\nupstream = \"openai\"\nmethods = [\"post\"]\nmodels = [\"gpt-*\"]\n\
             [presets.bot]\nupstream = \"local\"\nmodel = \"llama3\"\nsystem_prompt = \"\"\n\
             [limits]\ntoken_limit = {{ tokens = 1000, interval = \"90s\" }}\n[usage]\ndaily_retention = \"365d\"\n",
            key_file.path().display()
        );
        let env = |name: &str| (name == "OPENAI_API_KEY").then(|| CANARY.to_owned());
        let snapshot = Snapshot::parse_with_env(&text, Path::new("k.toml"), &env)
            .unwrap_or_else(|e| panic!("{e}"));
        (snapshot, key_file)
    }

    #[test]
    fn secrets_never_appear_in_json_or_debug() {
        let (snapshot, _key_file) = snapshot_with_secrets();
        let openai = snapshot.upstream("openai").expect("openai");
        assert_eq!(openai.credential.as_ref().map(|c| c.expose()), Some(CANARY));
        let local = snapshot.upstream("local").expect("local");
        let file_key = format!("{CANARY}-file");
        assert_eq!(
            local.credential.as_ref().map(|c| c.expose()),
            Some(file_key.as_str())
        );

        let json = snapshot.to_json().to_string();
        let debug = format!("{snapshot:?} {snapshot:#?}");
        for shown in [&json, &debug] {
            assert!(!shown.contains(CANARY), "{shown}");
            assert!(!shown.contains(HEADER_CANARY), "{shown}");
        }
        assert!(json.contains("\"x-team\":\"blue\""));
    }

    #[test]
    fn json_shows_every_setting_in_config_notation() {
        let (snapshot, key_file) = snapshot_with_secrets();
        let json = snapshot.to_json();
        assert_eq!(json["source"], "k.toml");
        assert_eq!(json["server"]["state_dir"], "/var/lib/keygate");
        assert_eq!(json["server"]["max_body_bytes"], 10_485_760);
        assert_eq!(json["server"]["shutdown_grace"], "30s");
        assert_eq!(
            json["server"]["auth_failure_limit"],
            json!({"requests": 20, "interval": "60s"})
        );
        assert_eq!(
            json["listeners"],
            json!([{"addr": "127.0.0.1:8080", "tls": null}])
        );
        assert_eq!(json["keys"]["default_scopes"], json!(["chat", "read"]));
        assert_eq!(
            json["limits"]["rate_limit"],
            json!({"requests": 60, "interval": "60s"})
        );
        assert_eq!(
            json["limits"]["token_limit"],
            json!({"tokens": 1000, "interval": "1m30s"})
        );
        assert_eq!(json["usage"]["hourly_retention"], "90d");
        assert_eq!(json["usage"]["daily_retention"], "365d");
        assert_eq!(json["log"], json!({"format": "text", "level": "info"}));
        assert_eq!(json["metrics"]["addr"], Value::Null);

        let openai = &json["upstreams"]["openai"];
        assert_eq!(openai["base_url"], "https://api.openai.com/");
        assert_eq!(openai["credential"], "[redacted]");
        assert_eq!(openai["credential_source"], "env:OPENAI_API_KEY");
        assert_eq!(openai["auth"], "bearer");
        assert_eq!(openai["timeout"], "10m");
        let local = &json["upstreams"]["local"];
        assert_eq!(local["base_url"], "http://127.0.0.1:11434/v1");
        let source = format!("file:{}", key_file.path().display());
        assert_eq!(local["credential_source"], source.as_str());
        assert_eq!(local["auth"], "x-api-key");
        assert_eq!(local["headers"]["x-goog-api-key"], "[redacted]");

        assert_eq!(
            json["routes"],
            json!([{"path": "/v1/", "methods": ["POST"], "upstream": "openai", "scope": "chat",
                    "errors": "openai", "models": ["gpt-*"]}])
        );
        assert_eq!(
            json["presets"]["bot"],
            json!({"upstream": "local", "model": "llama3", "system_prompt": ""})
        );
    }

    #[test]
    fn an_upstream_without_credential_shows_null() {
        let text = "[upstreams.ollama]\nbase_url = \"http://127.0.0.1:11434\"\n\
                    [upstreams.openai]\nbase_url = \"https://api.openai.com\"\napi_key_env = \"UNSET_KEY\"\n";
        let snapshot = Snapshot::parse_with_env(text, Path::new("k.toml"), &|_| None)
            .unwrap_or_else(|e| panic!("{e}"));
        let json = snapshot.to_json();
        assert_eq!(json["upstreams"]["ollama"]["credential"], Value::Null);
        assert_eq!(
            json["upstreams"]["ollama"]["credential_source"],
            Value::Null
        );
        assert_eq!(json["upstreams"]["openai"]["credential"], Value::Null);
        assert_eq!(
            json["upstreams"]["openai"]["credential_source"],
            "env:UNSET_KEY"
        );
        assert_eq!(json["warnings"].as_array().map(Vec::len), Some(1));
    }
}
