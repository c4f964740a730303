//! Reading a request's JSON body, when keygate must: to route on or check its `model`, to apply
//! a preset, to reserve its `max_tokens`, or to ask an OpenAI stream for its usage chunk.
//!
//! The body is parsed once into a JSON object. Changes (a preset's model and prompt,
//! `stream_options.include_usage`) mark it changed, and only then is it serialised again;
//! otherwise the client's bytes go upstream untouched.

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::config::Preset;

/// A parsed JSON object body.
#[derive(Debug)]
pub struct JsonBody {
    original: Bytes,
    object: Map<String, Value>,
    changed: bool,
}

impl JsonBody {
    /// Parses a body that must be one JSON object.
    pub fn parse(bytes: Bytes) -> Option<JsonBody> {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(object)) => Some(JsonBody {
                original: bytes,
                object,
                changed: false,
            }),
            _ => None,
        }
    }

    pub fn model(&self) -> Option<&str> {
        self.object.get("model").and_then(Value::as_str)
    }

    pub fn assistant_id(&self) -> Option<&str> {
        self.object.get("assistant_id").and_then(Value::as_str)
    }

    pub fn is_stream(&self) -> bool {
        self.object.get("stream").and_then(Value::as_bool) == Some(true)
    }

    /// The most output tokens the request allows (`max_tokens` or `max_completion_tokens`).
    pub fn max_tokens(&self) -> Option<u64> {
        ["max_completion_tokens", "max_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| self.object.get(*k).and_then(Value::as_u64))
    }

    /// Sets `stream_options.include_usage = true` unless the client already asked for usage.
    /// Returns whether keygate added it (so the extra usage chunk is dropped downstream).
    pub fn request_stream_usage(&mut self) -> bool {
        let options = self
            .object
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(options) = options else {
            // A non-object stream_options is the client's mistake; let the upstream say so.
            return false;
        };
        if options.get("include_usage").and_then(Value::as_bool) == Some(true) {
            return false;
        }
        options.insert("include_usage".into(), Value::Bool(true));
        self.changed = true;
        true
    }

    /// Serves the request with `preset`: its model, its system prompt first, no
    /// `assistant_id`. For Anthropic messages the prompt goes in the `system` field, before
    /// whatever the client put there; for OpenAI chat it is the first `system` message.
    pub fn apply_preset(&mut self, preset: &Preset, anthropic: bool) {
        self.changed = true;
        let o = &mut self.object;
        o.remove("assistant_id");
        o.insert("model".into(), Value::String(preset.model.clone()));
        if preset.system_prompt.is_empty() {
            return;
        }
        let prompt = preset.system_prompt.clone();
        if anthropic {
            let merged = match o.remove("system") {
                None | Some(Value::Null) => Value::String(prompt),
                Some(Value::String(s)) if s.is_empty() => Value::String(prompt),
                Some(Value::String(s)) => Value::String(format!("{prompt}\n\n{s}")),
                Some(Value::Array(mut blocks)) => {
                    blocks.insert(0, serde_json::json!({"type": "text", "text": prompt}));
                    Value::Array(blocks)
                }
                // Anything else is the client's mistake: let the upstream say so, prompt first.
                Some(other) => Value::Array(vec![
                    serde_json::json!({"type": "text", "text": prompt}),
                    other,
                ]),
            };
            o.insert("system".into(), merged);
        } else {
            let system = serde_json::json!({"role": "system", "content": prompt});
            match o.get_mut("messages") {
                Some(Value::Array(messages)) => messages.insert(0, system),
                _ => {
                    o.insert("messages".into(), Value::Array(vec![system]));
                }
            }
        }
    }

    /// The bytes to send upstream.
    pub fn into_bytes(self) -> Bytes {
        if self.changed {
            Bytes::from(serde_json::to_vec(&Value::Object(self.object)).unwrap_or_default())
        } else {
            self.original
        }
    }

    /// The size in bytes of what the client sent.
    pub fn len(&self) -> usize {
        self.original.len()
    }

    pub fn is_empty(&self) -> bool {
        self.original.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_the_top_level_object() {
        let b = JsonBody::parse(Bytes::from_static(
            br#"{"model":"gpt-4o","stream":true,"max_completion_tokens":77,"assistant_id":"bot"}"#,
        ))
        .unwrap();
        assert_eq!(b.model(), Some("gpt-4o"));
        assert!(b.is_stream());
        assert_eq!(b.max_tokens(), Some(77));
        assert_eq!(b.assistant_id(), Some("bot"));
    }

    #[test]
    fn only_objects_are_accepted() {
        assert!(JsonBody::parse(Bytes::from_static(b"[1,2]")).is_none());
        assert!(JsonBody::parse(Bytes::from_static(b"{\"a\":")).is_none());
        assert!(JsonBody::parse(Bytes::from_static(b"")).is_none());
    }

    #[test]
    fn an_unchanged_body_goes_upstream_byte_for_byte() {
        let raw = Bytes::from_static(b"{ \"model\" : \"x\" }");
        let b = JsonBody::parse(raw.clone()).unwrap();
        assert_eq!(b.into_bytes(), raw);
    }

    #[test]
    fn stream_usage_is_requested_only_when_the_client_did_not() {
        let mut b = JsonBody::parse(Bytes::from_static(br#"{"stream":true}"#)).unwrap();
        assert!(b.request_stream_usage());
        let v: Value = serde_json::from_slice(&b.into_bytes()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);

        let mut asked = JsonBody::parse(Bytes::from_static(
            br#"{"stream":true,"stream_options":{"include_usage":true}}"#,
        ))
        .unwrap();
        assert!(!asked.request_stream_usage());
    }
}
