//! Places in the config text: the dotted [`Path`] of a setting, and the byte span, line and
//! column it has in the parsed document.
//!
//! Errors are raised against paths (`routes[2].upstream`); this module finds where that path is
//! written, falling back to the nearest enclosing table when the setting itself is missing (a
//! "missing key" error points at the table's header).

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One step of a [`Path`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// Where a setting sits, e.g. `routes[2].upstream` or `upstreams.openai.headers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(super) struct Path(Vec<Seg>);

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }

    pub fn key(&self, key: &str) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Path(segs)
    }

    pub fn index(&self, index: usize) -> Path {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Path(segs)
    }

    pub fn join(&self, rest: impl IntoIterator<Item = Seg>) -> Path {
        let mut segs = self.0.clone();
        segs.extend(rest);
        Path(segs)
    }

    /// Everything but the last step.
    pub fn parent(&self) -> Path {
        let mut segs = self.0.clone();
        segs.pop();
        Path(segs)
    }

    /// The last step when it is a key.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Seg::Key(key)) => Some(key),
            _ => None,
        }
    }

    /// Whether `self` is `ancestor` or lies inside it.
    pub fn starts_with(&self, ancestor: &Path) -> bool {
        self.0.starts_with(&ancestor.0)
    }

    /// The steps as strings, indexes as digits (the form `raw::known_keys` takes).
    pub fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|seg| match seg {
                Seg::Key(key) => key.clone(),
                Seg::Index(index) => index.to_string(),
            })
            .collect()
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(index) => write!(f, "[{index}]")?,
                Seg::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                    if bare {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The value at `path` in `doc`, if it is written there.
pub(super) fn value_at<'a, 'i>(
    doc: &'a DeTable<'i>,
    path: &Path,
) -> Option<&'a Spanned<DeValue<'i>>> {
    let (first, rest) = path.0.split_first()?;
    let Seg::Key(key) = first else {
        return None;
    };
    let mut value = doc.get(key.as_str())?;
    for seg in rest {
        value = match (seg, value.get_ref()) {
            (Seg::Key(key), DeValue::Table(table)) => table.get(key.as_str())?,
            (Seg::Index(index), DeValue::Array(array)) => array.get(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

/// The span of the value at `path`, or of the nearest enclosing value that is written (a table
/// header, for a missing key). The document start when nothing of the path is written.
pub(super) fn value_span(doc: &DeTable<'_>, path: &Path) -> Range<usize> {
    let mut path = path.clone();
    loop {
        if let Some(value) = value_at(doc, &path) {
            return value.span();
        }
        if path.0.pop().is_none() {
            return 0..0;
        }
    }
}

/// The span of the key that ends `path` (`max_body_byte` in `max_body_byte = 5`), else that of the
/// value at or around it.
pub(super) fn key_span(doc: &DeTable<'_>, path: &Path) -> Range<usize> {
    let parent = path.parent();
    let key = match path.0.last() {
        Some(Seg::Key(key)) => key.as_str(),
        _ => return value_span(doc, path),
    };
    let table = if parent.0.is_empty() {
        Some(doc)
    } else {
        value_at(doc, &parent).and_then(|value| value.get_ref().as_table())
    };
    match table.and_then(|table| table.get_key_value(key)) {
        Some((key, _)) => key.span(),
        None => value_span(doc, path),
    }
}

/// The deepest path below `base` (whose value is `value`) whose written span holds `offset`;
/// names the setting a deserialization error's span points into.
pub(super) fn path_at(value: &Spanned<DeValue<'_>>, base: &Path, offset: usize) -> Path {
    let mut path = base.clone();
    let mut value = value;
    'descend: loop {
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, child) in table.iter() {
                    if child.span().contains(&offset) {
                        path = path.key(key.get_ref());
                        value = child;
                        continue 'descend;
                    }
                }
            }
            DeValue::Array(array) => {
                for (index, child) in array.iter().enumerate() {
                    if child.span().contains(&offset) {
                        path = path.index(index);
                        value = child;
                        continue 'descend;
                    }
                }
            }
            _ => {}
        }
        return path;
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// What kind of TOML value this is, for messages.
pub(super) fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
[server]
max_body_bytes = 5
auth_failure_limit = { requests = 1, interval = \"60s\" }

[upstreams.\"my api\"]
base_url = \"x\"

[[routes]]
path = \"/v1\"

[[routes]]
path = \"/v2\"
";

    fn doc() -> DeTable<'static> {
        DeTable::parse(TEXT).expect("test text parses").into_inner()
    }

    fn at(path: &Path) -> (usize, usize) {
        line_col(TEXT, value_span(&doc(), path).start)
    }

    #[test]
    fn paths_display_like_the_file() {
        let path = Path::root().key("routes").index(2).key("upstream");
        assert_eq!(path.to_string(), "routes[2].upstream");
        let odd = Path::root().key("upstreams").key("my api").key("base_url");
        assert_eq!(odd.to_string(), "upstreams.\"my api\".base_url");
        assert_eq!(Path::root().to_string(), "");
        assert_eq!(path.to_strings(), ["routes", "2", "upstream"]);
        assert_eq!(path.parent().last_key(), None);
        assert!(path.starts_with(&Path::root().key("routes")));
    }

    #[test]
    fn values_are_found_where_they_are_written() {
        let server = Path::root().key("server");
        assert_eq!(at(&server.key("max_body_bytes")), (2, 18));
        assert_eq!(
            at(&server.key("auth_failure_limit").key("interval")),
            (3, 49)
        );
        assert_eq!(
            at(&Path::root().key("routes").index(1).key("path")),
            (12, 8)
        );
        let odd = Path::root().key("upstreams").key("my api").key("base_url");
        assert_eq!(at(&odd), (6, 12));
    }

    #[test]
    fn a_missing_key_points_at_its_table() {
        let missing = Path::root().key("routes").index(1).key("upstream");
        assert_eq!(at(&missing), (11, 1));
        assert_eq!(at(&Path::root().key("nothing").key("here")), (1, 1));
    }

    #[test]
    fn keys_are_found_by_name() {
        let key = Path::root()
            .key("server")
            .key("auth_failure_limit")
            .key("requests");
        assert_eq!(line_col(TEXT, key_span(&doc(), &key).start), (3, 24));
        let section = Path::root().key("server");
        assert_eq!(line_col(TEXT, key_span(&doc(), &section).start), (1, 2));
    }

    #[test]
    fn an_offset_names_the_deepest_setting_around_it() {
        let doc = doc();
        let server = Path::root().key("server");
        let value = value_at(&doc, &server).expect("server is written");
        let offset = TEXT.find("\"60s\"").expect("in text");
        assert_eq!(
            path_at(value, &server, offset).to_string(),
            "server.auth_failure_limit.interval"
        );
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_col("a = \"é\"\nb", 9), (2, 1));
        assert_eq!(line_col("x = \"éé\" y", 11), (1, 10));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
