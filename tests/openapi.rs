//! The admin API's OpenAPI document (`docs/admin-openapi.yaml`) held against the server itself.
//!
//! - The document lists exactly the router's operations: the list below, which mirrors the
//!   `match` of `src/admin/mod.rs`, and the paths of that module's doc table.
//! - Every documented operation is routed (a real call gets one of its documented answers, never
//!   the router's "no such endpoint"), and on a documented path no undocumented method is served.
//! - Real answers, from a scenario that walks keys and accounts through their whole life and
//!   calls every endpoint, have a status the document lists for that operation, its content
//!   type, and a body valid against its schema (JSON Schema 2020-12 with formats checked, so a
//!   `date-time` must be one). Every status the document lists was seen, but 403 (a refused
//!   peer: the test runs as an allowed uid) and 500; every error `code` a response lists was
//!   seen, and no other.
//! - Request bodies the server accepts are valid against the documented request schema, and
//!   bodies it refuses are refused by the schema too where the rule can be written in a schema
//!   (the cases that cannot are listed as such).
//! - The document uses only schema keywords that this check understands, so a misspelt keyword
//!   cannot silently weaken it.
//!
//! The tests named `bug_*` reproduce keygate bugs found by this check and by schemathesis
//! (`scripts/schemathesis.sh`); they fail until the server is fixed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use common::client::{self, post};
use common::upstream::FakeUpstream;
use common::{TestApp, upstream_config};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

const DOC: &str = include_str!("../docs/admin-openapi.yaml");
const ADMIN_MODULE: &str = include_str!("../src/admin/mod.rs");

/// The router of `src/admin/mod.rs` (`route`), as (method, path template). Kept by hand: a route
/// added there and not here, nor to the document, fails `the_document_lists_exactly_the_routes`
/// through the module's doc table.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/keys"),
    ("POST", "/api/keys"),
    ("GET", "/api/keys/{id}"),
    ("PATCH", "/api/keys/{id}"),
    ("DELETE", "/api/keys/{id}"),
    ("POST", "/api/keys/{id}/rotate"),
    ("POST", "/api/keys/{id}/primary"),
    ("GET", "/api/accounts"),
    ("POST", "/api/accounts"),
    ("GET", "/api/accounts/{name}"),
    ("PATCH", "/api/accounts/{name}"),
    ("DELETE", "/api/accounts/{name}"),
    ("GET", "/api/audit"),
    ("GET", "/api/usage"),
    ("POST", "/api/explain"),
    ("GET", "/api/status"),
    ("GET", "/api/config"),
    ("POST", "/api/config/reload"),
    ("GET", "/metrics"),
];

/// The methods probed on every documented path.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// The admin server's body limit (`MAX_BODY` in `src/admin/mod.rs`).
const MAX_BODY: usize = 1024 * 1024;

/// Keywords a schema in the document may use: what `jsonschema` checks, plus annotations.
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "oneOf",
    "anyOf",
    "allOf",
    "not",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "uniqueItems",
    "format",
    "description",
    "examples",
    "default",
];
/// Formats the validator checks (with `should_validate_formats`).
const FORMATS: &[&str] = &["date-time", "ipv4", "ipv6"];

// ---- the document ----------------------------------------------------------------------------

struct Doc {
    root: Value,
}

impl Doc {
    fn load() -> Doc {
        let root: Value = serde_saphyr::from_str(DOC).expect("docs/admin-openapi.yaml parses");
        assert_eq!(root["openapi"], "3.1.0");
        Doc { root }
    }

    /// Every (METHOD, path template) the document describes.
    fn operations(&self) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in self.root["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if method != "parameters" {
                    ops.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        let op = &self.root["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        op
    }

    fn pointer(&self, reference: &str) -> &Value {
        reference
            .strip_prefix('#')
            .and_then(|p| self.root.pointer(p))
            .unwrap_or_else(|| panic!("unresolved $ref {reference}"))
    }

    /// `value`, or what its `$ref` points at.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => self.resolve(self.pointer(r)),
            None => value,
        }
    }

    /// The statuses documented for an operation.
    fn statuses(&self, method: &str, template: &str) -> BTreeSet<u16> {
        self.operation(method, template)["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(|s| s.parse().expect("responses are keyed by status"))
            .collect()
    }

    /// The (media type, schema) of a documented response.
    fn response(&self, method: &str, template: &str, status: u16) -> Option<(&str, &Value)> {
        let response = self.operation(method, template)["responses"].get(status.to_string())?;
        let content = self.resolve(response)["content"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {template} {status} has no content"));
        assert_eq!(
            content.len(),
            1,
            "{method} {template} {status}: one media type"
        );
        let (media, body) = content.iter().next().expect("one");
        Some((media.as_str(), &body["schema"]))
    }

    fn request_schema(&self, method: &str, template: &str) -> Option<&Value> {
        self.operation(method, template)
            .get("requestBody")
            .map(|b| &b["content"]["application/json"]["schema"])
    }

    /// A validator for a schema of this document (its `$ref`s resolve in `components`).
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = Map::new();
        root.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        root.insert("components".into(), self.root["components"].clone());
        for (k, v) in schema.as_object().expect("a schema is an object") {
            root.insert(k.clone(), v.clone());
        }
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema}"))
    }

    /// The error `code`s a response schema allows (`enum` or `const`), if it narrows them.
    fn codes(&self, schema: &Value) -> Option<BTreeSet<String>> {
        let schema = self.resolve(schema);
        if let Some(code) = schema.pointer("/properties/error/properties/code") {
            if let Some(list) = code.get("enum").and_then(Value::as_array) {
                return Some(
                    list.iter()
                        .map(|c| c.as_str().unwrap().to_owned())
                        .collect(),
                );
            }
            if let Some(one) = code.get("const").and_then(Value::as_str) {
                return Some(BTreeSet::from([one.to_owned()]));
            }
        }
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|part| self.codes(part))
    }
}

