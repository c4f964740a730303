//! The pieces of a key's policy that are matched against requests: origin patterns, model globs,
//! IP networks, limits and quotas.
//!
//! Admin input is parsed into these types once, when a key is created or changed, so the data
//! plane only compares. The same functions decide for the proxy and for `explain`.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::{Rate, TokenRate};
use crate::store::{LimitsRecord, QuotaRecord, RateRecord};

/// A host an `Origin` may have: `app.example.com`, `*.example.com` (subdomains only), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    Exact(String),
    /// Stored with its leading dot: `.example.com`.
    Subdomains(String),
}

impl OriginPattern {
    /// Parses an operator's pattern. A full origin (`https://app.example.com:8443`) is accepted
    /// and reduced to its host, since that is what operators paste.
    pub fn parse(input: &str) -> Result<OriginPattern, String> {
        let input = input.trim();
        // A bare IPv6 address (as stored before patterns kept their brackets) is its own host.
        let host = match input.parse::<std::net::Ipv6Addr>() {
            Ok(_) => input.to_owned(),
            Err(_) => host_of(input).ok_or_else(|| format!("{input:?} is not a host name"))?,
        };
        if host.contains(':') {
            // Only an IPv6 address has a colon in its host: one spelling per address (`0:0::1`
            // is `::1`), as browsers send it in `Origin`; no wildcards.
            return match host.parse::<std::net::Ipv6Addr>() {
                Ok(v6) => Ok(OriginPattern::Exact(v6.to_string())),
                Err(_) => Err(format!("{input:?} is not a host name or IPv6 address")),
            };
        }
        if host == "*" {
            return Ok(OriginPattern::Any);
        }
        if let Some(rest) = host.strip_prefix("*.") {
            if valid_host(rest) {
                return Ok(OriginPattern::Subdomains(format!(".{rest}")));
            }
        } else if valid_host(&host) {
            return Ok(OriginPattern::Exact(host));
        }
        Err(format!(
            "{input:?} is not a host pattern (use app.example.com, *.example.com or *)"
        ))
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(h) => h.eq_ignore_ascii_case(host),
            OriginPattern::Subdomains(suffix) => {
                host.len() > suffix.len()
                    && host.as_bytes()[host.len() - suffix.len()..]
                        .eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginPattern::Any => f.write_str("*"),
            // An IPv6 host keeps its brackets, so that what is displayed (and stored) parses
            // back to the same pattern.
            OriginPattern::Exact(h) if h.contains(':') => write!(f, "[{h}]"),
            OriginPattern::Exact(h) => f.write_str(h),
            OriginPattern::Subdomains(s) => write!(f, "*{s}"),
        }
    }
}

/// The lowercase host of an `Origin`/`Referer` value or of a bare host, without port.
pub fn host_of(value: &str) -> Option<String> {
    let rest = match value.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() => rest,
        Some(_) => return None,
        None => value,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split_once(']').map(|(h, _)| h)?
    } else {
        authority.split(':').next().unwrap_or("")
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters (also empty) and
/// `?` any one character; a `*` in the pattern is always a wildcard. At most pattern × text
/// steps (both are short): no exponential backtracking on hostile patterns or input.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    // Model names are short: matching on chars (so `?` is one character, not one byte) costs
    // two small vectors only when the text is not ASCII.
    if pattern.is_ascii() && text.is_ascii() {
        return glob_units(pattern.as_bytes(), text.as_bytes(), b'*', b'?');
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_units(&p, &t, '*', '?')
}

/// The glob matcher over any units: `star` matches any run, `one` any single unit. A `star` in
/// the pattern is always a wildcard, even facing the same character in the text.
fn glob_units<T: PartialEq + Copy>(p: &[T], t: &[T], star_unit: T, one: T) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == star_unit {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && (p[pi] == one || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == star_unit)
}

/// Checks a model glob given by an operator.
pub fn parse_glob(input: &str) -> Result<String, String> {
    if input.is_empty() || input.len() > 255 || input.chars().any(char::is_control) {
        return Err(format!("{input:?} is not a model pattern"));
    }
    Ok(input.to_owned())
}

/// Parses a CIDR; a bare address means that one host.
pub fn parse_net(input: &str) -> Result<IpNet, String> {
    let input = input.trim();
    input
        .parse::<IpNet>()
        .or_else(|_| input.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{input:?} is not an IP address or CIDR"))
}

/// The period a quota counts over; all boundaries are UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaPeriod {
    Day,
    Month,
    Total,
}

impl QuotaPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
            QuotaPeriod::Total => "total",
        }
    }

    fn code(self) -> u8 {
        match self {
            QuotaPeriod::Day => 0,
            QuotaPeriod::Month => 1,
            QuotaPeriod::Total => 2,
        }
    }

    fn from_code(code: u8) -> QuotaPeriod {
        match code {
            0 => QuotaPeriod::Day,
            1 => QuotaPeriod::Month,
            _ => QuotaPeriod::Total,
        }
    }
}

