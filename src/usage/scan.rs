//! Finding a few top-level members of a JSON object without parsing the rest of it.
//!
//! A completion's `usage` sits beside `choices`, which hold the whole reply: serde_json, even
//! told to ignore them, checks them byte by byte (about 20 instructions a byte, most of the
//! cost of metering a JSON response). [`members`] walks the object's structure instead: strings
//! are skipped to their closing quote, nested objects and arrays by counting brackets outside
//! strings (both searched eight bytes at a time, long strings with `memchr`), and only the wanted
//! members' values are handed back, to be parsed properly. It does not validate what it skips; a malformed body yields `None` or spans that
//! then fail to parse, never a panic, in time linear in the body's length. Keys are compared as
//! written: a key spelled with escapes (`"\u0075sage"`) is not `usage` here.

/// The values of `json`'s top-level members named `wanted` (the last one where a key repeats),
/// as the byte spans they occupy; `None` when `json` is not one whole object.
pub fn members<'a, const N: usize>(
    json: &'a [u8],
    wanted: [&[u8]; N],
) -> Option<[Option<&'a [u8]>; N]> {
    let mut found = [None; N];
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(json, i + 1);
    if json.get(i) == Some(&b'}') {
        return trailing_ws_only(json, i + 1).then_some(found);
    }
    loop {
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(json, i)?;
        let key = &json[i + 1..key_end - 1];
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        let end = value_end(json, i)?;
        if let Some(slot) = wanted.iter().position(|w| *w == key) {
            found[slot] = Some(&json[i..end]);
        }
        i = skip_ws(json, end);
        match json.get(i)? {
            b',' => i = skip_ws(json, i + 1),
            b'}' => return trailing_ws_only(json, i + 1).then_some(found),
            _ => return None,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while json.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

fn trailing_ws_only(json: &[u8], i: usize) -> bool {
    skip_ws(json, i) == json.len()
}

/// Just past the closing quote of the string opening at `start`.
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        let at = quote_or_backslash(json, i)?;
        if json[at] == b'"' {
            return Some(at + 1);
        }
        // An escape: whatever follows the backslash is not a closing quote.
        i = at + 2;
    }
}

/// Just past the value starting at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        b'{' | b'[' => {
            // `start` is the first bracket found, so the depth is 1 before any closing one.
            let mut depth = 0usize;
            let mut i = start;
            loop {
                let at = structural(json, i)?;
                match json[at] {
                    b'"' => i = string_end(json, at)?,
                    b'{' | b'[' => {
                        depth += 1;
                        i = at + 1;
                    }
                    _ => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                        i = at + 1;
                    }
                }
            }
        }
        // A number, `true`, `false` or `null`.
        _ => {
            let len = json[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                .unwrap_or(json.len() - start);
            (len > 0).then_some(start + len)
        }
    }
}

// Searching eight bytes at a time. JSON is dense with quotes and brackets, and most strings in
// a completion are a few bytes long: a call to `memchr` per string (about 50 instructions to
// set up) cost as much as the rest of the scan. Words are read little-endian, so the lowest
// flagged byte of a word is the first in the text.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;
/// Bytes of a string scanned word by word before handing a long one to `memchr`.
const SHORT_STRING: usize = 32;

