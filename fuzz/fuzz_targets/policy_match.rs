//! The matchers of a key's policy: `OriginPattern::parse`/`matches`, `host_of` and
//! `glob_match` (`keygate::policy`).
//!
//! Input: `A \0 B` (lossy UTF-8). A is a pattern (an origin pattern as an operator types it,
//! and a model glob), B an `Origin` header value and a model name.
//!
//! Checked: nothing panics; `glob_match` agrees with a plain dynamic-programming reading of its
//! documentation (`*` any run of characters, `?` any one character), so `glob_match(x, x)` holds
//! for wildcard-free `x`; `host_of` gives a non-empty lowercase host without path, query,
//! fragment or user info, and is stable on its own output; an origin pattern survives the
//! round trip the admin API and the keyring make (stored as its `Display`, parsed again at
//! startup) and matches the hosts it names.

#![no_main]

use keygate::policy::{OriginPattern, glob_match, host_of};
use libfuzzer_sys::fuzz_target;

/// The glob documentation, by dynamic programming over characters.
fn glob_spec(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: whether p[..i] matches t[..j]
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        next[0] = pc == '*' && row[0];
        for j in 1..=t.len() {
            next[j] = match pc {
                '*' => row[j] || next[j - 1],
                '?' => row[j - 1],
                c => row[j - 1] && t[j - 1] == c,
            };
        }
        row = next;
    }
    row[t.len()]
}

fn check_host(value: &str) {
    let Some(host) = host_of(value) else { return };
    assert!(!host.is_empty());
    assert!(!host.bytes().any(|b| b.is_ascii_uppercase()), "{host:?}");
    assert!(!host.contains(['/', '?', '#', '@']), "{value:?} → {host:?}");
    if !value.contains('[') {
        assert!(!host.contains(':'), "{value:?} → {host:?}");
        assert_eq!(host_of(&host).as_deref(), Some(host.as_str()), "{value:?}");
    }
}

fn check_origin(input: &str, host: &str) {
    let Ok(pattern) = OriginPattern::parse(input) else {
        return;
    };
    let stored = pattern.to_string();
    assert!(
        OriginPattern::parse(&stored).as_ref() == Ok(&pattern),
        "{input:?} is stored as {stored:?}, which does not load back"
    );
    match &pattern {
        OriginPattern::Any => assert!(pattern.matches(host)),
        OriginPattern::Exact(h) => {
            assert!(pattern.matches(h) && pattern.matches(&h.to_ascii_uppercase()));
            assert_eq!(pattern.matches(host), h.eq_ignore_ascii_case(host));
        }
        OriginPattern::Subdomains(suffix) => {
            assert!(suffix.starts_with('.'));
            assert!(pattern.matches(&format!("app{suffix}")));
            assert!(
                !pattern.matches(&suffix[1..]),
                "the bare domain is not a subdomain"
            );
            if pattern.matches(host) {
                assert!(
                    host.to_ascii_lowercase()
                        .ends_with(&suffix.to_ascii_lowercase())
                );
            }
        }
    }
    // As the proxy uses it: the request's Origin reduced to its host.
    let _ = pattern.matches(&host_of(host).unwrap_or_default());
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\0').unwrap_or((&text, ""));

    assert_eq!(glob_match(a, b), glob_spec(a, b), "glob {a:?} on {b:?}");
    if !a.contains(['*', '?']) {
        assert!(glob_match(a, a), "{a:?} does not match itself");
    }
    check_host(a);
    check_host(b);
    check_origin(a, b);
});
