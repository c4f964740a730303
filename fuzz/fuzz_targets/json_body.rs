//! `keygate::proxy::inspect::JsonBody`: a request body read for its `model`, `max_tokens` and
//! `stream`, and changed only when keygate must (a preset, or asking a stream for usage).
//!
//! Input: a flag byte (bit 0: Anthropic messages rather than OpenAI chat; bit 1: apply a preset;
//! bit 2: request stream usage; bit 3: do that before the preset), then
//! `MODEL \0 SYSTEM_PROMPT \0 BODY` for the preset and the body (NUL never appears in JSON
//! text). Without two NULs the whole rest is the body and the preset is `gpt-4o` with a prompt.
//!
//! Checked: never panics; a body is accepted exactly when it is one JSON object that names none
//! of the fields keygate reads twice (which one would the upstream use?); the accessors
//! read the top-level fields; an unchanged body goes upstream byte for byte; a changed body is
//! one JSON object carrying the change (the preset's model, no `assistant_id`, the prompt first,
//! `include_usage`) and every other field as the client sent it.

#![no_main]

use bytes::Bytes;
use keygate::config::Preset;
use keygate::proxy::inspect::JsonBody;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// JSON equality, exact: members keygate does not change reach the upstream byte for byte.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// The fields keygate reads; a body naming one of them twice is refused.
const READ: [&str; 7] = [
    "model",
    "assistant_id",
    "stream",
    "stream_options",
    "max_completion_tokens",
    "max_tokens",
    "max_output_tokens",
];

/// Whether the body is an object naming one of [`READ`] twice at its top level.
fn reads_a_field_twice(body: &[u8]) -> bool {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut m: A,
                ) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(Visit)
        }
    }
    let Ok(Keys(keys)) = serde_json::from_slice::<Keys>(body) else {
        return false;
    };
    READ.iter()
        .any(|field| keys.iter().filter(|k| k == field).count() > 1)
}

fn same_opt(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts: Vec<&[u8]> = rest.splitn(3, |&b| b == 0).collect();
    let (model, prompt, body) = match parts.as_slice() {
        [m, p, b] => (
            String::from_utf8_lossy(m).into_owned(),
            String::from_utf8_lossy(p).into_owned(),
            *b,
        ),
        _ => ("gpt-4o".to_owned(), "Be brief.".to_owned(), rest),
    };
    let anthropic = flags & 1 != 0;
    let preset = (flags & 2 != 0).then(|| Preset {
        id: "fuzz".into(),
        upstream: "up".into(),
        model: model.clone(),
        system_prompt: prompt.clone(),
    });
    let ask_usage = flags & 4 != 0;
    let usage_first = flags & 8 != 0;

    let original = Bytes::copy_from_slice(body);
    let reference = serde_json::from_slice::<Value>(body).ok();
    let Some(mut parsed) = JsonBody::parse(original.clone()) else {
        assert!(
            !matches!(reference, Some(Value::Object(_))) || reads_a_field_twice(body),
            "an object was refused"
        );
        return;
    };
    let Some(Value::Object(sent)) = reference else {
        // serde_json's `Value` refuses lone surrogate escapes (`"\udd80"`, `"\ud83e\\"`) and
        // numbers beyond f64 (`51e308`), which the JSON grammar allows; keygate forwards such a
        // body as sent.
        let why = serde_json::from_slice::<Value>(body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            [
                "surrogate",
                "hex escape",
                "unicode code point",
                "number out of range"
            ]
            .iter()
            .any(|allowed| why.contains(allowed)),
            "a body that is not one JSON object was accepted: {why}"
        );
        assert_eq!(parsed.into_bytes(), original);
        return;
    };
    assert_eq!(parsed.len(), body.len());
    assert_eq!(parsed.model(), sent.get("model").and_then(Value::as_str));
    assert_eq!(
        parsed.assistant_id(),
        sent.get("assistant_id").and_then(Value::as_str)
    );
    assert_eq!(
        parsed.is_stream(),
        sent.get("stream") == Some(&Value::Bool(true))
    );
    let _ = parsed.max_tokens();

    let mut added_usage = false;
    if ask_usage && usage_first {
        added_usage = parsed.request_stream_usage();
    }
    if let Some(preset) = &preset {
        assert!(
            parsed.apply_preset(preset, anthropic),
            "a JSON object could not be rewritten"
        );
    }
    if ask_usage && !usage_first {
        added_usage = parsed.request_stream_usage();
    }
    let out = parsed.into_bytes();

    if preset.is_none() && !added_usage {
        assert_eq!(out, original, "an unchanged body was rewritten");
        return;
    }
    let Ok(Value::Object(got)) = serde_json::from_slice::<Value>(&out) else {
        panic!(
            "a changed body is not a JSON object: {:?}",
            String::from_utf8_lossy(&out)
        );
    };
    // Only the fields a change is about may differ; every other comes back as it was sent.
    let mut touched = Vec::new();
    if added_usage {
        touched.push("stream_options");
    }
    if preset.is_some() {
        touched.extend(["model", "assistant_id", "system", "messages"]);
    }
    for (k, v) in &sent {
        if !touched.contains(&k.as_str()) {
            assert!(
                got.get(k).is_some_and(|g| same(g, v)),
                "field {k:?} changed: {v} became {:?}",
                got.get(k)
            );
        }
    }
    assert!(
        got.keys()
            .all(|k| sent.contains_key(k) || touched.contains(&k.as_str())),
        "a field appeared"
    );
    if added_usage {
        assert_eq!(got["stream_options"]["include_usage"], Value::Bool(true));
    }
    let Some(preset) = preset else { return };
    assert_eq!(got.get("model"), Some(&Value::String(preset.model.clone())));
    assert!(!got.contains_key("assistant_id"));
    if prompt.is_empty() {
        for k in ["system", "messages"] {
            assert!(
                same_opt(got.get(k), sent.get(k)),
                "{k} changed without a prompt"
            );
        }
    } else if anthropic {
        let text_block = json!({"type": "text", "text": prompt});
        match &got["system"] {
            Value::String(s) => assert!(s.starts_with(&prompt), "{s:?}"),
            Value::Array(blocks) => assert_eq!(blocks.first(), Some(&text_block)),
            other => panic!("system became {other}"),
        }
        assert!(same_opt(got.get("messages"), sent.get("messages")));
    } else {
        let first = json!({"role": "system", "content": prompt});
        assert_eq!(got["messages"].get(0), Some(&first));
        assert!(same_opt(got.get("system"), sent.get("system")));
    }
});