/// The eight bytes at `i`, if there are eight.
fn word(json: &[u8], i: usize) -> Option<u64> {
    let bytes: [u8; 8] = json.get(i..i.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The high bit of each byte of `w` equal to `b`. Exact at the lowest such byte; a byte above
/// it may be flagged falsely (a borrow), which the callers never look at.
fn equal_bytes(w: u64, b: u8) -> u64 {
    let x = w ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The index of the first flagged byte of a nonzero mask.
fn first(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// The first `"` or `\` at or after `i`.
fn quote_or_backslash(json: &[u8], mut i: usize) -> Option<usize> {
    let short_end = i.saturating_add(SHORT_STRING);
    while i < short_end {
        let Some(w) = word(json, i) else { break };
        let hits = equal_bytes(w, b'"') | equal_bytes(w, b'\\');
        if hits != 0 {
            return Some(i + first(hits));
        }
        i += 8;
    }
    Some(i + memchr::memchr2(b'"', b'\\', json.get(i..)?)?)
}

/// The first `"`, `{`, `[`, `}` or `]` at or after `i`.
fn structural(json: &[u8], mut i: usize) -> Option<usize> {
    let is_structural = |b: &u8| matches!(b, b'"' | b'{' | b'[' | b'}' | b']');
    while let Some(w) = word(json, i) {
        // With bit 5 set, `[` reads as `{` and `]` as `}`; only the control byte 0x02 also
        // reads as `"`, and it is checked for.
        let folded = w | (ONES * 0x20);
        let hits =
            equal_bytes(folded, b'"') | equal_bytes(folded, b'{') | equal_bytes(folded, b'}');
        if hits == 0 {
            i += 8;
            continue;
        }
        let at = i + first(hits);
        if is_structural(&json[at]) {
            return Some(at);
        }
        i = at + 1;
    }
    let rest = json.get(i..)?;
    Some(i + rest.iter().position(is_structural)?)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{members, quote_or_backslash, structural};

    fn usage_of(json: &str) -> Option<Option<Value>> {
        members(json.as_bytes(), [b"usage"])
            .map(|[u]| u.map(|span| serde_json::from_slice(span).expect("a whole value")))
    }

    #[test]
    fn finds_members_past_strings_with_quotes_brackets_and_escapes() {
        let body = r#" { "id" : "a\"}]{[\\" , "choices":[{"message":{"content":"usage\" : {}}","usage":1}}],
            "n": -1.5e3, "ok": true, "none": null, "usage" : {"prompt_tokens": 5} } "#;
        assert_eq!(usage_of(body), Some(Some(json!({"prompt_tokens": 5}))));
        let [id, none] = members(body.as_bytes(), [b"id", b"none"]).unwrap();
        assert_eq!(id, Some(&br#""a\"}]{[\\""#[..]));
        assert_eq!(none, Some(&b"null"[..]));
        assert_eq!(
            usage_of(r#"{"usage":{}, "usage":{"a":1}}"#),
            Some(Some(json!({"a": 1})))
        );
        assert_eq!(usage_of("{}"), Some(None));
        // Escapes at the end of strings of many lengths.
        for n in 12..20 {
            let pad = "x".repeat(n);
            let body = format!(r#"{{"a":"{pad}\"\\","usage":{{"n":{n}}}}}"#);
            assert_eq!(usage_of(&body), Some(Some(json!({"n": n}))), "{body}");
        }
        assert_eq!(
            usage_of(r#"{"\u0075sage":1}"#),
            Some(None),
            "keys compare as written"
        );
    }

    #[test]
    fn the_searches_find_a_byte_after_any_run_of_others() {
        // Every length across the first words and past the switch to memchr, from every start.
        for run in 0..80 {
            for start in 0..3 {
                for hit in [b'"', b'\\', b'{', b'[', b'}', b']'] {
                    let mut bytes = vec![b'a'; start + run];
                    bytes.push(hit);
                    bytes.extend_from_slice(b"aaaa\"");
                    let at = start + run;
                    let wanted_quote = matches!(hit, b'"' | b'\\');
                    let quote = quote_or_backslash(&bytes, start);
                    assert_eq!(quote, Some(if wanted_quote { at } else { bytes.len() - 1 }));
                    assert_eq!(
                        structural(&bytes, start),
                        Some(if hit == b'\\' { bytes.len() - 1 } else { at })
                    );
                }
            }
        }
    }

    #[test]
    fn anything_but_one_whole_object_is_none() {
        for body in [
            "",
            "[]",
            r#""usage""#,
            "{",
            r#"{"usage""#,
            r#"{"usage":"#,
            r#"{"usage":{"a":1}"#,
            r#"{"usage":"open}"#,
            r#"{"a":"\"#,
            r#"{"a":1 "usage":2}"#,
            r#"{"usage":1}x"#,
            r#"{"usage":}"#,
            "{1:2}",
        ] {
            assert_eq!(usage_of(body), None, "{body}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".*".prop_map(Value::String),
            r#"[\\"{}\[\]:,usage ]*"#.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(r#"[a-z"\\]{0,6}|usage"#, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// On any object serde_json writes, compact or pretty, the scan finds what serde_json
        /// reads back.
        #[test]
        fn agrees_with_serde_json(
            fields in prop::collection::btree_map(r#"[a-z"\\]{0,6}|usage|message"#, json_value(), 0..6),
            pretty in any::<bool>(),
        ) {
            let object = Value::Object(fields.into_iter().collect());
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            let [usage, message] = members(text.as_bytes(), [b"usage", b"message"]).expect("an object");
            for (span, key) in [(usage, "usage"), (message, "message")] {
                let read = span.map(|s| serde_json::from_slice::<Value>(s).expect("a whole value"));
                prop_assert_eq!(read.as_ref(), object.get(key));
            }
        }

        /// The word-at-a-time searches find what a byte-by-byte search finds, from anywhere:
        /// among the bytes they look for, bytes one bit away from them (0x02 folds to a quote),
        /// and runs of other bytes long enough to cross words and the switch to `memchr`.
        #[test]
        fn searches_agree_with_a_byte_loop(
            pieces in prop::collection::vec(
                prop_oneof![
                    prop_oneof![Just(b'"'), Just(b'\\'), Just(b'{'), Just(b'['), Just(b'}'),
                        Just(b']'), Just(0x02u8), Just(b'#'), Just(b'|'), Just(b'~'), Just(b'Z'),
                        Just(b'\x1d'), any::<u8>()].prop_map(|b| vec![b]),
                    (0usize..48).prop_map(|n| vec![b'a'; n]),
                ],
                0..12,
            ),
            from in 0usize..120,
        ) {
            let bytes = pieces.concat();
            let naive = |hit: fn(u8) -> bool| {
                bytes.get(from..).and_then(|rest| rest.iter().position(|&b| hit(b))).map(|p| from + p)
            };
            prop_assert_eq!(
                quote_or_backslash(&bytes, from),
                naive(|b| b == b'"' || b == b'\\')
            );
            prop_assert_eq!(
                structural(&bytes, from),
                naive(|b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']'))
            );
        }

        /// Any bytes at all: an answer or `None`, never a panic.
        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = members(&bytes, [b"usage"]);
            let _ = members(&[&b"{\"usage\":"[..], &bytes].concat(), [b"usage"]);
        }
    }
}
