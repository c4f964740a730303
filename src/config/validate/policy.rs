//! Checks for the policy sections: `[keys]`, `[limits]`, `[usage]` and `[log]`, and the
//! `{ requests, interval }` rates they share with `[server]`.

use std::time::Duration;

use super::ctx::Ctx;
use super::locate::Path;
use crate::config::raw::{RawKeys, RawLimits, RawLog, RawRate, RawTokenRate, RawUsage};
use crate::config::{Keys, Limits, Log, LogFormat, Rate, TokenRate, Usage, defaults};
use crate::scope::Scope;

const NON_ZERO: Duration = Duration::from_millis(1);
const MIN_FLUSH: Duration = Duration::from_millis(100);
const MAX_FLUSH: Duration = Duration::from_secs(3_600);
/// Hourly buckets are folded into daily ones, so they must at least cover an hour.
const MIN_HOURLY_RETENTION: Duration = Duration::from_secs(3_600);

/// `{ requests = N, interval = "D" }`, both required, N ≥ 1, D > 0.
pub(super) fn rate(cx: &mut Ctx<'_, '_>, path: &Path, raw: &RawRate) -> Option<Rate> {
    let requests = count(cx, &path.key("requests"), &raw.requests);
    let interval = interval(cx, &path.key("interval"), &raw.interval);
    Some(Rate {
        requests: requests?,
        interval: interval?,
    })
}

/// `{ tokens = N, interval = "D" }`, both required, N ≥ 1, D > 0.
fn token_rate(cx: &mut Ctx<'_, '_>, path: &Path, raw: &RawTokenRate) -> Option<TokenRate> {
    let tokens = count(cx, &path.key("tokens"), &raw.tokens);
    let interval = interval(cx, &path.key("interval"), &raw.interval);
    Some(TokenRate {
        tokens: tokens?,
        interval: interval?,
    })
}

fn count(cx: &mut Ctx<'_, '_>, path: &Path, raw: &Option<i64>) -> Option<u64> {
    let value = *cx.required(path, raw)?;
    let before = cx.error_count();
    let value = cx.int(path, Some(value), 0, 1, i64::MAX);
    (cx.error_count() == before).then_some(value)
}

fn interval(cx: &mut Ctx<'_, '_>, path: &Path, raw: &Option<String>) -> Option<Duration> {
    let value = cx.required(path, raw)?;
    cx.duration(
        path,
        Some(value),
        Duration::ZERO,
        NON_ZERO,
        crate::limits::MAX_INTERVAL,
    )
}

pub(super) fn keys(cx: &mut Ctx<'_, '_>, raw: &RawKeys) -> Keys {
    let p = Path::root().key("keys");
    let prefix = raw.prefix.as_deref().unwrap_or(defaults::KEY_PREFIX);
    if !valid_prefix(prefix) {
        cx.error(
            &p.key("prefix"),
            format!(
                "invalid key prefix {prefix:?}: it must start with a letter and have at most 16 \
                 letters, digits, '_' or '-' (^[A-Za-z][A-Za-z0-9_-]{{0,15}}$)"
            ),
        );
    }
    let max_active_per_account = cx.int(
        &p.key("max_active_per_account"),
        raw.max_active_per_account,
        defaults::MAX_ACTIVE_PER_ACCOUNT,
        1,
        i64::from(u32::MAX),
    );
    let default_scopes = match &raw.default_scopes {
        None => defaults::DEFAULT_SCOPES.to_vec(),
        Some(names) => scopes(cx, &p.key("default_scopes"), names),
    };
    Keys {
        prefix: prefix.to_owned(),
        max_active_per_account,
        default_scopes,
    }
}

/// SPEC §1: `^[A-Za-z][A-Za-z0-9_-]{0,15}$`.
fn valid_prefix(prefix: &str) -> bool {
    let mut bytes = prefix.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic())
        && prefix.len() <= 16
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A non-empty list of scope names, duplicates dropped, in the order written.
fn scopes(cx: &mut Ctx<'_, '_>, path: &Path, names: &[String]) -> Vec<Scope> {
    if names.is_empty() && !cx.failed(path) {
        cx.error(
            path,
            "must name at least one scope (chat, read, write, admin, webhook)",
        );
    }
    let mut scopes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match name.parse::<Scope>() {
            Ok(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Ok(_) => {}
            Err(err) => cx.error(&path.index(i), err.to_string()),
        }
    }
    scopes
}