/// Errors of `instance` against `validator`, as text (empty when valid).
fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

// ---- talking to the admin socket -------------------------------------------------------------

struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    allow: Option<String>,
    body: Value,
    text: String,
}

async fn send(socket: &Path, method: &str, path: &str, body: Option<Vec<u8>>) -> Reply {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect admin socket");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(path)
        .header("host", "localhost");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let resp = sender.send_request(req).await.expect("admin answers");
    let status = resp.status();
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &http::HeaderValue| v.to_str().unwrap_or("").to_owned())
    };
    let content_type = header(http::header::CONTENT_TYPE);
    let allow = header(http::header::ALLOW);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        content_type,
        allow,
        body,
        text,
    }
}

/// Calls the admin API and holds every answer to the document, keeping count of what was seen.
struct Checker<'a> {
    doc: &'a Doc,
    socket: &'a Path,
    /// Statuses seen per (METHOD, template).
    seen: Mutex<BTreeMap<(String, String), BTreeSet<u16>>>,
    /// Error codes seen per (METHOD, template, status).
    codes: Mutex<BTreeMap<(String, String, u16), BTreeSet<String>>>,
}

impl<'a> Checker<'a> {
    fn new(doc: &'a Doc, socket: &'a Path) -> Checker<'a> {
        Checker {
            doc,
            socket,
            seen: Mutex::default(),
            codes: Mutex::default(),
        }
    }

    /// A call with a JSON body (or none).
    async fn call(&self, method: &str, template: &str, path: &str, body: Option<Value>) -> Reply {
        let reply = self
            .raw(
                method,
                template,
                path,
                body.as_ref().map(|b| b.to_string().into()),
            )
            .await;
        if let (Some(body), Some(schema)) = (&body, self.doc.request_schema(method, template))
            && reply.status.is_success()
        {
            let problems = errors(&self.doc.validator(schema), body);
            assert!(
                problems.is_empty(),
                "{method} {path}: the server accepted a body the document refuses: {body}\n{problems:#?}"
            );
        }
        reply
    }

    /// A call that must answer `status`.
    async fn expect(
        &self,
        method: &str,
        template: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let reply = self.call(method, template, path, body).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{method} {path}: {}",
            reply.text
        );
        reply.body
    }

    /// A call with raw body bytes; the answer is checked against the document.
    async fn raw(&self, method: &str, template: &str, path: &str, body: Option<Vec<u8>>) -> Reply {
        let reply = send(self.socket, method, path, body).await;
        let status = reply.status.as_u16();
        let Some((media, schema)) = self.doc.response(method, template, status) else {
            panic!(
                "{method} {path} answered {status}, which the document does not list for \
                 {method} {template}: {}",
                reply.text
            );
        };
        assert_eq!(
            reply.content_type.as_deref(),
            Some(media),
            "{method} {path} {status}: content type"
        );
        if media == "application/json" {
            let problems = errors(&self.doc.validator(schema), &reply.body);
            assert!(
                problems.is_empty(),
                "{method} {path} {status}: the answer does not match the document:\n{}\n{problems:#?}",
                reply.text
            );
        }
        let op = (method.to_owned(), template.to_owned());
        self.seen
            .lock()
            .unwrap()
            .entry(op)
            .or_default()
            .insert(status);
        if let Some(code) = reply.body.pointer("/error/code").and_then(Value::as_str) {
            self.codes
                .lock()
                .unwrap()
                .entry((method.to_owned(), template.to_owned(), status))
                .or_default()
                .insert(code.to_owned());
        }
        reply
    }
}

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn the_document_lists_exactly_the_routes() {
    let doc = Doc::load();
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(routes.len(), ROUTES.len(), "a route is listed twice");
    let documented = doc.operations();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routed but not documented: {missing:?}; documented but not routed: {extra:?}"
    );

    // The paths of the module's doc table (`//! | METHODS | `/path` ... | handler |`).
    let mut table = BTreeSet::new();
    for line in ADMIN_MODULE.lines().filter(|l| l.starts_with("//! | ")) {
        let cells: Vec<&str> = line.split('|').collect();
        let Some(paths) = cells.get(2) else { continue };
        for (i, part) in paths.split('`').enumerate() {
            if i % 2 == 1 && part.starts_with('/') {
                table.insert(part.to_owned());
            }
        }
    }
    let documented_paths: BTreeSet<String> = documented.into_iter().map(|(_, p)| p).collect();
    assert_eq!(
        table, documented_paths,
        "the paths of src/admin/mod.rs's route table and of the document differ"
    );
}

