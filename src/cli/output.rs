//! Output for people: aligned tables, relative times, limits in flag notation, and a bar chart.
//!
//! Everything here renders to a `String` from plain inputs (the current time included), so it
//! is tested without a terminal or a clock. Text that came from the server is passed through
//! [`clean`] on its way into a table, so a name or metadata value cannot carry terminal escape
//! sequences to the operator's screen. `--json` output bypasses all of this: scripts get the
//! server's JSON as it was sent, pretty-printed.

use std::io::Write;

use serde_json::Value;

use super::error::CliError;
use crate::admin::api::{QuotaJson, RateLimitJson, TokenLimitJson};
use crate::clock::parse_rfc3339;

/// Width of the bar of the largest value in [`bar_chart`]: fits an 80-column terminal next to
/// a `YYYY-MM-DD HH:MM` label and the count.
pub const BAR_WIDTH: usize = 40;

/// Writes `text` to stdout.
pub fn print_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// Writes `text` to stderr.
pub fn print_err(text: &str) -> Result<(), CliError> {
    let mut err = std::io::stderr().lock();
    err.write_all(text.as_bytes())
        .and_then(|()| err.flush())
        .map_err(CliError::Output)
}

/// JSON for scripts: pretty, with a final newline.
pub fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    text.push('\n');
    text
}

/// Replaces control characters (escape sequences, newlines) so one value stays on one line
/// and cannot drive the terminal.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// At most `max` characters, ending in `…` when cut (without a space before it).
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    let mut out = kept.trim_end().to_owned();
    out.push('…');
    out
}

