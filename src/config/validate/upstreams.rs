//! Checks for `[upstreams.NAME]`: base URL, credential and headers.
//!
//! Credentials are read here: `api_key_file` now (an unreadable or empty file is an error), and
//! `api_key_env` from the injected environment (unset is only a warning: a local model server
//! needs none). Neither the value nor any part of it ever reaches a message.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Uri};

use super::ctx::Ctx;
use super::locate::Path;
use crate::config::raw::RawUpstream;
use crate::config::{AuthStyle, Secret, Upstream, defaults};

/// An `api_key_file` larger than this is not a key file (someone named the wrong file).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Headers keygate manages itself, which an upstream's `headers` may not set.
const MANAGED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Header names whose values are treated as secrets: marked sensitive, never shown.
const SENSITIVE_NAME_PARTS: [&str; 8] = [
    "auth",
    "key",
    "token",
    "secret",
    "cookie",
    "password",
    "credential",
    "session",
];

pub(super) fn upstreams(
    cx: &mut Ctx<'_, '_>,
    raw: &BTreeMap<String, RawUpstream>,
) -> BTreeMap<String, Arc<Upstream>> {
    raw.iter()
        .filter_map(|(name, entry)| {
            let upstream = upstream(cx, name, entry)?;
            Some((name.clone(), Arc::new(upstream)))
        })
        .collect()
}

fn upstream(cx: &mut Ctx<'_, '_>, name: &str, raw: &RawUpstream) -> Option<Upstream> {
    let p = Path::root().key("upstreams").key(name);
    let name_ok = cx.name(&p, "upstream name", name);
    let base_url = cx
        .required(&p.key("base_url"), &raw.base_url)
        .and_then(|url| base_url(cx, &p.key("base_url"), url));
    let auth = cx.choice(
        &p.key("auth"),
        raw.auth.as_deref(),
        AuthStyle::Bearer,
        &[
            ("bearer", AuthStyle::Bearer),
            ("x-api-key", AuthStyle::XApiKey),
        ],
    );
    let credential = credential(cx, name, &p, raw);
    let connect_timeout = cx.duration(
        &p.key("connect_timeout"),
        raw.connect_timeout.as_deref(),
        defaults::CONNECT_TIMEOUT,
        std::time::Duration::from_millis(1),
        std::time::Duration::MAX,
    );
    let timeout = cx.duration(
        &p.key("timeout"),
        raw.timeout.as_deref(),
        defaults::UPSTREAM_TIMEOUT,
        std::time::Duration::from_millis(1),
        std::time::Duration::MAX,
    );
    let headers = headers(cx, &p.key("headers"), raw, auth);
    let ca_file = match &raw.ca_file {
        Some(file) => Some(cx.existing_file(&p.key("ca_file"), file)?),
        None => None,
    };
    let (credential, credential_source) = credential?;
    if !name_ok {
        return None;
    }
    Some(Upstream {
        name: name.to_owned(),
        base_url: base_url?,
        credential,
        credential_source,
        auth,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        headers,
        ca_file,
    })
}

/// `http(s)://host[:port][/prefix]`, without credentials, query or fragment; a trailing `/` is
/// dropped so that request paths join onto the prefix.
fn base_url(cx: &mut Ctx<'_, '_>, path: &Path, raw: &str) -> Option<Uri> {
    let problem = check_base_url(raw);
    match problem {
        Ok(uri) => Some(uri),
        Err(message) => {
            cx.error(path, message);
            None
        }
    }
}

fn check_base_url(raw: &str) -> Result<Uri, String> {
    let example = "such as https://api.openai.com or http://127.0.0.1:11434/v1";
    if raw.contains('#') {
        return Err("must not have a fragment (#…)".into());
    }
    let uri: Uri = raw
        .parse()
        .map_err(|err| format!("invalid URL ({err}): expected a base URL {example}"))?;
    let scheme = match uri.scheme_str() {
        Some(scheme @ ("http" | "https")) => scheme,
        Some(other) => return Err(format!("unsupported scheme {other:?} (use http or https)")),
        None => return Err(format!("must start with http:// or https://, {example}")),
    };
    let Some(authority) = uri.authority() else {
        return Err(format!("must name a host, {example}"));
    };
    if authority.as_str().contains('@') {
        return Err(
            "must not contain user:password@ (put the credential in api_key_env or api_key_file)"
                .into(),
        );
    }
    if authority.host().is_empty() {
        return Err(format!("must name a host, {example}"));
    }
    if uri.query().is_some() {
        return Err("must not have a query (?…)".into());
    }
    let prefix = uri.path().trim_end_matches('/');
    format!("{scheme}://{authority}{prefix}")
        .parse()
        .map_err(|err| format!("invalid URL ({err})"))
}

