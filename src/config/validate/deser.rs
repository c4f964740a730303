//! From the parsed document to the raw structs, one table at a time, reporting every type error
//! and every unknown key with its place.
//!
//! Each section (and each element of `[[routes]]`, `[upstreams.*]`, …) is deserialized on its own
//! through `serde_ignored`, so a mistake in one does not hide those in others and every key serde
//! did not use is reported as unknown, with a "did you mean" from the raw structs' field names.
//! When a table has type errors, each key is tried alone to find them all, and the table is read
//! again without them so that its other settings are still checked.

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::ctx::Ctx;
use super::locate::{self, Path, Seg};
use crate::config::raw;

/// Deserializes the table at `path`; `T::default()` (with the error recorded) when it is not one.
pub(super) fn table<T: DeserializeOwned + Default>(
    cx: &mut Ctx<'_, '_>,
    path: &Path,
    value: &Spanned<DeValue<'_>>,
) -> T {
    let DeValue::Table(table) = value.get_ref() else {
        cx.error(
            path,
            format!("expected a table, found {}", locate::kind(value.get_ref())),
        );
        cx.fail(path);
        return T::default();
    };
    let (result, unknown) = run::<T>(value.clone());
    if let Ok(parsed) = result {
        report_unknown(cx, path, unknown);
        return parsed;
    }
    // Find every key that fails on its own, then read the rest.
    let mut rest = table.clone();
    for (key, child) in table.iter() {
        let mut alone = DeTable::new();
        alone.insert(key.clone(), child.clone());
        let (result, _) = run::<T>(Spanned::new(value.span(), DeValue::Table(alone)));
        if let Err(err) = result {
            let key_path = path.key(key.get_ref());
            report_type_error(cx, &key_path, child, &err);
            cx.fail(&key_path);
            rest.remove(key.get_ref().as_ref());
        }
    }
    let (result, unknown) = run::<T>(Spanned::new(value.span(), DeValue::Table(rest)));
    match result {
        Ok(parsed) => {
            report_unknown(cx, path, unknown);
            parsed
        }
        Err(err) => {
            report_type_error(cx, path, value, &err);
            cx.fail(path);
            T::default()
        }
    }
}

/// An array of tables (`[[routes]]`), each element read on its own; indexes are kept, a failed
/// element becomes `T::default()` marked as failed.
pub(super) fn array_of<T: DeserializeOwned + Default>(
    cx: &mut Ctx<'_, '_>,
    path: &Path,
    value: &Spanned<DeValue<'_>>,
) -> Vec<T> {
    let DeValue::Array(array) = value.get_ref() else {
        let name = path.to_string();
        cx.error(
            path,
            format!(
                "expected an array of tables ([[{name}]] sections), found {}",
                locate::kind(value.get_ref())
            ),
        );
        cx.fail(path);
        return Vec::new();
    };
    array
        .iter()
        .enumerate()
        .map(|(index, element)| table(cx, &path.index(index), element))
        .collect()
}

/// A table of named tables (`[upstreams.NAME]`), each entry read on its own.
pub(super) fn map_of<T: DeserializeOwned + Default>(
    cx: &mut Ctx<'_, '_>,
    path: &Path,
    value: &Spanned<DeValue<'_>>,
) -> Vec<(String, T)> {
    let DeValue::Table(entries) = value.get_ref() else {
        let name = path.to_string();
        cx.error(
            path,
            format!(
                "expected a table of [{name}.NAME] sections, found {}",
                locate::kind(value.get_ref())
            ),
        );
        cx.fail(path);
        return Vec::new();
    };
    entries
        .iter()
        .map(|(name, entry)| {
            let name = name.get_ref().to_string();
            let parsed = table(cx, &path.key(&name), entry);
            (name, parsed)
        })
        .collect()
}

/// Deserializes `value`, collecting the relative path of every key serde did not use.
fn run<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
) -> (Result<T, toml::de::Error>, Vec<Vec<Seg>>) {
    let mut unknown = Vec::new();
    let result = serde_ignored::deserialize(ValueDeserializer::from(value), |path| {
        let mut segs = Vec::new();
        segments(&path, &mut segs);
        unknown.push(segs);
    });
    (result, unknown)
}

fn segments(path: &serde_ignored::Path<'_>, out: &mut Vec<Seg>) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            segments(parent, out);
            out.push(Seg::Index(*index));
        }
        P::Map { parent, key } => {
            segments(parent, out);
            out.push(Seg::Key(key.clone()));
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            segments(parent, out)
        }
    }
}

fn report_unknown(cx: &mut Ctx<'_, '_>, base: &Path, unknown: Vec<Vec<Seg>>) {
    for rel in unknown {
        let path = base.join(rel);
        let key = path.last_key().unwrap_or_default().to_owned();
        let known = raw::known_keys(&path.parent().to_strings()).unwrap_or_default();
        let message = unknown_key_message("key", &key, known);
        cx.error_at_key(&path, message);
    }
}