#[test]
fn the_document_uses_only_keywords_the_check_understands() {
    fn lint(schema: &Value, at: &str, problems: &mut Vec<String>) {
        let Some(object) = schema.as_object() else {
            problems.push(format!("{at}: a schema must be an object"));
            return;
        };
        for (key, value) in object {
            let here = format!("{at}/{key}");
            if !KEYWORDS.contains(&key.as_str()) {
                problems.push(format!("{here}: unknown keyword"));
            }
            match key.as_str() {
                "properties" => {
                    for (name, sub) in value.as_object().into_iter().flatten() {
                        lint(sub, &format!("{here}/{name}"), problems);
                    }
                }
                "items" | "not" => lint(value, &here, problems),
                "additionalProperties" if value.is_object() => lint(value, &here, problems),
                "oneOf" | "anyOf" | "allOf" => {
                    for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                        lint(sub, &format!("{here}/{i}"), problems);
                    }
                }
                "format" if !FORMATS.contains(&value.as_str().unwrap_or("")) => {
                    problems.push(format!("{here}: format the check does not validate"));
                }
                _ => {}
            }
        }
    }
    fn walk(value: &Value, at: &str, problems: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, sub) in map {
                    let here = format!("{at}/{key}");
                    if key == "schema" {
                        lint(sub, &here, problems);
                    } else if here == "/components/schemas" {
                        for (name, schema) in sub.as_object().expect("schemas") {
                            lint(schema, &format!("{here}/{name}"), problems);
                        }
                    } else {
                        walk(sub, &here, problems);
                    }
                }
            }
            Value::Array(list) => {
                for (i, sub) in list.iter().enumerate() {
                    walk(sub, &format!("{at}/{i}"), problems);
                }
            }
            _ => {}
        }
    }
    let doc = Doc::load();
    let mut problems = Vec::new();
    walk(&doc.root, "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");

    // Every schema compiles (all `$ref`s resolve), and operation ids are unique.
    let mut ids = BTreeSet::new();
    for (method, template) in doc.operations() {
        let op = doc.operation(&method, &template);
        assert!(
            ids.insert(op["operationId"].as_str().expect("operationId")),
            "duplicate operationId on {method} {template}"
        );
        for status in doc.statuses(&method, &template) {
            let (_, schema) = doc.response(&method, &template, status).unwrap();
            doc.validator(schema);
        }
        if let Some(schema) = doc.request_schema(&method, &template) {
            doc.validator(schema);
        }
    }
}

/// A config with every part the config view shows: upstreams with headers, routes with methods
/// and models, a preset, default limits, and a TLS listener beside the plain one.
fn full_config(upstream: &FakeUpstream, certs: &common::certs::TestCerts) -> String {
    format!(
        "{upstreams}\n\
         [[routes]]\npath = \"/v2/\"\nmethods = [\"POST\"]\nupstream = \"openai\"\nscope = \"write\"\n\
         models = [\"gpt-*\"]\n\n\
         [presets.bot]\nupstream = \"openai\"\nmodel = \"gpt-4o-mini\"\nsystem_prompt = \"Be brief.\"\n\n\
         [limits]\nrate_limit = {{ requests = 600, interval = \"60s\" }}\n\
         token_limit = {{ tokens = 100000, interval = \"60s\" }}\n\n\
         [[listeners]]\naddr = \"127.0.0.1:0\"\n\n\
         [[listeners]]\naddr = \"127.0.0.2:0\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n",
        upstreams = upstream_config(upstream.addr),
        cert = certs.cert.display(),
        key = certs.key.display(),
    )
}

const K: &str = "/api/keys";
const KID: &str = "/api/keys/{id}";
const ROTATE: &str = "/api/keys/{id}/rotate";
const PRIMARY: &str = "/api/keys/{id}/primary";
const A: &str = "/api/accounts";
const AN: &str = "/api/accounts/{name}";
const EXPLAIN: &str = "/api/explain";
const NO_KEY: &str = "key_0000000000000000";