/// Requests and/or tokens allowed per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    pub period: QuotaPeriod,
}

/// The limits one key or account sets for itself; `None` means "not set here".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub rate_limit: Option<Rate>,
    pub token_limit: Option<TokenRate>,
    pub quota: Option<Quota>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rate_limit.is_none() && self.token_limit.is_none() && self.quota.is_none()
    }

    pub fn to_record(self) -> LimitsRecord {
        let rate = |amount: u64, interval: Duration| RateRecord {
            amount,
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        };
        LimitsRecord {
            rate_limit: self.rate_limit.map(|r| rate(r.requests, r.interval)),
            token_limit: self.token_limit.map(|r| rate(r.tokens, r.interval)),
            quota: self.quota.map(|q| QuotaRecord {
                requests: q.requests,
                tokens: q.tokens,
                period: q.period.code(),
            }),
        }
    }

    pub fn from_record(record: &LimitsRecord) -> Limits {
        Limits {
            rate_limit: record.rate_limit.map(|r| Rate {
                requests: r.amount,
                interval: Duration::from_millis(r.interval_ms),
            }),
            token_limit: record.token_limit.map(|r| TokenRate {
                tokens: r.amount,
                interval: Duration::from_millis(r.interval_ms),
            }),
            quota: record.quota.map(|q| Quota {
                requests: q.requests,
                tokens: q.tokens,
                period: QuotaPeriod::from_code(q.period),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn subdomain_patterns_match_subdomains_only() {
        let p = OriginPattern::parse("*.example.com").unwrap();
        assert!(p.matches("app.example.com"));
        assert!(p.matches("a.b.EXAMPLE.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("evilexample.com"));
        assert!(!p.matches("example.com.evil.net"));
    }

    #[test]
    fn exact_and_any_patterns() {
        let p = OriginPattern::parse("App.Example.com").unwrap();
        assert!(p.matches("app.example.com"));
        assert!(!p.matches("x.app.example.com"));
        assert!(OriginPattern::parse("*").unwrap().matches("anything.test"));
    }

    #[test]
    fn pasted_origins_reduce_to_their_host() {
        assert_eq!(
            OriginPattern::parse("https://app.example.com:8443/").unwrap(),
            OriginPattern::Exact("app.example.com".into())
        );
        for bad in ["", "://x", "a b", "*.", "*.*.com", "http://"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_are_taken_from_origin_and_referer_values() {
        assert_eq!(host_of("https://Evil.com").as_deref(), Some("evil.com"));
        assert_eq!(host_of("https://a.com:8443/x?y").as_deref(), Some("a.com"));
        assert_eq!(host_of("http://user@b.com/").as_deref(), Some("b.com"));
        assert_eq!(host_of("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(host_of("null").as_deref(), Some("null"));
        assert_eq!(host_of("https://"), None);
    }

    #[test]
    fn globs_match_like_shells_do() {
        assert!(glob_match("gpt-*", "gpt-4o"));
        assert!(glob_match("*", ""));
        assert!(glob_match("claude-?-*", "claude-3-opus"));
        assert!(!glob_match("gpt-*", "o1-gpt-4"));
        assert!(glob_match("*mini", "gpt-4o-mini"));
        assert!(!glob_match("gpt-4o", "gpt-4o-mini"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
    }

    #[test]
    fn networks_accept_bare_addresses() {
        assert_eq!(parse_net("10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("example.com").is_err());
    }

    #[test]
    fn limits_round_trip_through_their_record() {
        let limits = Limits {
            rate_limit: Some(Rate {
                requests: 5,
                interval: Duration::from_secs(60),
            }),
            token_limit: None,
            quota: Some(Quota {
                requests: Some(10),
                tokens: None,
                period: QuotaPeriod::Month,
            }),
        };
        assert_eq!(Limits::from_record(&limits.to_record()), limits);
    }

    proptest! {
        #[test]
        fn a_literal_glob_matches_only_itself(s in "[a-z0-9.-]{0,20}", t in "[a-z0-9.-]{0,20}") {
            prop_assert_eq!(glob_match(&s, &t), s == t);
        }

        #[test]
        fn a_star_suffix_matches_every_extension(s in "[a-z0-9-]{0,10}", t in "[a-z0-9-]{0,10}") {
            let pattern = format!("{s}*");
            let text = format!("{s}{t}");
            prop_assert!(glob_match(&pattern, &text));
        }

        #[test]
        fn subdomain_patterns_never_match_the_bare_domain(d in "[a-z]{1,10}\\.[a-z]{2,5}", sub in "[a-z]{1,8}") {
            let p = OriginPattern::parse(&format!("*.{d}")).unwrap();
            prop_assert!(!p.matches(&d));
            let sub_host = format!("{sub}.{d}");
            prop_assert!(p.matches(&sub_host));
        }
    }
}
