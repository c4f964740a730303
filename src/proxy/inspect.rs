//! Reading a request's JSON body, when keygate must: to route on or check its `model`, to apply
//! a preset, to reserve its `max_tokens`, or to ask an OpenAI stream for its usage chunk.
//!
//! Reading is cheap: the body is checked to be one JSON object and only the handful of
//! top-level fields keygate looks at are picked out, borrowed in place, with the rest skipped
//! (no tree of values is built for a long `messages` array). Only a request keygate must change
//! (a preset's model and prompt, `stream_options.include_usage`) is split into its top-level
//! members, and only the members it changes are rebuilt; every other member, and every body it
//! does not change, goes upstream as the client's exact bytes. A body naming one of those
//! fields twice is refused: which copy an upstream would use is anyone's guess, and a policy
//! check must not read a different one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::Preset;
use crate::usage::parse::object;

/// The top-level fields keygate reads, borrowed from the body; everything else is skipped.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    assistant_id: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow)]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    max_output_tokens: Option<&'a RawValue>,
}

/// A value keygate puts into a body, as JSON text.
fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value)
        .expect("strings, JSON values and lists of raw JSON always serialise")
}

/// A string value, or `None` for any other kind of value.
fn string(raw: Option<&RawValue>) -> Option<String> {
    raw.and_then(|r| serde_json::from_str::<Cow<'_, str>>(r.get()).ok())
        .map(Cow::into_owned)
}

/// A JSON object body, with the fields keygate reads.
#[derive(Debug)]
pub struct JsonBody {
    original: Bytes,
    model: Option<String>,
    assistant_id: Option<String>,
    stream: bool,
    max_tokens: Option<u64>,
    /// The `stream_options` object, read once; `None` when there is none.
    stream_options: Option<Map<String, Value>>,
    /// The client sent a `stream_options` keygate cannot edit: not an object, or one holding
    /// what serde_json cannot read back (a number beyond f64). keygate leaves it alone.
    odd_stream_options: bool,
    /// The object's members, each still as the client wrote it, once a change needed them.
    /// Only the members keygate changes are rebuilt, so every other value (a float, an integer
    /// beyond 64 bits) reaches the upstream byte for byte.
    edited: Option<BTreeMap<String, Box<RawValue>>>,
}

impl JsonBody {
    /// Reads a body that must be one JSON object.
    pub fn parse(bytes: Bytes) -> Option<JsonBody> {
        // JSON is UTF-8, and serde_json does not check the strings it skips: check it all here.
        let text = std::str::from_utf8(&bytes).ok()?;
        // Anything but one object (an array, broken JSON, trailing data) fails here.
        let peek: Peek<'_> = object(text.as_bytes())?;
        let number = |raw: Option<&RawValue>| raw.and_then(|r| r.get().parse::<u64>().ok());
        let options = peek
            .stream_options
            .map(|r| serde_json::from_str::<Map<String, Value>>(r.get()));
        let body = JsonBody {
            model: string(peek.model),
            assistant_id: string(peek.assistant_id),
            stream: peek.stream.is_some_and(|r| r.get() == "true"),
            max_tokens: number(peek.max_completion_tokens)
                .or_else(|| number(peek.max_tokens))
                .or_else(|| number(peek.max_output_tokens)),
            odd_stream_options: matches!(options, Some(Err(_))),
            stream_options: options.and_then(Result::ok),
            edited: None,
            original: bytes,
        };
        Some(body)
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub fn assistant_id(&self) -> Option<&str> {
        self.assistant_id.as_deref()
    }

    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The most output tokens the request allows (`max_completion_tokens`, `max_tokens` or
    /// `max_output_tokens`).
    pub fn max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }

    /// The object's members, split now if they were not yet, for a change. `None` if a
    /// member's name does not decode; `parse` refuses such bodies, so this only keeps a failed
    /// split from ever sending an emptied body.
    fn object_mut(&mut self) -> Option<&mut BTreeMap<String, Box<RawValue>>> {
        if self.edited.is_none() {
            self.edited = Some(serde_json::from_slice(&self.original).ok()?);
        }
        self.edited.as_mut()
    }

    /// Sets `stream_options.include_usage = true` unless the client already asked for usage.
    /// Returns whether keygate added it (so the extra usage chunk is dropped downstream).
    pub fn request_stream_usage(&mut self) -> bool {
        // A non-object stream_options is the client's mistake; let the upstream say so, with
        // the body as sent.
        let asked = self
            .stream_options
            .as_ref()
            .is_some_and(|o| o.get("include_usage") == Some(&Value::Bool(true)));
        if asked || self.odd_stream_options {
            return false;
        }
        let mut options = self.stream_options.clone().unwrap_or_default();
        options.insert("include_usage".into(), Value::Bool(true));
        let Some(members) = self.object_mut() else {
            return false;
        };
        members.insert("stream_options".into(), raw(&options));
        self.stream_options = Some(options);
        true
    }

    /// Serves the request with `preset`: its model, its system prompt first, no
    /// `assistant_id`. For Anthropic messages the prompt goes in the `system` field, before
    /// whatever the client put there; for OpenAI chat it is the first `system` message.
    ///
    /// Returns false, changing nothing, when the body cannot be taken apart (a member's name
    /// does not decode); the request must then be refused rather than sent without the preset.
    #[must_use]
    pub fn apply_preset(&mut self, preset: &Preset, anthropic: bool) -> bool {
        let Some(o) = self.object_mut() else {
            return false;
        };
        o.remove("assistant_id");
        o.insert("model".into(), raw(&preset.model));
        if !preset.system_prompt.is_empty() {
            prepend_prompt(o, &preset.system_prompt, anthropic);
        }
        self.model = Some(preset.model.clone());
        self.assistant_id = None;
        true
    }

    /// The bytes to send upstream.
    pub fn into_bytes(self) -> Bytes {
        match self.edited {
            // Serialising a map of JSON values cannot fail.
            Some(map) => Bytes::from(serde_json::to_vec(&map).unwrap_or_default()),
            None => self.original,
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

/// Puts `prompt` first: in Anthropic's `system` field, before whatever the client put there,
/// or as the first `system` message of an OpenAI chat.
fn prepend_prompt(o: &mut BTreeMap<String, Box<RawValue>>, prompt: &str, anthropic: bool) {
    if anthropic {
        let block = || raw(&serde_json::json!({"type": "text", "text": prompt}));
        let merged = match o.remove("system") {
            None => raw(prompt),
            Some(old) => match old.get() {
                "null" | "\"\"" => raw(prompt),
                text if text.starts_with('"') => match serde_json::from_str::<String>(text) {
                    Ok(s) => raw(&format!("{prompt}\n\n{s}")),
                    Err(_) => raw(&[block(), old]),
                },
                _ => match serde_json::from_str::<Vec<Box<RawValue>>>(old.get()) {
                    Ok(mut blocks) => {
                        blocks.insert(0, block());
                        raw(&blocks)
                    }
                    // Anything else is the client's mistake: let the upstream say so,
                    // prompt first.
                    Err(_) => raw(&[block(), old]),
                },
            },
        };
        o.insert("system".into(), merged);
    } else {
        let system = raw(&serde_json::json!({"role": "system", "content": prompt}));
        let messages = match o
            .get("messages")
            .and_then(|m| serde_json::from_str::<Vec<Box<RawValue>>>(m.get()).ok())
        {
            Some(mut messages) => {
                messages.insert(0, system);
                messages
            }
            None => vec![system],
        };
        o.insert("messages".into(), raw(&messages));
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
    fn lenient_about_field_types_strict_about_duplicates() {
        let b = JsonBody::parse(Bytes::from_static(
            br#"{"model":5,"stream":"yes","max_tokens":-1,"messages":[{"a":[1,{"b":null}]}]}"#,
        ))
        .unwrap();
        assert_eq!(
            (b.model(), b.is_stream(), b.max_tokens()),
            (None, false, None)
        );
        let escaped = JsonBody::parse(Bytes::from_static(br#"{"model":"gpt\u002d4o"}"#)).unwrap();
        assert_eq!(escaped.model(), Some("gpt-4o"));
        // Which "model" would the upstream use? Refused rather than guessed.
        assert!(JsonBody::parse(Bytes::from_static(br#"{"model":"a","model":"b"}"#)).is_none());
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
