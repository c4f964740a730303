//! The API key format of SPEC §1: generation, parsing, hashing and display forms.
//!
//! A key is `{prefix}{body}{checksum}`: `body` is [`BODY_LEN`] base62 characters drawn uniformly
//! from the OS CSPRNG (≈131 bits), `checksum` is the CRC32 of `prefix+body` as [`CHECKSUM_LEN`]
//! base62 characters. [`parse`] verifies the checksum before anything looks the key up, so typos
//! and made-up keys cost no map lookup. Only [`KeyHash`] (blake3 of the whole key) is stored.
//! Key ids (`key_` + 16 base62) begin with the creation time, so they sort by age.

use std::fmt;

use crate::config::Secret;

/// Base62 digits in ASCII order, so base62 strings of equal length sort like their values.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// 22 base62 characters carry 22·log2(62) ≈ 131 bits, the least above SPEC's 128.
pub const BODY_LEN: usize = 22;

/// 62^6 ≈ 5.7e10 > 2^32, so every CRC32 fits in 6 base62 characters.
pub const CHECKSUM_LEN: usize = 6;

/// Characters of the body shown in `key_prefix` (SPEC §1).
pub const DISPLAY_LEN: usize = 12;

/// Longest prefix SPEC §1 allows (`^[A-Za-z][A-Za-z0-9_-]{0,15}$`).
pub const MAX_PREFIX_LEN: usize = 16;

/// Longest string [`parse`] looks at; anything longer is not a key.
pub const MAX_KEY_LEN: usize = MAX_PREFIX_LEN + BODY_LEN + CHECKSUM_LEN;

/// Why a presented string is not a well-formed key. All of these answer `invalid_api_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("key has the wrong length")]
    Length,
    #[error("key has a character outside its alphabet")]
    Charset,
    #[error("key prefix is malformed")]
    Prefix,
    #[error("key checksum does not match")]
    Checksum,
}

/// A newly generated key: the secret (shown once) and what is stored about it.
pub struct NewKey {
    pub secret: Secret,
    pub hash: KeyHash,
    /// The display form, e.g. `sk-kg-4fT9aQ2mXbLc`.
    pub display: String,
}

/// The blake3 hash of a whole key: the only form in which keys are stored.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

/// blake3 output is uniformly random, so its first 8 bytes are already a perfect hash: maps of
/// key hashes can skip SipHash (see `keyring`).
impl std::hash::Hash for KeyHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not a secret, but a short form keeps logs readable.
        write!(
            f,
            "KeyHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A key that passed [`parse`]: right shape, right checksum. Not yet known to exist.
#[derive(Clone, Copy)]
pub struct ParsedKey<'a> {
    whole: &'a str,
    prefix_len: usize,
}

impl<'a> ParsedKey<'a> {
    pub fn hash(&self) -> KeyHash {
        hash(self.whole)
    }

    pub fn prefix(&self) -> &'a str {
        &self.whole[..self.prefix_len]
    }
}

/// Checks a presented key's shape and checksum. Accepts any well-formed prefix, not only the
/// configured one, so keys issued before a prefix change keep working.
pub fn parse(key: &str) -> Result<ParsedKey<'_>, ParseError> {
    let bytes = key.as_bytes();
    if bytes.len() > MAX_KEY_LEN || bytes.len() < 1 + BODY_LEN + CHECKSUM_LEN {
        return Err(ParseError::Length);
    }
    // Every valid key is ASCII; checking first also makes the slicing below char-safe.
    if !bytes.is_ascii() {
        return Err(ParseError::Charset);
    }
    let prefix_len = bytes.len() - BODY_LEN - CHECKSUM_LEN;
    let (signed, checksum) = bytes.split_at(prefix_len + BODY_LEN);
    if !valid_prefix(&key[..prefix_len]) {
        return Err(ParseError::Prefix);
    }
    if !signed[prefix_len..]
        .iter()
        .chain(checksum)
        .all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ParseError::Charset);
    }
    if checksum != encode_checksum(crc32fast::hash(signed)) {
        return Err(ParseError::Checksum);
    }
    Ok(ParsedKey {
        whole: key,
        prefix_len,
    })
}

