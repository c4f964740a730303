//! Tests of `[upstreams.*]`.

use std::io::Write;
use std::path::Path as FsPath;
use std::time::Duration;

use super::super::tests::{errors_of, parse_ok};
use crate::config::{AuthStyle, Snapshot};

const OPENAI: &str = "[upstreams.openai]\nbase_url = \"https://api.openai.com\"\n";

fn key_file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(contents.as_bytes()).expect("write key file");
    file
}

#[test]
fn an_upstream_is_read_with_its_defaults() {
    let s = parse_ok(OPENAI);
    let u = s.upstream("openai").expect("defined");
    assert_eq!(u.name, "openai");
    assert_eq!(u.base_url.to_string(), "https://api.openai.com/");
    assert_eq!(u.path_prefix(), "");
    assert!(u.credential.is_none() && u.credential_source.is_none());
    assert_eq!(u.auth, AuthStyle::Bearer);
    assert_eq!(u.connect_timeout, Duration::from_secs(5));
    assert_eq!(u.timeout, Duration::from_secs(600));
    assert!(u.headers.is_empty() && u.ca_file.is_none());
    assert!(s.warnings.is_empty());
}

#[test]
fn every_upstream_setting_is_read() {
    let ca = key_file("-----BEGIN CERTIFICATE-----\n");
    let s = parse_ok(&format!(
        "[upstreams.azure]\nbase_url = \"https://example.net:8443/openai/\"\nauth = \"x-api-key\"\n\
         connect_timeout = \"2s\"\ntimeout = \"1m\"\nca_file = {:?}\n\
         headers = {{ \"X-Tenant\" = \"blue\", \"anthropic-version\" = \"2023-06-01\" }}\n",
        ca.path().display()
    ));
    let u = s.upstream("azure").expect("defined");
    assert_eq!(u.base_url.to_string(), "https://example.net:8443/openai");
    assert_eq!(u.path_prefix(), "/openai");
    assert_eq!(u.auth, AuthStyle::XApiKey);
    assert_eq!(u.connect_timeout, Duration::from_secs(2));
    assert_eq!(u.timeout, Duration::from_secs(60));
    assert_eq!(u.ca_file.as_deref(), Some(ca.path()));
    let headers: Vec<(&str, &[u8])> = u
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-tenant", &b"blue"[..]),
            ("anthropic-version", &b"2023-06-01"[..])
        ]
    );
    assert!(u.headers.iter().all(|(_, v)| !v.is_sensitive()));
}

#[test]
fn base_url_mistakes_are_reported() {
    let cases = [
        ("api.openai.com", "must start with http:// or https://"),
        (
            "ftp://example.com",
            "unsupported scheme \"ftp\" (use http or https)",
        ),
        ("https://example.com/v1?x=1", "must not have a query (?…)"),
        (
            "https://example.com/v1#top",
            "must not have a fragment (#…)",
        ),
        (
            "https://user:pw@example.com",
            "must not contain user:password@ (put the credential in api_key_env or api_key_file)",
        ),
        ("https://exa mple.com", "invalid URL"),
        ("/v1", "must start with http:// or https://"),
    ];
    for (url, want) in cases {
        let errors = errors_of(&format!("[upstreams.x]\nbase_url = {url:?}\n"));
        assert_eq!(errors.len(), 1, "{url}: {errors:?}");
        assert!(
            errors[0].starts_with("2:12: upstreams.x.base_url: "),
            "{url}: {}",
            errors[0]
        );
        assert!(errors[0].contains(want), "{url}: {}", errors[0]);
        assert!(!errors[0].contains("pw@"), "{}", errors[0]);
    }
    assert_eq!(
        errors_of("[upstreams.x]\nauth = \"Bearer\"\n"),
        [
            "1:1: upstreams.x.base_url: missing required key \"base_url\"",
            "2:8: upstreams.x.auth: invalid value \"Bearer\" (expected \"bearer\" or \"x-api-key\")",
        ]
    );
}

#[test]
fn api_key_file_is_read_and_trimmed() {
    let file = key_file("\n  sk-from-file-123 \n\n");
    let text = format!("{OPENAI}api_key_file = {:?}\n", file.path().display());
    let s = parse_ok(&text);
    let u = s.upstream("openai").expect("defined");
    assert_eq!(
        u.credential.as_ref().map(|c| c.expose()),
        Some("sk-from-file-123")
    );
    let source = format!("file:{}", file.path().display());
    assert_eq!(u.credential_source.as_deref(), Some(source.as_str()));
    assert!(s.warnings.is_empty());
}

