//! `keygate::keys::parse` against an independent reading of SPEC §1.
//!
//! A key is `{prefix}{22 base62}{6 base62 CRC32 of prefix+body}`, its prefix matching
//! `^[A-Za-z][A-Za-z0-9_-]{0,15}$`. The harness re-implements that format from the spec (with
//! `crc32fast` and its own base62) and checks that `parse` accepts exactly what it accepts, with
//! the same reason for each refusal, and never panics.
//!
//! Input: one mode byte, then the candidate. A random string almost never carries a valid
//! checksum, so with the mode byte's low bit set the harness appends the right checksum to the
//! candidate first: that reaches the `Ok` path for every prefix and body the fuzzer invents.

#![no_main]

use keygate::keys::{self, BODY_LEN, CHECKSUM_LEN, MAX_KEY_LEN, ParseError};
use libfuzzer_sys::fuzz_target;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn checksum(signed: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(signed);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

fn spec_prefix(p: &[u8]) -> bool {
    (1..=16).contains(&p.len())
        && p[0].is_ascii_alphabetic()
        && p[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// SPEC §1, checked in the order the parser documents: length, charset, prefix, charset of
/// body and checksum, checksum. `Ok` carries the prefix length.
fn spec_parse(s: &str) -> Result<usize, ParseError> {
    let b = s.as_bytes();
    if !(1 + BODY_LEN + CHECKSUM_LEN..=MAX_KEY_LEN).contains(&b.len()) {
        return Err(ParseError::Length);
    }
    if !b.is_ascii() {
        return Err(ParseError::Charset);
    }
    let prefix_len = b.len() - BODY_LEN - CHECKSUM_LEN;
    if !spec_prefix(&b[..prefix_len]) {
        return Err(ParseError::Prefix);
    }
    if !b[prefix_len..].iter().all(u8::is_ascii_alphanumeric) {
        return Err(ParseError::Charset);
    }
    let (signed, sum) = b.split_at(b.len() - CHECKSUM_LEN);
    if sum != checksum(signed) {
        return Err(ParseError::Checksum);
    }
    Ok(prefix_len)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut candidate = String::from_utf8_lossy(rest).into_owned();
    if mode & 1 == 1 {
        let sum = checksum(candidate.as_bytes());
        candidate.extend(sum.iter().map(|&b| b as char));
    }
    let got = keys::parse(&candidate);
    let want = spec_parse(&candidate);
    assert_eq!(
        got.map(|p| p.prefix().len()),
        want,
        "parse and SPEC §1 disagree on {candidate:?}"
    );
    if let Ok(parsed) = got {
        let prefix = parsed.prefix();
        assert!(candidate.starts_with(prefix));
        assert!(keys::valid_prefix(prefix), "{prefix:?}");
        assert_eq!(parsed.hash(), keys::hash(&candidate));
    }
});