/// Whether `prefix` matches `^[A-Za-z][A-Za-z0-9_-]{0,15}$` (SPEC §1).
pub fn valid_prefix(prefix: &str) -> bool {
    let b = prefix.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_PREFIX_LEN
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// The regex secret scanners can use for keys with `prefix` (published in the README).
pub fn scanner_regex(prefix: &str) -> String {
    let escaped: String = prefix
        .chars()
        .flat_map(|c| (c == '-').then_some('\\').into_iter().chain([c]))
        .collect();
    format!("{escaped}[0-9A-Za-z]{{{}}}", BODY_LEN + CHECKSUM_LEN)
}

/// Generates a new key with `prefix` from the OS CSPRNG.
pub fn generate(prefix: &str) -> Result<NewKey, getrandom::Error> {
    debug_assert!(valid_prefix(prefix), "the config validates keys.prefix");
    let mut key = String::with_capacity(prefix.len() + BODY_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    key.push_str(&random_base62(BODY_LEN)?);
    let checksum = encode_checksum(crc32fast::hash(key.as_bytes()));
    key.extend(checksum.iter().map(|&b| b as char));
    let display = key[..prefix.len() + DISPLAY_LEN].to_owned();
    Ok(NewKey {
        hash: hash(&key),
        secret: Secret::new(key),
        display,
    })
}

/// The blake3 hash under which a key is stored and looked up.
pub fn hash(key: &str) -> KeyHash {
    KeyHash(*blake3::hash(key.as_bytes()).as_bytes())
}

/// A new key id: `key_` + 8 base62 characters of the creation time in milliseconds + 8 random
/// ones (≈47 bits), so ids are unique and sort by creation.
pub fn new_id(created_ms: i64) -> Result<String, getrandom::Error> {
    let mut id = String::with_capacity(20);
    id.push_str("key_");
    // 62^8 ms is about 6,900 years: no timestamp of this era overflows 8 digits.
    id.extend(
        encode_fixed::<8>(created_ms.max(0) as u64)
            .iter()
            .map(|&b| b as char),
    );
    id.push_str(&random_base62(8)?);
    Ok(id)
}

/// The lowest id a key created at `ms` can have: the ids of keys created before sort below it,
/// those of keys created at or after it do not.
pub fn first_id_at(ms: i64) -> String {
    let mut id = String::with_capacity(12);
    id.push_str("key_");
    id.extend(
        encode_fixed::<8>(ms.max(0) as u64)
            .iter()
            .map(|&b| b as char),
    );
    id
}

/// The creation time written in a key id; `None` for an id of another shape.
pub fn id_created_ms(id: &str) -> Option<i64> {
    let digits = id.strip_prefix("key_")?.as_bytes().get(..8)?;
    digits.iter().try_fold(0i64, |ms, &b| {
        let digit = ALPHABET.iter().position(|&a| a == b)?;
        ms.checked_mul(62)?.checked_add(digit as i64)
    })
}

/// Whether `id` has the shape of a key id (used to answer 404 early on nonsense).
pub fn valid_id(id: &str) -> bool {
    id.len() == 20
        && id.starts_with("key_")
        && id.as_bytes()[4..].iter().all(|b| b.is_ascii_alphanumeric())
}

/// `n` uniformly random base62 characters. Bytes ≥ 248 (= 4·62) are rejected so that
/// `byte % 62` has no bias.
fn random_base62(n: usize) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() == n {
                break;
            }
            out.push(ALPHABET[usize::from(b % 62)] as char);
        }
    }
    Ok(out)
}

fn encode_checksum(crc: u32) -> [u8; CHECKSUM_LEN] {
    encode_fixed(u64::from(crc))
}