pub(super) fn limits(cx: &mut Ctx<'_, '_>, raw: &RawLimits) -> Limits {
    let p = Path::root().key("limits");
    let rate_limit = match &raw.rate_limit {
        Some(r) => rate(cx, &p.key("rate_limit"), r),
        None => Some(defaults::RATE_LIMIT),
    };
    let token_limit = raw
        .token_limit
        .as_ref()
        .and_then(|t| token_rate(cx, &p.key("token_limit"), t));
    Limits {
        rate_limit,
        token_limit,
        reserve_tokens: cx.int(
            &p.key("reserve_tokens"),
            raw.reserve_tokens,
            defaults::RESERVE_TOKENS,
            0,
            i64::MAX,
        ),
    }
}

pub(super) fn usage(cx: &mut Ctx<'_, '_>, raw: &RawUsage) -> Usage {
    let p = Path::root().key("usage");
    let flush_interval = cx.duration(
        &p.key("flush_interval"),
        raw.flush_interval.as_deref(),
        defaults::FLUSH_INTERVAL,
        MIN_FLUSH,
        MAX_FLUSH,
    );
    let hourly_retention = cx.duration(
        &p.key("hourly_retention"),
        raw.hourly_retention.as_deref(),
        defaults::HOURLY_RETENTION,
        MIN_HOURLY_RETENTION,
        Duration::MAX,
    );
    let daily_retention = raw.daily_retention.as_deref().and_then(|daily| {
        let path = p.key("daily_retention");
        let value = cx.duration(&path, Some(daily), Duration::ZERO, NON_ZERO, Duration::MAX)?;
        if let Some(hourly) = hourly_retention.filter(|hourly| value < *hourly) {
            let hourly = crate::config::format_duration(hourly);
            cx.error(
                &path,
                format!(
                    "must be at least hourly_retention ({hourly}), since daily buckets are made \
                     from hourly ones; leave it out to keep them forever"
                ),
            );
        }
        Some(value)
    });
    Usage {
        flush_interval: flush_interval.unwrap_or(defaults::FLUSH_INTERVAL),
        hourly_retention: hourly_retention.unwrap_or(defaults::HOURLY_RETENTION),
        daily_retention,
    }
}

/// Level names a bare directive may be.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

pub(super) fn log(cx: &mut Ctx<'_, '_>, raw: &RawLog) -> Log {
    let p = Path::root().key("log");
    let format = cx.choice(
        &p.key("format"),
        raw.format.as_deref(),
        LogFormat::Text,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    );
    let level = raw.level.as_deref().unwrap_or(defaults::LOG_LEVEL);
    if let Err(message) = check_level(level) {
        cx.error(&p.key("level"), message);
    }
    Log {
        format,
        level: level.to_owned(),
    }
}

