//! Durations in the config's notation: `500ms`, `60s`, `5m`, `24h`, `90d`, and compounds such as
//! `1h30m` or `6m0s`.
//!
//! [`parse_duration`] reads them (whole numbers only, units from largest to smallest) and
//! [`format_duration`] writes the form people write, which parses back to the same value.

use std::time::Duration;

/// The units, largest first, with their length in milliseconds.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Appended to messages about units, so the fix is in the message.
const UNIT_HINT: &str = "use ms, s, m, h or d";

/// Parses `500ms`, `60s`, `5m`, `24h`, `90d` or a compound like `1h30m`.
///
/// The error is a whole sentence naming the input, e.g.
/// `invalid duration "60": missing unit (use ms, s, m, h or d)`.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    parse_millis(input)
        .map(Duration::from_millis)
        .map_err(|why| format!("invalid duration {input:?}: {why}"))
}

fn parse_millis(input: &str) -> Result<u64, String> {
    if input.is_empty() {
        return Err(format!("empty ({UNIT_HINT}, e.g. 60s)"));
    }
    if input.starts_with('-') {
        return Err("negative durations are not allowed".into());
    }
    let mut rest = input;
    let mut total: u64 = 0;
    // Index into UNITS of the previous group's unit; each group must use a smaller one.
    let mut previous: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "expected a number at {:?} (a duration is a whole number and a unit, e.g. 60s)",
                rest
            ));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(match after.chars().next() {
                Some('.') | Some(',') => {
                    "fractions are not allowed (write 1h30m rather than 1.5h)".into()
                }
                Some(c) => format!("unexpected {c:?} ({UNIT_HINT}, e.g. 60s)"),
                None => format!("missing unit ({UNIT_HINT})"),
            });
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("unknown unit {unit:?} ({UNIT_HINT})"));
        };
        if previous.is_some_and(|p| p >= index) {
            return Err(
                "units must go from largest to smallest, each at most once (e.g. 1h30m)".into(),
            );
        }
        previous = Some(index);
        let value: u64 = number.parse().map_err(|_| "too large".to_owned())?;
        total = value
            .checked_mul(UNITS[index].1)
            .and_then(|millis| total.checked_add(millis))
            .ok_or_else(|| "too large".to_owned())?;
        rest = after;
    }
    Ok(total)
}

/// Writes a duration the way people write it: a single unit when the value is a whole number of
/// one within its natural range (`500ms`, `60s`, `5m`, `1h`, `24h`, `90d`), else a compound with
/// no zero parts (`1m30s`, `1d12h`). Anything below a millisecond is dropped.
///
/// `parse_duration(&format_duration(d))` gives back `d` for every whole number of milliseconds
/// up to `u64::MAX`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    // The most of each unit, smallest first, still written in that unit: `60s` rather than
    // `1m`, but `1h` rather than `60m`, and `24h` rather than `1d`.
    const SINGLE: [(&str, u128, u128); 5] = [
        ("ms", 1, 999),
        ("s", 1_000, 60),
        ("m", 60_000, 59),
        ("h", 3_600_000, 24),
        ("d", 86_400_000, u128::MAX),
    ];
    for (unit, size, most) in SINGLE {
        if millis.is_multiple_of(size) && millis / size <= most {
            return format!("{}{unit}", millis / size);
        }
    }
    let mut out = String::new();
    let mut rest = millis;
    for (unit, size) in UNITS {
        let size = u128::from(size);
        let count = rest / size;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn compounds_add_up() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("6m0s"), Ok(Duration::from_secs(360)));
        assert_eq!(parse_duration("1d2h3m4s5ms"), Ok(ms(93_784_005)));
        assert_eq!(parse_duration("1s500ms"), Ok(ms(1_500)));
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("-5s", "negative"),
            ("60", "missing unit (use ms, s, m, h or d)"),
            ("5x", "unknown unit \"x\""),
            ("5sec", "unknown unit \"sec\""),
            ("1.5h", "fractions are not allowed"),
            ("h", "expected a number"),
            ("5 s", "unexpected ' '"),
            (" 5s", "expected a number"),
            ("30m1h", "largest to smallest"),
            ("1s1s", "largest to smallest"),
            ("99999999999999999999s", "too large"),
            ("213503982334602d", "too large"),
        ];
        for (input, why) in cases {
            let err = parse_duration(input).expect_err(input);
            assert!(
                err.starts_with(&format!("invalid duration {input:?}: ")),
                "{err}"
            );
            assert!(err.contains(why), "{input:?}: {err}");
        }
        assert_eq!(
            parse_duration("60").unwrap_err(),
            "invalid duration \"60\": missing unit (use ms, s, m, h or d)"
        );
    }

    #[test]
    fn formatting_writes_what_people_write() {
        let cases = [
            (Duration::ZERO, "0s"),
            (ms(500), "500ms"),
            (ms(1_000), "1s"),
            (Duration::from_secs(60), "60s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(2 * 86_400), "2d"),
            (Duration::from_secs(90 * 86_400), "90d"),
            (Duration::from_secs(36 * 3_600), "1d12h"),
            (ms(1_500), "1s500ms"),
            (Duration::from_nanos(1_500_000), "1ms"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_duration(duration), text, "{duration:?}");
        }
    }

    #[test]
    fn the_largest_duration_round_trips() {
        let max = ms(u64::MAX);
        assert_eq!(parse_duration(&format_duration(max)), Ok(max));
    }

    proptest! {
        #[test]
        fn formatted_durations_parse_back(millis in any::<u64>()) {
            let duration = ms(millis);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn small_durations_parse_back(millis in 0u64..10 * 86_400_000) {
            let duration = ms(millis);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn compounds_parse_to_their_sum(
            d in 0u64..1000, h in 0u64..24, m in 0u64..60, s in 0u64..60, milli in 0u64..1000,
        ) {
            let text = format!("{d}d{h}h{m}m{s}s{milli}ms");
            let want = ms((((d * 24 + h) * 60 + m) * 60 + s) * 1000 + milli);
            prop_assert_eq!(parse_duration(&text), Ok(want));
        }
    }
}