/// The upstream's credential and where it comes from (`env:NAME` / `file:PATH`); `None` when an
/// error was recorded.
fn credential(
    cx: &mut Ctx<'_, '_>,
    name: &str,
    p: &Path,
    raw: &RawUpstream,
) -> Option<(Option<Secret>, Option<String>)> {
    match (&raw.api_key_env, &raw.api_key_file) {
        (None, None) => Some((None, None)),
        (Some(_), Some(_)) => {
            cx.error(
                &p.key("api_key_file"),
                "set api_key_env or api_key_file, not both",
            );
            None
        }
        (Some(var), None) => {
            if var.is_empty() || var.contains(['=', '\0']) {
                cx.error(
                    &p.key("api_key_env"),
                    format!("invalid environment variable name {var:?}"),
                );
                return None;
            }
            let source = Some(format!("env:{var}"));
            let value = cx.env(var).map(|v| v.trim().to_owned()).unwrap_or_default();
            let problem = if value.is_empty() {
                "is not set"
            } else if HeaderValue::from_str(&value).is_err() {
                "holds characters that cannot be sent in an HTTP header"
            } else {
                return Some((Some(Secret::new(value)), source));
            };
            cx.warn(format!(
                "upstream {name}: environment variable {var} {problem}; requests go upstream \
                 without a credential"
            ));
            Some((None, source))
        }
        (None, Some(file)) => match read_key_file(file) {
            Ok(secret) => Some((Some(secret), Some(format!("file:{file}")))),
            Err(message) => {
                cx.error(&p.key("api_key_file"), message);
                None
            }
        },
    }
}

/// Reads and trims a key file; messages name the file, never its contents.
fn read_key_file(file: &str) -> Result<Secret, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|err| format!("cannot read api_key_file {file:?}: {err}"))?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(format!(
            "api_key_file {file:?} is larger than 64 KiB; it should hold only the API key"
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| format!("api_key_file {file:?} is not UTF-8 text"))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("api_key_file {file:?} is empty"));
    }
    if HeaderValue::from_str(key).is_err() {
        return Err(format!(
            "api_key_file {file:?} holds characters that cannot be sent in an HTTP header \
             (a key is one line of printable text)"
        ));
    }
    Ok(Secret::new(key))
}

/// The `headers` table: valid names and values, none that keygate manages, none twice, and none
/// that would replace the credential. Values of credential-like names are marked sensitive.
fn headers(
    cx: &mut Ctx<'_, '_>,
    path: &Path,
    raw: &RawUpstream,
    auth: AuthStyle,
) -> Vec<(HeaderName, HeaderValue)> {
    let has_credential = raw.api_key_env.is_some() || raw.api_key_file.is_some();
    let credential_header = match auth {
        AuthStyle::Bearer => "authorization",
        AuthStyle::XApiKey => "x-api-key",
    };
    let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    for (name, value) in raw.headers.iter().flatten() {
        let here = path.key(name);
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            cx.error_at_key(&here, format!("invalid header name {name:?}"));
            continue;
        };
        if MANAGED_HEADERS.contains(&header.as_str()) {
            cx.error_at_key(
                &here,
                format!("header {header:?} is managed by keygate and cannot be set here"),
            );
            continue;
        }
        if has_credential && header == credential_header {
            cx.error_at_key(
                &here,
                format!(
                    "header {header:?} would replace the credential from api_key_env or \
                     api_key_file"
                ),
            );
            continue;
        }
        if headers.iter().any(|(seen, _)| *seen == header) {
            cx.error_at_key(&here, format!("header {header:?} is set twice"));
            continue;
        }
        let Ok(mut value) = HeaderValue::from_str(value) else {
            cx.error(
                &here,
                "invalid header value: use printable ASCII text on one line",
            );
            continue;
        };
        value.set_sensitive(is_sensitive(&header));
        headers.push((header, value));
    }
    headers
}

/// Whether a header's value is likely a credential (`authorization`, `x-goog-api-key`, …).
fn is_sensitive(name: &HeaderName) -> bool {
    SENSITIVE_NAME_PARTS
        .iter()
        .any(|part| name.as_str().contains(part))
}

#[cfg(test)]
mod tests;