/// A level name, or `EnvFilter` directives such as `info,keygate=debug`. A bare word that is not a
/// level would be read by `EnvFilter` as a target name and silently log nothing new, so it is
/// refused as a likely typo.
fn check_level(level: &str) -> Result<(), String> {
    let hint = "expected trace, debug, info, warn, error or off, or directives such as \
                \"info,keygate=debug\"";
    if level.trim().is_empty() {
        return Err(format!("must not be empty ({hint})"));
    }
    for directive in level.split(',').map(str::trim) {
        if !directive.contains('=') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!("unknown log level {directive:?} ({hint})"));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|err| format!("invalid log filter {level:?}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors_of, parse_ok};
    use super::*;

    #[test]
    fn keys_settings_are_read() {
        let s = parse_ok(
            "[keys]\nprefix = \"ak_live-\"\nmax_active_per_account = 3\n\
             default_scopes = [\"read\", \"write\", \"read\"]\n",
        );
        assert_eq!(s.keys.prefix, "ak_live-");
        assert_eq!(s.keys.max_active_per_account, 3);
        assert_eq!(s.keys.default_scopes, [Scope::Read, Scope::Write]);
    }

    #[test]
    fn key_prefix_follows_the_spec_rule() {
        for good in ["sk-kg-", "a", "Z_9-", "abcdefghijklmnop"] {
            assert!(valid_prefix(good), "{good}");
        }
        for bad in [
            "",
            "9sk",
            "-sk",
            "sk kg",
            "sk.kg",
            "abcdefghijklmnopq",
            "ské",
        ] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn keys_mistakes_are_reported() {
        let errors = errors_of(
            "[keys]\nprefix = \"9-\"\nmax_active_per_account = 0\ndefault_scopes = [\"chat\", \"reed\"]\n",
        );
        assert_eq!(
            errors,
            [
                "2:10: keys.prefix: invalid key prefix \"9-\": it must start with a letter and \
                 have at most 16 letters, digits, '_' or '-' (^[A-Za-z][A-Za-z0-9_-]{0,15}$)",
                "3:26: keys.max_active_per_account: must be at least 1, not 0",
                "4:27: keys.default_scopes[1]: unknown scope \"reed\" (expected one of chat, \
                 read, write, admin, webhook)",
            ]
        );
        assert_eq!(
            errors_of("[keys]\ndefault_scopes = []\n"),
            [
                "2:18: keys.default_scopes: must name at least one scope (chat, read, write, admin, webhook)"
            ]
        );
    }

    #[test]
    fn limits_are_read() {
        let s = parse_ok(
            "[limits]\nrate_limit = { requests = 100, interval = \"1s\" }\n\
             token_limit = { tokens = 100000, interval = \"60s\" }\nreserve_tokens = 0\n",
        );
        let rate = s.limits.rate_limit.expect("rate limit");
        assert_eq!(
            (rate.requests, rate.interval),
            (100, Duration::from_secs(1))
        );
        let tokens = s.limits.token_limit.expect("token limit");
        assert_eq!(
            (tokens.tokens, tokens.interval),
            (100_000, Duration::from_secs(60))
        );
        assert_eq!(s.limits.reserve_tokens, 0);
    }

    #[test]
    fn limits_mistakes_are_reported() {
        let errors = errors_of(
            "[limits]\nrate_limit = { interval = \"0s\" }\n\
             token_limit = { tokens = -5, interval = \"1m\" }\nreserve_tokens = -1\n",
        );
        assert_eq!(
            errors,
            [
                "2:14: limits.rate_limit.requests: missing required key \"requests\"",
                "2:27: limits.rate_limit.interval: must be greater than 0s, not 0s",
                "3:26: limits.token_limit.tokens: must be at least 1, not -5",
                "4:18: limits.reserve_tokens: must be at least 0, not -1",
            ]
        );
    }

    #[test]
    fn usage_retention_is_ordered() {
        let s = parse_ok(
            "[usage]\nflush_interval = \"250ms\"\nhourly_retention = \"7d\"\ndaily_retention = \"400d\"\n",
        );
        assert_eq!(s.usage.flush_interval, Duration::from_millis(250));
        assert_eq!(s.usage.hourly_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(
            s.usage.daily_retention,
            Some(Duration::from_secs(400 * 86_400))
        );
        let errors = errors_of("[usage]\nflush_interval = \"50ms\"\nhourly_retention = \"30m\"\n");
        assert_eq!(
            errors,
            [
                "2:18: usage.flush_interval: must be at least 100ms, not 50ms",
                "3:20: usage.hourly_retention: must be at least 1h, not 30m",
            ]
        );
        assert_eq!(
            errors_of("[usage]\nflush_interval = \"2h\"\ndaily_retention = \"30d\"\n"),
            [
                "2:18: usage.flush_interval: must be at most 1h, not 2h",
                "3:19: usage.daily_retention: must be at least hourly_retention (90d), since \
                 daily buckets are made from hourly ones; leave it out to keep them forever",
            ]
        );
    }

    #[test]
    fn log_settings_are_checked() {
        let s = parse_ok("[log]\nformat = \"json\"\nlevel = \"warn,keygate=debug\"\n");
        assert_eq!(s.log.format, LogFormat::Json);
        assert_eq!(s.log.level, "warn,keygate=debug");
        assert_eq!(
            errors_of("[log]\nformat = \"JSON\"\nlevel = \"infoo\"\n"),
            [
                "2:10: log.format: invalid value \"JSON\" (expected \"text\" or \"json\")",
                "3:9: log.level: unknown log level \"infoo\" (expected trace, debug, info, warn, \
                 error or off, or directives such as \"info,keygate=debug\")",
            ]
        );
        assert!(check_level("keygate=loud").is_err());
        assert!(check_level("").is_err());
        assert!(check_level("INFO").is_ok());
    }
}
