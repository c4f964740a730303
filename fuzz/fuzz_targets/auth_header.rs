//! `keygate::proxy::decide::credential`: the key a request presents, from `Authorization:
//! Bearer` and/or `x-api-key`.
//!
//! Input: a flag byte, then up to three header values separated by `\n` (a byte no header value
//! can hold): the `authorization` value, the `x-api-key` value, and a second `authorization`
//! value. Flag bits 0, 1 and 2 say which of them the request carries. Values are raw bytes
//! (`HeaderValue::from_bytes`), so non-UTF-8 and obs-text reach the parser; a value that http
//! refuses could not arrive in a request, so that input is skipped.
//!
//! Checked against the rule as written (SPEC §2): the first `Authorization` must use the
//! Bearer scheme (case-insensitive) and its token, trimmed, is the key; `x-api-key`, trimmed, is
//! the key; both present must agree; neither present is `missing_api_key`, every other refusal
//! `invalid_api_key`. A credential that is returned is a substring of what the client sent.

#![no_main]

use http::{HeaderMap, HeaderValue, header};
use keygate::proxy::decide::credential;
use keygate::proxy::error::Code;
use libfuzzer_sys::fuzz_target;

/// `HeaderValue::to_str`'s notion of text: visible ASCII, space and tab.
fn text(v: &[u8]) -> Option<&str> {
    v.iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(v).expect("ASCII"))
}

fn spec(auth: Option<&[u8]>, api_key: Option<&[u8]>) -> Result<String, Code> {
    let bearer = match auth {
        None => None,
        Some(v) => {
            let v = text(v).ok_or(Code::InvalidApiKey)?;
            let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(Code::InvalidApiKey);
            }
            Some(token.trim_matches([' ', '\t']))
        }
    };
    let api_key = match api_key {
        None => None,
        Some(v) => Some(
            text(v)
                .ok_or(Code::InvalidApiKey)?
                .trim_matches([' ', '\t']),
        ),
    };
    match (bearer, api_key) {
        (None, None) => Err(Code::MissingApiKey),
        (Some(a), Some(b)) if a != b => Err(Code::InvalidApiKey),
        (Some(k), _) | (None, Some(k)) => Ok(k.to_owned()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == b'\n');
    let (auth, api_key, auth2) = (parts.next(), parts.next(), parts.next());
    let auth = auth.filter(|_| flags & 1 != 0);
    let api_key = api_key.filter(|_| flags & 2 != 0);
    let auth2 = auth2.filter(|_| flags & 4 != 0);

    let mut headers = HeaderMap::new();
    for (name, value) in [
        (header::AUTHORIZATION.as_str(), auth),
        ("x-api-key", api_key),
        (header::AUTHORIZATION.as_str(), auth2),
    ] {
        let Some(value) = value else { continue };
        let Ok(value) = HeaderValue::from_bytes(value) else {
            return;
        };
        headers.append(name, value);
    }
    // Only the first Authorization counts: a second one (auth2 without auth) is the first.
    let first_auth = auth.or(auth2);

    let got = credential(&headers);
    let want = spec(first_auth, api_key);
    match (&got, &want) {
        (Ok(k), Ok(w)) => {
            assert_eq!(k, w);
            let holds = |v: &[u8]| k.is_empty() || v.windows(k.len()).any(|w| w == k.as_bytes());
            assert!(
                first_auth.is_some_and(holds) || api_key.is_some_and(holds),
                "{k:?} was not sent"
            );
            assert_eq!(k.trim_matches([' ', '\t']), *k, "untrimmed credential");
            // The pipeline goes on to parse what it got: that must not panic either.
            let _ = keygate::keys::parse(k);
        }
        (Err(denied), Err(code)) => assert_eq!(denied.code, *code, "{}", denied.reason),
        _ => panic!("credential gave {got:?}, the rule says {want:?}"),
    }
});
