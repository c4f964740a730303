//! `keygate usage`: requests and tokens per hour or day, as a table and a bar chart.
//!
//! Asks `GET /api/usage?key=|account=&from=&to=&granularity=` for the window that ends now and
//! began `--since` ago. People read a column of bars faster than a column of numbers, so the
//! table is followed by a chart of requests per bucket. `--json` prints the server's array.

use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::client::{Client, parse, with_query};
use super::error::CliError;
use super::flags;
use super::output::{self, BAR_WIDTH, Table, bar_chart, print_err, print_out};
use super::{Done, now_ms};
use crate::clock::rfc3339;

/// Windows up to this long default to hourly buckets; longer ones to daily buckets, so the
/// chart stays a screenful (48 rows at most by default).
const HOURLY_UP_TO: Duration = Duration::from_secs(48 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct UsageArgs {
    /// Only this key
    #[arg(long, value_name = "ID", conflicts_with = "account")]
    pub key: Option<String>,
    /// Only this account
    #[arg(long, value_name = "ACCOUNT")]
    pub account: Option<String>,
    /// How far back to look, e.g. 24h or 30d
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = flags::positive_duration)]
    pub since: Duration,
    /// Bucket size [default: hour for windows up to 48h, else day]
    #[arg(long, value_enum)]
    pub granularity: Option<Granularity>,
    /// Print the server's JSON
    #[arg(long)]
    pub json: bool,
}

/// One bucket of `GET /api/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Bucket {
    pub start: String,
    #[serde(default)]
    pub requests: u64,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub errors: u64,
}

/// The query of a usage request for the window `[now - since, now]`.
pub fn query(args: &UsageArgs, now_ms: i64) -> (String, Granularity) {
    let granularity = args.granularity.unwrap_or(if args.since <= HOURLY_UP_TO {
        Granularity::Hour
    } else {
        Granularity::Day
    });
    let since_ms = i64::try_from(args.since.as_millis()).unwrap_or(i64::MAX);
    let path = with_query(
        "/api/usage",
        &[
            ("key", args.key.clone()),
            ("account", args.account.clone()),
            ("from", Some(rfc3339(now_ms.saturating_sub(since_ms)))),
            ("to", Some(rfc3339(now_ms))),
            ("granularity", Some(granularity.as_str().to_owned())),
        ],
    );
    (path, granularity)
}

pub async fn run(client: &Client, args: UsageArgs) -> Result<Done, CliError> {
    let (path, granularity) = query(&args, now_ms());
    let value = client.get(&path).await?;
    if args.json {
        print_out(&output::pretty(&value))?;
        return Ok(Done::Ok);
    }
    let buckets: Vec<Bucket> = parse(value)?;
    if buckets.is_empty() {
        print_err(&format!(
            "no usage in the last {}\n",
            crate::config::format_duration(args.since)
        ))?;
        return Ok(Done::Ok);
    }
    print_out(&render(&buckets, granularity))?;
    Ok(Done::Ok)
}

/// `2025-01-01 13:00` for hours, `2025-01-01` for days (UTC).
fn label(start: &str, granularity: Granularity) -> String {
    let Ok(at) = start.parse::<jiff::Timestamp>() else {
        return start.to_owned();
    };
    let format = match granularity {
        Granularity::Hour => "%Y-%m-%d %H:%M",
        Granularity::Day => "%Y-%m-%d",
    };
    // A Timestamp formats in UTC.
    at.strftime(format).to_string()
}

/// The table, the totals and the chart of requests per bucket.
pub fn render(buckets: &[Bucket], granularity: Granularity) -> String {
    let mut t = Table::new(&[
        "START (UTC)",
        "REQUESTS",
        "INPUT TOKENS",
        "OUTPUT TOKENS",
        "ERRORS",
    ])
    .right(&[1, 2, 3, 4]);
    let mut total = Bucket {
        start: String::new(),
        requests: 0,
        input_tokens: 0,
        output_tokens: 0,
        errors: 0,
    };
    for b in buckets {
        t.push(vec![
            label(&b.start, granularity),
            b.requests.to_string(),
            b.input_tokens.to_string(),
            b.output_tokens.to_string(),
            b.errors.to_string(),
        ]);
        total.requests = total.requests.saturating_add(b.requests);
        total.input_tokens = total.input_tokens.saturating_add(b.input_tokens);
        total.output_tokens = total.output_tokens.saturating_add(b.output_tokens);
        total.errors = total.errors.saturating_add(b.errors);
    }
    t.push(vec![
        "total".into(),
        total.requests.to_string(),
        total.input_tokens.to_string(),
        total.output_tokens.to_string(),
        total.errors.to_string(),
    ]);
    let rows: Vec<(String, u64)> = buckets
        .iter()
        .map(|b| (output::clean(&label(&b.start, granularity)), b.requests))
        .collect();
    format!(
        "{}\nrequests per {}\n{}",
        t.render(),
        granularity.as_str(),
        bar_chart(&rows, BAR_WIDTH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(since: &str, granularity: Option<Granularity>) -> UsageArgs {
        UsageArgs {
            key: Some("key_0000000100000001".into()),
            account: None,
            since: flags::positive_duration(since).unwrap(),
            granularity,
            json: false,
        }
    }

    const NOW: i64 = 1_736_467_200_000; // 2025-01-10T00:00:00Z

    #[test]
    fn the_window_ends_now_and_starts_since_ago() {
        let (path, g) = query(&args("7d", None), NOW);
        assert_eq!(g, Granularity::Day);
        assert_eq!(
            path,
            "/api/usage?key=key_0000000100000001&from=2025-01-03T00%3A00%3A00Z\
             &to=2025-01-10T00%3A00%3A00Z&granularity=day"
        );
        assert_eq!(query(&args("24h", None), NOW).1, Granularity::Hour);
        assert_eq!(
            query(&args("24h", Some(Granularity::Day)), NOW).1,
            Granularity::Day
        );
    }

    #[test]
    fn the_render_has_a_table_totals_and_bars() {
        let buckets = vec![
            Bucket {
                start: "2025-01-09T13:00:00Z".into(),
                requests: 120,
                input_tokens: 5000,
                output_tokens: 700,
                errors: 2,
            },
            Bucket {
                start: "2025-01-09T14:00:00Z".into(),
                requests: 30,
                input_tokens: 10,
                output_tokens: 1,
                errors: 0,
            },
        ];
        let text = render(&buckets, Granularity::Hour);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "START (UTC)       REQUESTS  INPUT TOKENS  OUTPUT TOKENS  ERRORS"
        );
        assert_eq!(
            lines[1],
            "2025-01-09 13:00       120          5000            700       2"
        );
        assert_eq!(
            lines[3],
            "total                  150          5010            701       2"
        );
        assert_eq!(lines[5], "requests per hour");
        assert_eq!(
            lines[6],
            format!("2025-01-09 13:00 │{} 120", "█".repeat(40))
        );
        assert_eq!(
            lines[7],
            format!("2025-01-09 14:00 │{}{} 30", "█".repeat(10), " ".repeat(30))
        );
    }

    #[test]
    fn day_labels_are_dates() {
        assert_eq!(
            label("2025-01-09T00:00:00Z", Granularity::Day),
            "2025-01-09"
        );
        assert_eq!(
            label("2025-01-09T01:00:00+01:00", Granularity::Day),
            "2025-01-09"
        );
        assert_eq!(label("not a time", Granularity::Hour), "not a time");
    }
}