/// `unknown key "max_body_byte" (did you mean "max_body_bytes"?)`
pub(super) fn unknown_key_message(what: &str, key: &str, known: &[&str]) -> String {
    match suggest(key, known) {
        Some(near) => format!("unknown {what} {key:?} (did you mean {near:?}?)"),
        None => format!("unknown {what} {key:?}"),
    }
}

/// The known key closest to `key`, if it is close enough to be a likely typo.
fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key = key.to_ascii_lowercase();
    known
        .iter()
        .map(|candidate| (edit_distance(&key, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= 2 && distance * 3 <= candidate.len())
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, counted in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

fn report_type_error(
    cx: &mut Ctx<'_, '_>,
    base: &Path,
    value: &Spanned<DeValue<'_>>,
    err: &toml::de::Error,
) {
    let span = err.span().unwrap_or_else(|| value.span());
    let path = locate::path_at(value, base, span.start);
    // Serde sees a date-time as a table; name what is written when the error is about it.
    let found = locate::value_at(cx.doc, &path)
        .filter(|written| written.span().start == span.start)
        .map(|written| locate::kind(written.get_ref()));
    cx.error_at(span.start, &path, humanize(err.message(), found));
}

/// Serde's wording in the config's terms: `invalid type: string "5", expected i64` becomes
/// `expected an integer, found a string` (which also never repeats a value back). `written` is
/// the kind of value the file has there, when known.
fn humanize(message: &str, written: Option<&str>) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.replace("integer number overflowed", "integer is too large");
    };
    let Some((found, expected)) = rest.split_once(", expected ") else {
        return message.to_owned();
    };
    let found = match found.split([' ', '`', '"']).next().unwrap_or(found) {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a float",
        "boolean" => "a boolean",
        "map" => "a table",
        "sequence" => "an array",
        _ => found,
    };
    let found = written.unwrap_or(found);
    let expected = match expected {
        "i64" => "an integer",
        "a sequence" => "an array",
        "a map" => "a table",
        e if e.starts_with("struct ") => "a table",
        e => e,
    };
    if found == expected {
        // Only integers get here: one too large for the 64 bits TOML allows.
        return "integer out of range (TOML integers are 64-bit)".to_owned();
    }
    format!("expected {expected}, found {found}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{RawLimits, RawRoute, RawServer};

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// Runs `read` on the document and returns its errors as `LINE:COL: PATH: MESSAGE`.
    fn check<T>(text: &str, read: impl FnOnce(&mut Ctx<'_, '_>) -> T) -> (T, Vec<String>) {
        let doc = DeTable::parse(text).expect("test text parses").into_inner();
        let mut cx = Ctx::new(&doc, &no_env);
        let out = read(&mut cx);
        let errors = match cx.finish(text, std::path::Path::new("f")) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .iter()
                .map(|e| format!("{}:{}: {}: {}", e.line, e.col, e.path, e.message))
                .collect(),
        };
        (out, errors)
    }

    fn section<'a>(cx: &Ctx<'a, '_>, name: &str) -> &'a Spanned<DeValue<'a>> {
        let doc: &'a DeTable<'_> = cx.doc;
        doc.get(name).expect("section is written")
    }

    #[test]
    fn unknown_keys_are_found_in_nested_inline_tables() {
        let text =
            "[limits]\nrate_limit = { requests = 1, intervl = \"60s\" }\nreserve_tokenz = 5\n";
        let (limits, errors) = check(text, |cx| {
            let value = section(cx, "limits");
            table::<RawLimits>(cx, &Path::root().key("limits"), value)
        });
        assert_eq!(
            errors,
            [
                "2:30: limits.rate_limit.intervl: unknown key \"intervl\" (did you mean \"interval\"?)",
                "3:1: limits.reserve_tokenz: unknown key \"reserve_tokenz\" (did you mean \"reserve_tokens\"?)",
            ]
        );
        let rate = limits.rate_limit.expect("rate_limit was read");
        assert_eq!((rate.requests, rate.interval), (Some(1), None));
    }

    #[test]
    fn unknown_keys_in_sub_tables_and_dotted_keys_are_found() {
        let text = "[server]\nauth_failure_limit.per = 5\n[server.extra]\nx = 1\n";
        let (_, errors) = check(text, |cx| {
            let value = section(cx, "server");
            table::<RawServer>(cx, &Path::root().key("server"), value)
        });
        assert_eq!(
            errors,
            [
                "2:20: server.auth_failure_limit.per: unknown key \"per\"",
                "3:9: server.extra: unknown key \"extra\"",
            ]
        );
    }

    #[test]
    fn every_type_error_of_a_table_is_reported_and_the_rest_still_read() {
        let text = "[server]\nmax_body_bytes = \"10MB\"\nidle_timeout = 60\nstate_dir = \"/srv\"\nbogus = 1\n";
        let (server, errors) = check(text, |cx| {
            let value = section(cx, "server");
            let server = table::<RawServer>(cx, &Path::root().key("server"), value);
            assert!(cx.failed(&Path::root().key("server").key("idle_timeout")));
            assert!(!cx.failed(&Path::root().key("server").key("state_dir")));
            server
        });
        assert_eq!(
            errors,
            [
                "2:18: server.max_body_bytes: expected an integer, found a string",
                "3:16: server.idle_timeout: expected a string, found an integer",
                "5:1: server.bogus: unknown key \"bogus\"",
            ]
        );
        assert_eq!(server.state_dir.as_deref(), Some("/srv"));
        assert_eq!(server.max_body_bytes, None);
    }

    #[test]
    fn a_type_error_deep_inside_names_its_setting() {
        let text = "[limits]\nrate_limit = { requests = 5, interval = 60 }\n";
        let (_, errors) = check(text, |cx| {
            let value = section(cx, "limits");
            table::<RawLimits>(cx, &Path::root().key("limits"), value)
        });
        assert_eq!(
            errors,
            ["2:41: limits.rate_limit.interval: expected a string, found an integer"]
        );
    }

    #[test]
    fn arrays_keep_their_indexes_and_elements_must_be_tables() {
        let text = "routes = [{ path = \"/a\" }, 5, { path = \"/c\", upstrem = \"x\" }]\n";
        let (routes, errors) = check(text, |cx| {
            let value = section(cx, "routes");
            let routes = array_of::<RawRoute>(cx, &Path::root().key("routes"), value);
            assert!(cx.failed(&Path::root().key("routes").index(1).key("path")));
            routes
        });
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[2].path.as_deref(), Some("/c"));
        assert_eq!(
            errors,
            [
                "1:28: routes[1]: expected a table, found an integer",
                "1:46: routes[2].upstrem: unknown key \"upstrem\" (did you mean \"upstream\"?)",
            ]
        );
    }

    #[test]
    fn sections_of_the_wrong_shape_are_errors() {
        let text = "routes = 5\nupstreams = [1]\n";
        let (_, errors) = check(text, |cx| {
            let routes = section(cx, "routes");
            let upstreams = section(cx, "upstreams");
            assert!(array_of::<RawRoute>(cx, &Path::root().key("routes"), routes).is_empty());
            assert!(map_of::<RawRoute>(cx, &Path::root().key("upstreams"), upstreams).is_empty());
        });
        assert_eq!(
            errors,
            [
                "1:10: routes: expected an array of tables ([[routes]] sections), found an integer",
                "2:13: upstreams: expected a table of [upstreams.NAME] sections, found an array",
            ]
        );
    }

    #[test]
    fn date_times_and_huge_integers_are_named_as_written() {
        let text = "[server]\nidle_timeout = 1979-05-27T07:32:00Z\nmax_body_bytes = 99999999999999999999\n";
        let (_, errors) = check(text, |cx| {
            let value = section(cx, "server");
            table::<RawServer>(cx, &Path::root().key("server"), value)
        });
        assert_eq!(
            errors,
            [
                "2:16: server.idle_timeout: expected a string, found a date-time",
                "3:18: server.max_body_bytes: integer out of range (TOML integers are 64-bit)",
            ]
        );
    }

    #[test]
    fn suggestions_are_only_for_near_misses() {
        let known = ["max_body_bytes", "state_dir", "ca_file", "addr"];
        assert_eq!(suggest("max_body_byte", &known), Some("max_body_bytes"));
        assert_eq!(suggest("Max_Body_Bytes", &known), Some("max_body_bytes"));
        assert_eq!(suggest("statedir", &known), Some("state_dir"));
        assert_eq!(suggest("adr", &known), Some("addr"));
        assert_eq!(suggest("x", &known), None);
        assert_eq!(suggest("colour", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn serde_wording_is_translated_without_values() {
        assert_eq!(
            humanize("invalid type: string \"sk-secret\", expected i64", None),
            "expected an integer, found a string"
        );
        assert_eq!(
            humanize(
                "invalid type: floating point `1.5`, expected a string",
                None
            ),
            "expected a string, found a float"
        );
        assert_eq!(
            humanize("invalid type: integer `5`, expected struct RawRate", None),
            "expected a table, found an integer"
        );
        assert_eq!(
            humanize("invalid type: map, expected a sequence", None),
            "expected an array, found a table"
        );
        assert_eq!(
            humanize("invalid type: map, expected a string", Some("a date-time")),
            "expected a string, found a date-time"
        );
    }
}