/// `value` as exactly `W` base62 digits, most significant first (zero-padded). On the stack:
/// every authentication makes a checksum.
fn encode_fixed<const W: usize>(mut value: u64) -> [u8; W] {
    let mut out = [ALPHABET[0]; W];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fresh(prefix: &str) -> String {
        generate(prefix).unwrap().secret.expose().to_owned()
    }

    #[test]
    fn a_generated_key_has_the_documented_shape() {
        let key = fresh("sk-kg-");
        assert_eq!(key.len(), 6 + BODY_LEN + CHECKSUM_LEN);
        assert!(key.starts_with("sk-kg-"));
        assert!(key[6..].bytes().all(|b| b.is_ascii_alphanumeric()));
        let parsed = parse(&key).unwrap();
        assert_eq!(parsed.prefix(), "sk-kg-");
        assert_eq!(parsed.hash(), hash(&key));
    }

    #[test]
    fn the_display_form_is_the_prefix_and_twelve_body_characters() {
        let new = generate("sk-kg-").unwrap();
        assert_eq!(new.display.len(), 6 + DISPLAY_LEN);
        assert!(new.secret.expose().starts_with(&new.display));
    }

    #[test]
    fn keys_are_not_repeated() {
        let keys: std::collections::HashSet<String> = (0..1000).map(|_| fresh("sk-")).collect();
        assert_eq!(keys.len(), 1000);
    }

    #[test]
    fn malformed_keys_are_rejected_with_their_reason() {
        let key = fresh("sk-kg-");
        assert_eq!(parse("").err(), Some(ParseError::Length));
        assert_eq!(
            parse(&format!("9{}", &key[1..])).err(),
            Some(ParseError::Prefix)
        );
        assert_eq!(
            parse(&format!("é{}", &key[2..])).err(),
            Some(ParseError::Charset)
        );
        assert_eq!(
            parse(&format!("{key}{key}")).err(),
            Some(ParseError::Length)
        );
        let body_at = key.len() - CHECKSUM_LEN - 1;
        let mut bad = key.clone();
        bad.replace_range(body_at..body_at + 1, "!");
        assert_eq!(parse(&bad).err(), Some(ParseError::Charset));
        let mut typo = key.clone();
        let c = if &key[body_at..=body_at] == "a" {
            "b"
        } else {
            "a"
        };
        typo.replace_range(body_at..body_at + 1, c);
        assert_eq!(parse(&typo).err(), Some(ParseError::Checksum));
        assert_eq!(
            parse("1x-abcdefghijklmnopqrstuvabcdef").err(),
            Some(ParseError::Prefix)
        );
    }

    #[test]
    fn a_key_with_another_valid_prefix_still_parses() {
        let key = fresh("acme_");
        assert_eq!(parse(&key).unwrap().prefix(), "acme_");
    }

    #[test]
    fn prefixes_follow_the_spec_pattern() {
        for ok in ["sk-kg-", "a", "A_b-9", "abcdefghijklmnop"] {
            assert!(valid_prefix(ok), "{ok}");
        }
        for bad in ["", "1ab", "-a", "abcdefghijklmnopq", "sk kg", "sk.kg", "ké"] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn the_scanner_regex_names_prefix_and_length() {
        assert_eq!(scanner_regex("sk-kg-"), "sk\\-kg\\-[0-9A-Za-z]{28}");
    }

    #[test]
    fn ids_sort_by_creation_time_and_have_their_shape() {
        let a = new_id(1_700_000_000_000).unwrap();
        let b = new_id(1_700_000_000_001).unwrap();
        let c = new_id(1_800_000_000_000).unwrap();
        assert!(a < b && b < c, "{a} {b} {c}");
        for id in [&a, &b, &c] {
            assert!(valid_id(id), "{id}");
        }
        assert!(!valid_id("key_short"));
        assert!(!valid_id("kez_0000000000000000"));
    }

    #[test]
    fn an_ids_creation_time_reads_back_and_bounds_the_ids_of_that_time() {
        for ms in [0, 1, 1_700_000_000_000, 1_800_000_000_123] {
            let id = new_id(ms).unwrap();
            assert_eq!(id_created_ms(&id), Some(ms), "{id}");
            let bound = first_id_at(ms);
            assert!(bound.as_str() <= id.as_str(), "{bound} {id}");
            assert!(new_id(ms - 1).unwrap() < bound || ms == 0, "{bound}");
            assert!(first_id_at(ms + 1) > id, "{id}");
        }
        assert_eq!(id_created_ms("acct_0000000000000000"), None);
        assert_eq!(id_created_ms("key_000-"), None);
    }

    #[test]
    fn fixed_width_encoding_is_order_preserving() {
        assert_eq!(&encode_fixed::<3>(0), b"000");
        assert_eq!(&encode_fixed::<2>(61), b"0z");
        assert_eq!(&encode_fixed::<2>(62), b"10");
        assert_eq!(encode_fixed::<6>(u64::from(u32::MAX)).len(), 6);
    }

    proptest! {
        #[test]
        fn every_generated_key_parses(prefix in "[A-Za-z][A-Za-z0-9_-]{0,15}") {
            let key = fresh(&prefix);
            let parsed = parse(&key).unwrap();
            prop_assert_eq!(parsed.prefix(), prefix.as_str());
        }

        #[test]
        fn changing_any_single_character_is_rejected(
            prefix in "[A-Za-z][A-Za-z0-9_-]{0,15}",
            position in any::<prop::sample::Index>(),
            replacement in prop::sample::select(ALPHABET.iter().chain(b"_-").copied().collect::<Vec<u8>>()),
        ) {
            let key = fresh(&prefix);
            let at = position.index(key.len());
            prop_assume!(key.as_bytes()[at] != replacement);
            let mut bytes = key.into_bytes();
            bytes[at] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(parse(&changed).is_err(), "{} was accepted", changed);
        }

        /// Regression: a multi-byte character where the prefix ends used to panic the parser.
        #[test]
        fn arbitrary_strings_never_panic_the_parser(s in ".{0,64}") {
            if let Ok(parsed) = parse(&s) {
                prop_assert!(s.starts_with(parsed.prefix()));
            }
        }
    }
}