/// A table with a header row and columns padded to their widest cell.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<&'static str>,
    /// Columns aligned to the right (numbers).
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            right: vec![false; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Aligns these columns to the right.
    pub fn right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            if let Some(r) = self.right.get_mut(c) {
                *r = true;
            }
        }
        self
    }

    /// Adds a row; its cells are [`clean`]ed.
    pub fn push(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| clean(c)).collect());
    }

    /// The table as lines, two spaces between columns, no trailing spaces.
    pub fn render(&self) -> String {
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        let lines: Vec<&Vec<String>> = std::iter::once(&header).chain(&self.rows).collect();
        let mut widths = vec![0; self.headers.len()];
        for line in &lines {
            for (w, cell) in widths.iter_mut().zip(line.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate().take(widths.len()) {
                if i > 0 {
                    text.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                if self.right[i] {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned, for `show` commands.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        out.push_str(format!("{label:<width$} {}", clean(value)).trim_end());
        out.push('\n');
    }
    out
}

/// A span of time in its largest sensible unit: `45s`, `12m`, `5h`, `30d`. Hours up to two
/// days, since "in 1d" hides whether that is 25 or 47 hours.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `3d ago` or `in 89d` for an RFC 3339 time; `None` shows as `absent`, and text that is not
/// a timestamp is shown as it is.
pub fn relative(at: Option<&str>, now_ms: i64, absent: &str) -> String {
    let Some(at) = at else {
        return absent.to_owned();
    };
    let Some(ms) = parse_rfc3339(at) else {
        return at.to_owned();
    };
    let diff = ms - now_ms;
    if diff >= 0 {
        format!("in {}", span(diff.unsigned_abs()))
    } else {
        format!("{} ago", span(diff.unsigned_abs()))
    }
}

/// `2026-01-31T00:00:00Z (in 89d)`, or `absent`.
pub fn when(at: Option<&str>, now_ms: i64, absent: &str) -> String {
    match at {
        None => absent.to_owned(),
        Some(text) => format!("{text} ({})", relative(Some(text), now_ms, absent)),
    }
}

/// `60/60s`, the notation of `--rate`.
pub fn rate(r: &RateLimitJson) -> String {
    format!("{}/{}", r.requests, r.interval)
}

/// `100000/60s`, the notation of `--tokens`.
pub fn tokens(t: &TokenLimitJson) -> String {
    format!("{}/{}", t.tokens, t.interval)
}

/// `requests=1000,tokens=5000,period=month`, the notation of `--quota`.
pub fn quota(q: &QuotaJson) -> String {
    let mut parts = Vec::new();
    if let Some(n) = q.requests {
        parts.push(format!("requests={n}"));
    }
    if let Some(n) = q.tokens {
        parts.push(format!("tokens={n}"));
    }
    parts.push(format!("period={}", q.period.as_str()));
    parts.join(",")
}

/// A list for one table cell or field: `a, b`, or `none` when empty.
pub fn list(items: &[String], none: &str) -> String {
    if items.is_empty() {
        none.to_owned()
    } else {
        items.join(", ")
    }
}

/// Eighths of a block, for bar ends finer than one character.
const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/// A bar of `value` scaled so that `max` is `width` characters, in eighths of a character.
/// A value above zero always shows at least a sliver, so "a few" never looks like "none".
pub fn bar(value: u64, max: u64, width: usize) -> String {
    if value == 0 || max == 0 {
        return String::new();
    }
    let (value, max) = (u128::from(value.min(max)), u128::from(max));
    let eighths = (value * width as u128 * 8 + max / 2) / max;
    let full = (eighths / 8) as usize;
    let rest = (eighths % 8) as usize;
    let mut out = "█".repeat(full);
    if rest > 0 {
        out.push(EIGHTHS[rest]);
    }
    if out.is_empty() {
        out.push(EIGHTHS[1]);
    }
    out
}

/// One bar per row, scaled to the largest value, with the label before and the value after:
///
/// ```text
/// 2025-01-01 │████████████████████████████████████████ 120
/// 2025-01-02 │█████████████▍                           41
/// ```
pub fn bar_chart(rows: &[(String, u64)], width: usize) -> String {
    let max = rows.iter().map(|(_, v)| *v).max().unwrap_or(0);
    let label_width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in rows {
        let bar = bar(*value, max, width);
        out.push_str(&format!("{label:<label_width$} │{bar:<width$} {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "NAME", "REQUESTS"]).right(&[2]);
        t.push(vec!["key_1".into(), "a long name".into(), "5".into()]);
        t.push(vec!["key_22".into(), "b".into(), "1234".into()]);
        assert_eq!(
            t.render(),
            "ID      NAME         REQUESTS\n\
             key_1   a long name         5\n\
             key_22  b                1234\n"
        );
    }

    #[test]
    fn table_cells_cannot_carry_escape_sequences() {
        let mut t = Table::new(&["NAME"]);
        t.push(vec!["evil\x1b[2Jname\nline".into()]);
        let text = t.render();
        assert!(!text.contains('\x1b'));
        assert_eq!(text.lines().count(), 2, "{text:?}");
    }

    #[test]
    fn wide_characters_count_once() {
        let mut t = Table::new(&["A", "B"]);
        t.push(vec!["é".into(), "x".into()]);
        assert_eq!(t.render(), "A  B\né  x\n");
    }

    #[test]
    fn fields_align_their_values() {
        assert_eq!(
            fields(&[("id", "key_1".into()), ("last used", "never".into())]),
            "id:        key_1\nlast used: never\n"
        );
    }

    #[test]
    fn spans_and_relative_times_read_naturally() {
        assert_eq!(span(45_000), "45s");
        assert_eq!(span(12 * 60_000), "12m");
        assert_eq!(span(47 * 3_600_000), "47h");
        assert_eq!(span(90 * 86_400_000), "90d");
        let now = parse_rfc3339("2025-01-10T00:00:00Z").unwrap();
        assert_eq!(
            relative(Some("2025-01-07T00:00:00Z"), now, "never"),
            "3d ago"
        );
        assert_eq!(
            relative(Some("2025-01-10T00:05:00Z"), now, "never"),
            "in 5m"
        );
        assert_eq!(relative(None, now, "never"), "never");
        assert_eq!(relative(Some("soon"), now, "never"), "soon");
        assert_eq!(
            when(Some("2025-01-07T00:00:00Z"), now, "never"),
            "2025-01-07T00:00:00Z (3d ago)"
        );
    }

    #[test]
    fn limits_print_in_flag_notation() {
        let r = RateLimitJson {
            requests: 60,
            interval: "60s".into(),
        };
        assert_eq!(rate(&r), "60/60s");
        let q = QuotaJson {
            requests: None,
            tokens: Some(5000),
            period: crate::policy::QuotaPeriod::Month,
        };
        assert_eq!(quota(&q), "tokens=5000,period=month");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghij", 5), "abcd…");
        assert_eq!(truncate("abcdefghij", 5).chars().count(), 5);
    }

    #[test]
    fn bars_scale_to_the_largest_value_in_eighths() {
        assert_eq!(bar(100, 100, 40), "█".repeat(40));
        assert_eq!(bar(50, 100, 40), "█".repeat(20));
        assert_eq!(bar(0, 100, 40), "");
        assert_eq!(bar(1, 1_000_000, 40), "▏", "a small value still shows");
        // 41/120 of 40 chars = 13.67 chars = 109.3 eighths → 13 full + 5/8.
        assert_eq!(bar(41, 120, 40), format!("{}▋", "█".repeat(13)));
        assert_eq!(bar(5, 0, 40), "");
    }

    #[test]
    fn bar_charts_align_labels_bars_and_values() {
        let rows = vec![
            ("2025-01-01".to_owned(), 120),
            ("2025-01-02".to_owned(), 0),
            ("2025-01-03".to_owned(), 30),
        ];
        let chart = bar_chart(&rows, 8);
        assert_eq!(
            chart,
            "2025-01-01 │████████ 120\n\
             2025-01-02 │         0\n\
             2025-01-03 │██       30\n"
        );
    }
}