#[test]
fn api_key_file_problems_are_errors_that_never_show_the_contents() {
    let empty = key_file(" \n\t\n");
    let two_lines = key_file("sk-secret-part-one\nsk-secret-part-two\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.key");
    let cases = [
        (empty.path().to_path_buf(), "is empty"),
        (
            two_lines.path().to_path_buf(),
            "cannot be sent in an HTTP header",
        ),
        (missing, "No such file or directory"),
        (dir.path().to_path_buf(), "cannot read api_key_file"),
    ];
    for (file, want) in cases {
        let text = format!("{OPENAI}api_key_file = {:?}\n", file.display());
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("3:16: upstreams.openai.api_key_file: "),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains(want), "{}", errors[0]);
        assert!(!errors[0].contains("sk-secret"), "{}", errors[0]);
    }
}

#[test]
fn an_unset_api_key_env_is_a_warning_not_an_error() {
    let text = format!("{OPENAI}api_key_env = \"OPENAI_API_KEY\"\n");
    let s = parse_ok(&text);
    let u = s.upstream("openai").expect("defined");
    assert!(u.credential.is_none());
    assert_eq!(u.credential_source.as_deref(), Some("env:OPENAI_API_KEY"));
    assert_eq!(
        s.warnings,
        [
            "upstream openai: environment variable OPENAI_API_KEY is not set; requests go upstream \
          without a credential"
        ]
    );
    // Blank counts as unset; a set variable is trimmed and used.
    let blank = Snapshot::parse_with_env(&text, FsPath::new("k.toml"), &|_| Some("  ".into()))
        .expect("valid");
    assert_eq!(blank.warnings.len(), 1);
    let set = Snapshot::parse_with_env(&text, FsPath::new("k.toml"), &|name| {
        (name == "OPENAI_API_KEY").then(|| "sk-env-1\n".into())
    })
    .expect("valid");
    let u = set.upstream("openai").expect("defined");
    assert_eq!(u.credential.as_ref().map(|c| c.expose()), Some("sk-env-1"));
    assert!(set.warnings.is_empty());
}

#[test]
fn credential_settings_conflict() {
    let file = key_file("sk-1");
    let errors = errors_of(&format!(
        "{OPENAI}api_key_env = \"K\"\napi_key_file = {:?}\n",
        file.path().display()
    ));
    assert_eq!(
        errors,
        ["4:16: upstreams.openai.api_key_file: set api_key_env or api_key_file, not both"]
    );
    assert_eq!(
        errors_of(&format!("{OPENAI}api_key_env = \"\"\n")),
        ["3:15: upstreams.openai.api_key_env: invalid environment variable name \"\""]
    );
}

#[test]
fn header_mistakes_are_reported_without_values() {
    let errors = errors_of(&format!(
        "{OPENAI}api_key_env = \"K\"\nheaders = {{ \"bad name\" = \"v\", host = \"h\", \
         Authorization = \"Bearer x\", \"x-a\" = \"sk-bad\\nvalue\", \"X-B\" = \"1\", \"x-b\" = \"2\" }}\n"
    ));
    assert_eq!(
        errors,
        [
            "4:13: upstreams.openai.headers.\"bad name\": invalid header name \"bad name\"",
            "4:31: upstreams.openai.headers.host: header \"host\" is managed by keygate and \
             cannot be set here",
            "4:43: upstreams.openai.headers.Authorization: header \"authorization\" would replace \
             the credential from api_key_env or api_key_file",
            "4:79: upstreams.openai.headers.x-a: invalid header value: use printable ASCII text \
             on one line",
            "4:109: upstreams.openai.headers.x-b: header \"x-b\" is set twice",
        ]
    );
}

#[test]
fn credential_like_headers_are_sensitive() {
    let s = parse_ok(&format!(
        "{OPENAI}headers = {{ \"x-goog-api-key\" = \"k\", \"authorization\" = \"Bearer local\" }}\n"
    ));
    let u = s.upstream("openai").expect("defined");
    assert_eq!(u.headers.len(), 2);
    assert!(u.headers.iter().all(|(_, v)| v.is_sensitive()));
}

#[test]
fn names_and_ids_are_checked() {
    let errors = errors_of(
        "[upstreams.\"open.ai\"]\nbase_url = \"https://a.example\"\n\
         [presets.\"my bot\"]\nupstream = \"open.ai\"\nmodel = \"m\"\nsystem_prompt = \"\"\n",
    );
    assert_eq!(
        errors,
        [
            "1:12: upstreams.\"open.ai\": invalid upstream name \"open.ai\": use 1 to 64 letters, \
             digits, '_' or '-'",
            "3:10: presets.\"my bot\": invalid preset id \"my bot\": use 1 to 64 letters, digits, \
             '_' or '-'",
        ]
    );
}
