//! The admin-socket client: HTTP/1.1 with JSON bodies over a Unix stream.
//!
//! One connection per request, driven by hyper's `client::conn::http1` handshake on a
//! `tokio::net::UnixStream`; commands make one or two requests, so pooling would buy nothing.
//! A connection that cannot be made is [`CliError::Connect`] (exit 3); a non-2xx answer becomes
//! [`CliError::Server`] with the message and code of the server's error body (exit 1).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UnixStream;

use super::error::CliError;
use super::socket::Socket;
use crate::admin::api::ErrorBody;

/// How long one admin request may take, end to end. Admin calls are small and each is one
/// redb transaction; a minute means the server is stuck, and a script should not hang forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read: a full page of 1000 key objects is a few MiB.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

/// A client of one admin socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: Socket,
}

/// A whole answer: its status and its body, already read.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, CliError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            CliError::Protocol(format!(
                "the body is not JSON ({e}): {}",
                snippet(&self.body)
            ))
        })
    }
}

impl Client {
    pub fn new(socket: Socket) -> Client {
        Client { socket }
    }

    /// The socket path, for messages.
    pub fn path(&self) -> &Path {
        &self.socket.path
    }

    /// `GET path`, JSON answer; non-2xx is an error.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.call(Method::DELETE, path, None).await
    }

    /// Sends a request and returns its JSON answer; a non-2xx status is [`CliError::Server`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let answer = self.send(method, path, body).await?;
        if !answer.status.is_success() {
            return Err(server_error(&answer));
        }
        answer.json()
    }

    /// Sends a request and returns the answer whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CliError> {
        let stream = UnixStream::connect(&self.socket.path)
            .await
            .map_err(|source| CliError::Connect {
                path: self.socket.path.clone(),
                origin: self.socket.origin.clone(),
                source,
            })?;
        let request = build_request(method, path, body)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(stream, request)).await {
            Ok(result) => result,
            Err(_) => Err(CliError::Exchange(format!(
                "no answer from {} within {}s",
                self.socket.path.display(),
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }
}

fn build_request(
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Result<Request<Full<Bytes>>, CliError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        // HTTP/1.1 requires a Host; the socket has no name, so any will do.
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("keygate-cli/", env!("CARGO_PKG_VERSION")),
        );
    let bytes = match body {
        Some(value) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Bytes::from(value.to_string())
        }
        None => Bytes::new(),
    };
    builder
        .body(Full::new(bytes))
        .map_err(|e| CliError::Exchange(format!("cannot build the request for {path:?}: {e}")))
}

async fn exchange(stream: UnixStream, request: Request<Full<Bytes>>) -> Result<Answer, CliError> {
    let failed = |e: hyper::Error| CliError::Exchange(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(failed)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| CliError::Exchange(format!("cannot read the answer: {e}")))?
        .to_bytes();
    drop(sender);
    // The connection ends once the sender is gone; its own errors add nothing to the answer.
    let _ = driver.await;
    Ok(Answer { status, body })
}

/// The error of a non-2xx answer: the server's message and code when the body is the admin
/// API's error body, else the status and the start of the body.
pub fn server_error(answer: &Answer) -> CliError {
    match serde_json::from_slice::<ErrorBody>(&answer.body) {
        Ok(body) => CliError::Server {
            status: answer.status.as_u16(),
            code: body.error.code,
            message: body.error.message,
        },
        Err(_) => CliError::Server {
            status: answer.status.as_u16(),
            code: format!("http_{}", answer.status.as_u16()),
            message: format!(
                "the server answered {}: {}",
                answer.status,
                snippet(&answer.body)
            ),
        },
    }
}

/// The start of a body, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(200).filter(|c| !c.is_control()).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Parses a JSON answer into a typed value.
pub fn parse<T: DeserializeOwned>(value: Value) -> Result<T, CliError> {
    serde_json::from_value(value).map_err(|e| CliError::Protocol(e.to_string()))
}

/// Percent-encodes one path segment (a key id or an account name typed by a person), so that
/// `/` or `?` in it cannot change which endpoint is called.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `path?k=v&...` with the values form-encoded; pairs with `None` are left out.
pub fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", query.finish())
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape_their_place() {
        assert_eq!(segment("key_0123abcdXYZ"), "key_0123abcdXYZ");
        assert_eq!(segment("ops@acme.io"), "ops@acme.io");
        assert_eq!(segment("../status?x"), "..%2Fstatus%3Fx");
        assert_eq!(segment("a b"), "a%20b");
    }

    #[test]
    fn queries_leave_out_absent_values_and_encode_the_rest() {
        assert_eq!(with_query("/api/keys", &[("account", None)]), "/api/keys");
        assert_eq!(
            with_query(
                "/api/usage",
                &[
                    ("key", None),
                    ("account", Some("a&b".into())),
                    ("from", Some("2025-01-01T00:00:00Z".into()))
                ]
            ),
            "/api/usage?account=a%26b&from=2025-01-01T00%3A00%3A00Z"
        );
    }

    #[test]
    fn error_bodies_become_message_and_code() {
        let answer = Answer {
            status: StatusCode::CONFLICT,
            body: Bytes::from_static(
                br#"{"error":{"message":"account acme already has 10 active keys (limit 10)","type":"invalid_request_error","param":null,"code":"key_limit_reached"}}"#,
            ),
        };
        assert_eq!(
            server_error(&answer).to_string(),
            "account acme already has 10 active keys (limit 10) (key_limit_reached)"
        );
        let answer = Answer {
            status: StatusCode::BAD_GATEWAY,
            body: Bytes::from_static(b"upstream down\x1b[31m"),
        };
        let err = server_error(&answer).to_string();
        assert!(
            err.contains("502") && err.contains("upstream down"),
            "{err}"
        );
        assert!(
            !err.contains('\x1b'),
            "control characters are dropped: {err:?}"
        );
    }
}