/// Bad values of the key fields, refused by create and by update alike: (body fields, code,
/// whether the document's request schema refuses them too; `false` marks rules a schema cannot
/// state: an instant in the past, a zero duration, CIDR and host syntax, a size in bytes).
#[rustfmt::skip]
const BAD_KEY_FIELDS: &[(&str, &str, bool)] = &[
    (r#"{"nmae": "x"}"#, "unknown_field", true),
    (r#"{"name": ""}"#, "invalid_name", true),
    (r#"{"name": "a\u0007b"}"#, "invalid_name", true),
    (r#"{"account": "a b"}"#, "invalid_account", true),
    (r#"{"scopes": ["root"]}"#, "invalid_scopes", true),
    (r#"{"scopes": []}"#, "invalid_scopes", true),
    (r#"{"scopes": "chat"}"#, "invalid_scopes", true),
    (r#"{"expires_at": "soon"}"#, "invalid_expires_at", true),
    (r#"{"expires_at": "2001-01-01T00:00:00Z"}"#, "invalid_expires_at", false),
    (r#"{"expires_at": "2099-01-01T00:00:00Z", "expires_in": "1d"}"#, "invalid_expires_at", true),
    (r#"{"expires_at": null, "expires_in": "1d"}"#, "invalid_expires_at", true),
    (r#"{"expires_in": "90"}"#, "invalid_expires_in", true),
    (r#"{"expires_in": "0s"}"#, "invalid_expires_in", false),
    (r#"{"allowed_origins": ["http://"]}"#, "invalid_allowed_origins", false),
    (r#"{"allowed_ips": ["10.0.0.0/33"]}"#, "invalid_allowed_ips", false),
    (r#"{"allowed_models": [""]}"#, "invalid_allowed_models", true),
    (r#"{"rate_limit": {"requests": 0, "interval": "1s"}}"#, "invalid_rate_limit", true),
    (r#"{"token_limit": {"tokens": 1, "interval": "0s"}}"#, "invalid_token_limit", false),
    (r#"{"token_limit": {"tokens": 1}}"#, "invalid_token_limit", true),
    (r#"{"quota": {"period": "day"}}"#, "invalid_quota", true),
    (r#"{"quota": {"requests": 1, "period": "week"}}"#, "invalid_quota", true),
    (r#"{"metadata": [1]}"#, "invalid_metadata", true),
];

/// Other refused bodies: (method, template, body, code, whether the schema refuses it too).
/// `$KEY` stands for a real key id.
#[rustfmt::skip]
const BAD_BODIES: &[(&str, &str, &str, &str, bool)] = &[
    ("POST", K, "[1]", "invalid_body", true),
    ("POST", K, "{}", "invalid_name", true),
    ("PATCH", KID, r#""x""#, "invalid_body", true),
    ("PATCH", KID, r#"{"is_active": "yes"}"#, "invalid_is_active", true),
    ("POST", ROTATE, "[]", "invalid_body", true),
    ("POST", ROTATE, r#"{"grace": "91d"}"#, "invalid_grace", false),
    ("POST", ROTATE, r#"{"grace": 5}"#, "invalid_grace", true),
    ("POST", ROTATE, r#"{"graec": "1h"}"#, "unknown_field", true),
    ("POST", A, r#""x""#, "invalid_body", true),
    ("POST", A, "{}", "invalid_name", true),
    ("POST", A, r#"{"name": "a b"}"#, "invalid_name", true),
    ("POST", A, r#"{"name": "b", "max_active_keys": 0}"#, "invalid_max_active_keys", true),
    ("POST", A, r#"{"name": "b", "rate_limit": {"requests": 1}}"#, "invalid_rate_limit", true),
    ("POST", A, r#"{"name": "b", "token_limit": "x"}"#, "invalid_token_limit", true),
    ("POST", A, r#"{"name": "b", "quota": {"tokens": 1, "period": "week"}}"#, "invalid_quota", true),
    ("POST", A, r#"{"name": "b", "nmae": 1}"#, "unknown_field", true),
    ("PATCH", AN, "1", "invalid_body", true),
    ("PATCH", AN, r#"{"max_active_keys": -1}"#, "invalid_max_active_keys", true),
    ("PATCH", AN, r#"{"rate_limit": {"requests": 1, "interval": "1 s"}}"#, "invalid_rate_limit", true),
    ("PATCH", AN, r#"{"token_limit": {"tokens": 0, "interval": "1s"}}"#, "invalid_token_limit", true),
    ("PATCH", AN, r#"{"quota": {"requests": null, "period": "day"}}"#, "invalid_quota", true),
    ("PATCH", AN, r#"{"name": "renamed"}"#, "unknown_field", true),
    ("POST", EXPLAIN, "[]", "invalid_body", true),
    ("POST", EXPLAIN, r#"{"path": "/v1/x"}"#, "invalid_key_id", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY", "path": "/", "method": "GE T"}"#, "invalid_method", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY", "path": "v1"}"#, "invalid_path", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY"}"#, "invalid_path", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY", "path": "/", "model": 1}"#, "invalid_model", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY", "path": "/", "assistant_id": 1}"#, "invalid_assistant_id", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY", "path": "/", "origin": []}"#, "invalid_origin", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY", "path": "/", "ip": "nope"}"#, "invalid_ip", true),
    ("POST", EXPLAIN, r#"{"key_id": "$KEY", "path": "/", "ipp": "1.2.3.4"}"#, "unknown_field", true),
];

/// A refused body: (method, template, path, body, code, whether the schema refuses it too).
type Refused = (
    &'static str,
    &'static str,
    String,
    Value,
    &'static str,
    bool,
);

fn refused_bodies(key: &str) -> Vec<Refused> {
    let path = |template: &str| template.replace("{id}", key).replace("{name}", "acme");
    let parse = |text: &str| -> Value {
        serde_json::from_str(&text.replace("$KEY", key)).expect("a test body is JSON")
    };
    let mut cases: Vec<_> = BAD_BODIES
        .iter()
        .map(|&(method, template, body, code, refuses)| {
            (method, template, path(template), parse(body), code, refuses)
        })
        .collect();
    let mut big = json!({"metadata": {"k": "x".repeat(5000)}});
    for &(fields, code, refuses) in BAD_KEY_FIELDS {
        let fields = parse(fields);
        let mut create = json!({"name": "x"});
        create
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        cases.push(("POST", K, path(K), create, code, refuses));
        cases.push(("PATCH", KID, path(KID), fields, code, refuses));
    }
    cases.push((
        "PATCH",
        KID,
        path(KID),
        big.clone(),
        "invalid_metadata",
        false,
    ));
    big["name"] = "x".into();
    cases.push(("POST", K, path(K), big, "invalid_metadata", false));
    cases
}

/// Refused queries: (template, path with query, code).
const REFUSED_QUERIES: &[(&str, &str, &str)] = &[
    (K, "/api/keys?account=a%20b", "invalid_account"),
    (
        K,
        "/api/keys?include_inactive=maybe",
        "invalid_include_inactive",
    ),
    (K, "/api/keys?limit=0", "invalid_limit"),
    (K, "/api/keys?limit=1001", "invalid_limit"),
    (K, "/api/keys?before=nope", "invalid_before"),
    ("/api/usage", "/api/usage", "invalid_key"),
    ("/api/usage", "/api/usage?key=k&account=a", "invalid_key"),
    (
        "/api/usage",
        "/api/usage?account=acme&granularity=week",
        "invalid_granularity",
    ),
    (
        "/api/usage",
        "/api/usage?account=acme&to=soon",
        "invalid_to",
    ),
    (
        "/api/usage",
        "/api/usage?account=acme&from=yesterday",
        "invalid_from",
    ),
    (
        "/api/usage",
        "/api/usage?account=acme&from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "invalid_from",
    ),
    (
        "/api/usage",
        "/api/usage?account=acme&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "invalid_from",
    ),
    ("/api/audit", "/api/audit?limit=0", "invalid_limit"),
    ("/api/audit", "/api/audit?before=x", "invalid_before"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_answers_match_the_document() {
    let doc = Doc::load();
    let upstream = FakeUpstream::start().await;
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = common::certs::make(certs_dir.path(), "admin-openapi");
    let app = TestApp::start(&full_config(&upstream, &certs)).await;
    let c = Checker::new(&doc, &app.socket);

    // A fresh server.
    for path in ["/api/status", "/api/config", "/metrics", "/api/audit", A, K] {
        c.expect("GET", path, path, None, 200).await;
    }

    // Accounts and keys through their life.
    let acme = json!({"name": "acme", "max_active_keys": 2,
        "rate_limit": {"requests": 1000, "interval": "60s"},
        "token_limit": {"tokens": 1000000, "interval": "1h"},
        "quota": {"tokens": 5000000, "period": "month"}});
    c.expect("POST", A, A, Some(acme), 201).await;
    c.expect("POST", A, A, Some(json!({"name": "acme"})), 409)
        .await;
    let full = json!({"name": "full", "account": "acme", "scopes": ["chat", "read", "write"],
        "expires_in": "30d", "allowed_origins": ["https://App.example.com", "*.example.org"],
        "allowed_ips": ["127.0.0.1", "10.0.0.0/8"], "allowed_models": ["gpt-*"],
        "rate_limit": {"requests": 100, "interval": "60s"},
        "token_limit": {"tokens": 50000, "interval": "1m"},
        "quota": {"requests": 1000, "tokens": null, "period": "day"},
        "metadata": {"team": "a", "n": [1, 2]}});
    let k1 = c.expect("POST", K, K, Some(full), 201).await;
    let (k1_id, k1_secret) = (
        k1["id"].as_str().unwrap().to_owned(),
        k1["key"].as_str().unwrap().to_owned(),
    );
    let k2 = c
        .expect(
            "POST",
            K,
            K,
            Some(
                json!({"name": "second", "account": "acme", "expires_at": "2099-01-01T00:00:00Z"}),
            ),
            201,
        )
        .await;
    let k2_id = k2["id"].as_str().unwrap().to_owned();
    let over = json!({"name": "third", "account": "acme"});
    c.expect("POST", K, K, Some(over), 409).await;
    c.expect("POST", K, K, Some(json!({"name": "plain"})), 201)
        .await;
    c.expect("POST", K, K, None, 400).await;

    let kp = |id: &str| format!("/api/keys/{id}");
    for path in [
        "/api/keys?account=acme&limit=1".to_owned(),
        format!("/api/keys?before={k2_id}&include_inactive=true"),
        "/api/keys?include_inactive=1&limit=1000".to_owned(),
    ] {
        c.expect("GET", K, &path, None, 200).await;
    }
    c.expect("GET", KID, &kp(&k1_id), None, 200).await;
    c.expect("GET", KID, &kp(NO_KEY), None, 404).await;
    c.expect("GET", KID, "/api/keys/nonsense", None, 404).await;

    // Traffic, for usage buckets, `last_used_at` and usage totals.
    let sent = common::client::send(
        &client::client(),
        post(
            &app.url("/v1/chat/completions"),
            Some(&k1_secret),
            &json!({"model": "gpt-4o", "messages": []}),
        ),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let buckets = c
            .expect(
                "GET",
                "/api/usage",
                &format!("/api/usage?key={k1_id}"),
                None,
                200,
            )
            .await;
        if buckets.as_array().is_some_and(|b| !b.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no usage bucket");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let from = keygate::clock::rfc3339(now_ms - 7 * 86_400_000);
    let to = keygate::clock::rfc3339(now_ms + 86_400_000);
    for path in [
        "/api/usage?account=acme&granularity=day".to_owned(),
        format!("/api/usage?key={k1_id}&from={from}&to={to}&granularity=day"),
        format!("/api/usage?key={NO_KEY}"),
        "/api/usage?account=nobody".to_owned(),
    ] {
        let reply = c.call("GET", "/api/usage", &path, None).await;
        assert!(matches!(reply.status.as_u16(), 200 | 404), "{path}");
    }
    let key = c.expect("GET", KID, &kp(&k1_id), None, 200).await;
    assert!(key["last_used_at"].is_string(), "{key}");

    // Explain: allowed (with every limit layer shown), and denied at each stage.
    let explain = EXPLAIN;
    let allowed = c
        .expect(
            "POST",
            explain,
            explain,
            Some(
                json!({"key_id": k1_id, "method": "post", "path": "/v1/chat/completions",
                "model": "gpt-4o", "ip": "127.0.0.1", "origin": "https://app.example.com"}),
            ),
            200,
        )
        .await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    for field in [
        "model",
        "rate_limit_requests",
        "rate_limit_tokens",
        "quota_key",
        "quota_account",
    ] {
        assert!(allowed.get(field).is_some(), "{field} in {allowed}");
    }
    for body in [
        json!({"key_id": NO_KEY, "path": "/v1/chat/completions"}),
        json!({"key_id": k1_id, "path": "/nowhere"}),
        json!({"key_id": k1_id, "path": "/v1/chat/completions", "model": "claude-3"}),
        json!({"key_id": k1_id, "path": "/v1/messages", "ip": "::1"}),
        json!({"key_id": k1_id, "path": "/v1/chat/completions", "origin": "https://evil.test"}),
        json!({"key_id": k1_id, "path": "/v1/chat/completions", "assistant_id": "bot"}),
        json!({"key_id": k1_id, "path": "/v1/chat/completions", "assistant_id": "nobody"}),
        json!({"key_id": k1_id, "method": null, "path": "/v1/models", "model": null}),
    ] {
        c.expect("POST", explain, explain, Some(body), 200).await;
    }

    // Updates: the 409s of update and primary, re-enabling over the limit.
    let patch = json!({"name": "renamed", "metadata": {"x": 1}, "rate_limit": null,
        "expires_at": null, "allowed_ips": [], "scopes": ["chat"]});
    c.expect("PATCH", KID, &kp(&k1_id), Some(patch), 200).await;
    c.expect(
        "PATCH",
        KID,
        &kp(&k2_id),
        Some(json!({"is_active": false})),
        200,
    )
    .await;
    let primary = |id: &str| format!("/api/keys/{id}/primary");
    c.expect("POST", PRIMARY, &primary(&k2_id), None, 409).await;
    let k4 = c
        .expect(
            "POST",
            K,
            K,
            Some(json!({"name": "fourth", "account": "acme"})),
            201,
        )
        .await;
    let k4_id = k4["id"].as_str().unwrap().to_owned();
    c.expect(
        "PATCH",
        KID,
        &kp(&k2_id),
        Some(json!({"is_active": true})),
        409,
    )
    .await;
    c.expect("POST", PRIMARY, &primary(&k4_id), None, 200).await;
    c.expect("POST", PRIMARY, &primary(NO_KEY), None, 404).await;
    c.expect("PATCH", KID, &kp(NO_KEY), Some(json!({})), 404)
        .await;
    c.expect("PATCH", KID, &kp(&k4_id), None, 200).await;
    let moved = json!({"account": "elsewhere", "expires_in": "1h"});
    c.expect("PATCH", KID, &kp(&k4_id), Some(moved), 200).await;

    // Rotation.
    let rotate = |id: &str| format!("/api/keys/{id}/rotate");
    let rotated = c
        .expect(
            "POST",
            ROTATE,
            &rotate(&k1_id),
            Some(json!({"grace": "1h"})),
            200,
        )
        .await;
    assert_ne!(rotated["key"], k1_secret.as_str());
    c.expect("POST", ROTATE, &rotate(&k1_id), None, 200).await;
    c.expect(
        "POST",
        ROTATE,
        &rotate(&k1_id),
        Some(json!({"grace": null})),
        200,
    )
    .await;
    c.expect("POST", ROTATE, &rotate(NO_KEY), None, 404).await;

    // Revocation is final.
    c.expect("DELETE", KID, &kp(&k2_id), None, 200).await;
    c.expect("DELETE", KID, &kp(&k2_id), None, 200).await;
    c.expect("DELETE", KID, &kp(NO_KEY), None, 404).await;
    c.expect("PATCH", KID, &kp(&k2_id), Some(json!({"name": "x"})), 409)
        .await;
    c.expect("POST", ROTATE, &rotate(&k2_id), None, 409).await;
    c.expect("POST", PRIMARY, &primary(&k2_id), None, 409).await;
    let revoked = c.expect("GET", KID, &kp(&k2_id), None, 200).await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let body = json!({"key_id": k2_id, "path": "/v1/chat/completions"});
    c.expect("POST", explain, explain, Some(body), 200).await;
    c.expect("GET", K, "/api/keys?include_inactive=true", None, 200)
        .await;

    // Accounts.
    let an = |name: &str| format!("/api/accounts/{name}");
    c.expect("GET", A, A, None, 200).await;
    c.expect("GET", AN, &an("acme"), None, 200).await;
    c.expect("GET", AN, &an("nobody"), None, 404).await;
    let clear = json!({"max_active_keys": null, "quota": null, "token_limit": null});
    c.expect("PATCH", AN, &an("acme"), Some(clear), 200).await;
    let set = json!({"max_active_keys": 5, "quota": {"requests": 10, "period": "total"}});
    c.expect("PATCH", AN, &an("acme"), Some(set), 200).await;
    c.expect("PATCH", AN, &an("nobody"), Some(json!({})), 404)
        .await;
    c.expect("DELETE", AN, &an("acme"), None, 409).await;
    c.expect("POST", A, A, Some(json!({"name": "empty.one@x"})), 201)
        .await;
    c.expect("DELETE", AN, &an("empty.one@x"), None, 200).await;
    c.expect("DELETE", AN, &an("empty.one@x"), None, 404).await;

    // Reload: accepted, refused (422), accepted again.
    let reload = "/api/config/reload";
    c.expect("POST", reload, reload, None, 200).await;
    let original = std::fs::read_to_string(&app.config_path).unwrap();
    std::fs::write(&app.config_path, format!("{original}\n[nonsense]\n")).unwrap();
    c.expect("POST", reload, reload, None, 422).await;
    std::fs::write(&app.config_path, &original).unwrap();
    c.expect("POST", reload, reload, None, 200).await;
    for path in ["/api/status", "/api/config", "/metrics"] {
        let reply = c.expect("GET", path, path, None, 200).await;
        if path != "/metrics" {
            assert!(reply["last_reload"].is_object(), "{reply}");
        }
    }

    // The audit log, in pages, with every action the document names.
    let audit = c
        .expect("GET", "/api/audit", "/api/audit?limit=1000", None, 200)
        .await;
    let seqs: Vec<u64> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let middle = seqs[seqs.len() / 2];
    let page = format!("/api/audit?limit=2&before={middle}");
    c.expect("GET", "/api/audit", &page, None, 200).await;
    let actions: BTreeSet<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    let documented: BTreeSet<&str> = doc.root["components"]["schemas"]["AuditEntry"]["properties"]
        ["action"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(actions, documented, "audit actions seen vs documented");

    // Every documented 400 code, with the request schema's verdict.
    for (method, template, path, body, code, schema_refuses) in refused_bodies(&k1_id) {
        let reply = c.call(method, template, &path, Some(body.clone())).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{method} {path} {body}"
        );
        assert_eq!(reply.body["error"]["code"], code, "{method} {path} {body}");
        let schema = doc
            .request_schema(method, template)
            .expect("request schema");
        let refused = !errors(&doc.validator(schema), &body).is_empty();
        assert_eq!(
            refused,
            schema_refuses,
            "{method} {template} {body}: the document's schema {} it",
            if refused { "refuses" } else { "accepts" }
        );
    }
    for (method, template, path) in [("POST", K, K), ("PATCH", KID, &*kp(&k1_id))] {
        let reply = c.raw(method, template, path, Some(b"{".to_vec())).await;
        assert_eq!(reply.body["error"]["code"], "invalid_body");
    }
    for (template, path, code) in REFUSED_QUERIES {
        let reply = c.call("GET", template, path, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(reply.body["error"]["code"], *code, "{path}");
    }

    // A body over the limit, on every operation.
    let paths = BTreeMap::from([
        (KID, kp(&k1_id)),
        (ROTATE, rotate(&k1_id)),
        (PRIMARY, primary(&k1_id)),
        (AN, an("acme")),
    ]);
    for (method, template) in doc.operations() {
        let path = paths
            .get(template.as_str())
            .cloned()
            .unwrap_or(template.clone());
        let reply = c
            .raw(&method, &template, &path, Some(vec![b' '; MAX_BODY + 1]))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::PAYLOAD_TOO_LARGE,
            "{method} {path}"
        );
    }

    // What was seen covers what is documented.
    let seen = c.seen.lock().unwrap().clone();
    let codes = c.codes.lock().unwrap().clone();
    let mut unseen = Vec::new();
    for (method, template) in doc.operations() {
        let op = (method.clone(), template.clone());
        for status in doc.statuses(&method, &template) {
            if matches!(status, 403 | 500) {
                continue;
            }
            if !seen.get(&op).is_some_and(|s| s.contains(&status)) {
                unseen.push(format!("{method} {template} {status}"));
                continue;
            }
            let (_, schema) = doc.response(&method, &template, status).unwrap();
            if let Some(documented) = doc.codes(schema) {
                let got = codes
                    .get(&(method.clone(), template.clone(), status))
                    .cloned()
                    .unwrap_or_default();
                if got != documented {
                    unseen.push(format!(
                        "{method} {template} {status}: codes seen {got:?}, documented {documented:?}"
                    ));
                }
            }
        }
    }
    assert!(
        unseen.is_empty(),
        "documented but never seen:\n{}",
        unseen.join("\n")
    );
}

/// A concrete path for a template (ids need not exist).
fn concrete(template: &str) -> String {
    template.replace("{id}", NO_KEY).replace("{name}", "nobody")
}

#[tokio::test]
async fn every_operation_is_routed_and_no_other_method_is_served() {
    let doc = Doc::load();
    let app = TestApp::start("").await;
    let ops = doc.operations();
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for template in paths {
        let path = concrete(template);
        for method in METHODS {
            let reply = send(&app.socket, method, &path, None).await;
            let documented = ops.contains(&(method.to_owned(), template.clone()));
            let message = reply.body["error"]["message"].as_str().unwrap_or("");
            if documented {
                assert!(
                    doc.statuses(method, template)
                        .contains(&reply.status.as_u16()),
                    "{method} {path}: {} is not documented: {}",
                    reply.status,
                    reply.text
                );
                assert!(
                    !message.starts_with("no such endpoint"),
                    "{method} {path} is documented but not routed"
                );
            } else {
                assert!(
                    reply.status.is_client_error(),
                    "{method} {path} is served ({}) but not documented",
                    reply.status
                );
                let code = reply.body["error"]["code"].as_str();
                assert!(
                    matches!(code, Some("method_not_allowed" | "not_found")) || method == "HEAD",
                    "{method} {path}: {}",
                    reply.text
                );
            }
        }
    }
}

// ---- regressions: keygate bugs found by this check and by schemathesis, now fixed ----

/// RFC 9110 §15.5.6: a 405 answer MUST carry `Allow` with the methods the resource has.
#[tokio::test]
async fn regression_405_answers_lacked_an_allow_header() {
    let doc = Doc::load();
    let app = TestApp::start("").await;
    let mut wrong = Vec::new();
    let ops = doc.operations();
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for template in paths {
        let allowed: BTreeSet<&str> = ops
            .iter()
            .filter(|(_, p)| p == template)
            .map(|(m, _)| m.as_str())
            .collect();
        let reply = send(&app.socket, "PUT", &concrete(template), None).await;
        let allow: BTreeSet<&str> = reply
            .allow
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .collect();
        if reply.status != StatusCode::METHOD_NOT_ALLOWED || allow != allowed {
            wrong.push(format!(
                "PUT {template}: {} allow={:?}, expected 405 allow={allowed:?}",
                reply.status, reply.allow
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `/metrics` is missing from the router's list of paths that answer 405 to other methods, so
/// `POST /metrics` says "no such endpoint" (404) while `POST /api/status` says 405.
#[tokio::test]
async fn regression_other_methods_on_metrics_answered_404_not_405() {
    let app = TestApp::start("").await;
    let reply = send(&app.socket, "POST", "/metrics", None).await;
    assert_eq!(
        reply.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "POST /metrics: {}",
        reply.text
    );
}

/// `expires_in` is added to now with a saturating add, and an instant past what a timestamp can
/// hold (year 9999) is accepted and then shown as `"expires_at": "invalid-timestamp"` in every
/// key view. It should be refused: 400 `invalid_expires_in`.
#[tokio::test]
async fn regression_a_huge_expires_in_was_accepted_and_shown_as_invalid_timestamp() {
    let app = TestApp::start("").await;
    let body = json!({"name": "far", "expires_in": "7570319326d"});
    let reply = send(
        &app.socket,
        "POST",
        "/api/keys",
        Some(body.to_string().into()),
    )
    .await;
    assert_eq!(
        (reply.status, reply.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_expires_in")),
        "{}",
        reply.text
    );
}

/// A rate limit whose interval is 2^64 ns or more (`213504d` and up) is accepted, and then
/// limits nothing: `Params::interval_ns` clamps to `u64::MAX` and `now + interval` saturates
/// (src/limits/bucket.rs), so every `take` succeeds, while `explain` shows the fresh key as
/// already over its limit. Such an interval should be refused (400 `invalid_rate_limit`), or
/// enforced. The same holds for `token_limit` and for accounts' limits.
#[tokio::test]
async fn regression_a_rate_limit_interval_of_213504_days_or_more_limited_nothing() {
    let upstream = FakeUpstream::start().await;
    let app = TestApp::start(&upstream_config(upstream.addr)).await;
    let body = json!({"name": "slow", "rate_limit": {"requests": 1, "interval": "213504d"}});
    let created = send(
        &app.socket,
        "POST",
        "/api/keys",
        Some(body.to_string().into()),
    )
    .await;
    if created.status == StatusCode::BAD_REQUEST {
        assert_eq!(created.body["error"]["code"], "invalid_rate_limit");
        return;
    }
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let (id, secret) = (
        created.body["id"].as_str().unwrap(),
        created.body["key"].as_str().unwrap(),
    );
    let question = json!({"key_id": id, "path": "/v1/chat/completions"});
    let explained = send(
        &app.socket,
        "POST",
        EXPLAIN,
        Some(question.to_string().into()),
    )
    .await;
    let http = client::client();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let chat = json!({"model": "gpt-4o", "messages": []});
        let url = app.url("/v1/chat/completions");
        let answer = common::client::send(&http, post(&url, Some(secret), &chat)).await;
        statuses.push(answer.status.as_u16());
    }
    assert_eq!(
        (&explained.body["allowed"], statuses),
        (&json!(true), vec![200, 429, 429]),
        "explain on the fresh key: {}",
        explained.text
    );
}

/// The account alphabet allows `.` and `..` as names, but clients remove dot segments from
/// URLs (RFC 3986 §5.2.4: curl, Python requests, browsers), so `/api/accounts/..` becomes
/// `/api/` before it is sent, and the server does not decode `%2E%2E` either: such an account
/// can be created (explicitly, or by a key naming it) but not read, changed or deleted by
/// ordinary clients. Refuse these names (400 `invalid_name`), or decode percent-encoded path
/// segments.
#[tokio::test]
async fn regression_accounts_named_dot_or_dot_dot_could_not_be_addressed() {
    let app = TestApp::start("").await;
    for (name, encoded) in [(".", "%2E"), ("..", "%2E%2E")] {
        let body = json!({ "name": name });
        let created = send(&app.socket, "POST", A, Some(body.to_string().into())).await;
        if created.status == StatusCode::BAD_REQUEST {
            assert_eq!(created.body["error"]["code"], "invalid_name");
            continue;
        }
        let path = format!("/api/accounts/{encoded}");
        let read = send(&app.socket, "GET", &path, None).await;
        assert_eq!(
            read.status,
            StatusCode::OK,
            "account {name:?} was created ({}) but GET {path} answers {}",
            created.status,
            read.text
        );
    }
}
