//! The data plane's refusals and failures (SPEC §2's table), and their bodies in both styles.
//!
//! Every answer keygate itself gives on the data plane is a [`Code`]; [`Code::status`],
//! [`Code::openai_type`] and [`Code::anthropic_type`] are the whole table, pinned by a test.
//! Messages are fixed per code or built from non-secret facts; they never echo a key.

use bytes::Bytes;
use http::StatusCode;
use serde::Serialize;

use crate::config::ErrorStyle;

/// Every `code` the data plane answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    MissingApiKey,
    InvalidApiKey,
    ExpiredApiKey,
    ApiKeyDisabled,
    IpNotAllowed,
    OriginNotAllowed,
    RouteNotFound,
    AssistantNotFound,
    InsufficientScope,
    ModelNotAllowed,
    RateLimitExceeded,
    QuotaExceeded,
    RequestTooLarge,
    HeadersTooLarge,
    InvalidRequest,
    UpstreamError,
    UpstreamTimeout,
}

impl Code {
    /// Every code, for tests and metrics.
    pub const ALL: [Code; 17] = [
        Code::MissingApiKey,
        Code::InvalidApiKey,
        Code::ExpiredApiKey,
        Code::ApiKeyDisabled,
        Code::IpNotAllowed,
        Code::OriginNotAllowed,
        Code::RouteNotFound,
        Code::AssistantNotFound,
        Code::InsufficientScope,
        Code::ModelNotAllowed,
        Code::RateLimitExceeded,
        Code::QuotaExceeded,
        Code::RequestTooLarge,
        Code::HeadersTooLarge,
        Code::InvalidRequest,
        Code::UpstreamError,
        Code::UpstreamTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingApiKey => "missing_api_key",
            Code::InvalidApiKey => "invalid_api_key",
            Code::ExpiredApiKey => "expired_api_key",
            Code::ApiKeyDisabled => "api_key_disabled",
            Code::IpNotAllowed => "ip_not_allowed",
            Code::OriginNotAllowed => "origin_not_allowed",
            Code::RouteNotFound => "route_not_found",
            Code::AssistantNotFound => "assistant_not_found",
            Code::InsufficientScope => "insufficient_scope",
            Code::ModelNotAllowed => "model_not_allowed",
            Code::RateLimitExceeded => "rate_limit_exceeded",
            Code::QuotaExceeded => "quota_exceeded",
            Code::RequestTooLarge => "request_too_large",
            Code::HeadersTooLarge => "request_header_fields_too_large",
            Code::InvalidRequest => "invalid_request",
            Code::UpstreamError => "upstream_error",
            Code::UpstreamTimeout => "upstream_timeout",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::MissingApiKey
            | Code::InvalidApiKey
            | Code::ExpiredApiKey
            | Code::ApiKeyDisabled => StatusCode::UNAUTHORIZED,
            Code::IpNotAllowed
            | Code::OriginNotAllowed
            | Code::InsufficientScope
            | Code::ModelNotAllowed => StatusCode::FORBIDDEN,
            Code::RouteNotFound | Code::AssistantNotFound => StatusCode::NOT_FOUND,
            Code::RateLimitExceeded | Code::QuotaExceeded => StatusCode::TOO_MANY_REQUESTS,
            Code::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::UpstreamError => StatusCode::BAD_GATEWAY,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `type` on OpenAI-style routes (SPEC §2).
    pub fn openai_type(self) -> &'static str {
        match self {
            Code::MissingApiKey
            | Code::InvalidApiKey
            | Code::ExpiredApiKey
            | Code::ApiKeyDisabled => "authentication_error",
            Code::IpNotAllowed | Code::OriginNotAllowed | Code::ModelNotAllowed => {
                "permission_error"
            }
            Code::InsufficientScope => "authorization_error",
            Code::RateLimitExceeded => "rate_limit_error",
            Code::QuotaExceeded => "insufficient_quota",
            Code::RouteNotFound
            | Code::AssistantNotFound
            | Code::RequestTooLarge
            | Code::HeadersTooLarge
            | Code::InvalidRequest => "invalid_request_error",
            Code::UpstreamError | Code::UpstreamTimeout => "api_error",
        }
    }

    /// The `type` on Anthropic-style routes, with Anthropic's own names.
    pub fn anthropic_type(self) -> &'static str {
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// The message when there is nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            Code::MissingApiKey => {
                "No API key provided. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            }
            Code::InvalidApiKey => "Invalid API key.",
            Code::ExpiredApiKey => "This API key has expired.",
            Code::ApiKeyDisabled => "This API key is disabled.",
            Code::IpNotAllowed => "Requests from this IP address are not allowed for this API key.",
            Code::OriginNotAllowed => "Requests from this origin are not allowed for this API key.",
            Code::RouteNotFound => "No route matches this path and method.",
            Code::AssistantNotFound => "No assistant with this id.",
            Code::InsufficientScope => "This API key does not have the scope this route requires.",
            Code::ModelNotAllowed => "This API key may not use this model.",
            Code::RateLimitExceeded => {
                "Rate limit exceeded. Retry after the time in 'retry-after'."
            }
            Code::QuotaExceeded => "Quota for the current period is used up.",
            Code::RequestTooLarge => "The request body is too large.",
            Code::HeadersTooLarge => "The request headers are too large.",
            Code::InvalidRequest => {
                "The request body must be one JSON object, sent in full and in time."
            }
            Code::UpstreamError => {
                "The upstream service could not be reached or gave a bad response."
            }
            Code::UpstreamTimeout => "The upstream service did not answer in time.",
        }
    }
}

#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: &'static str,
    request_id: &'a str,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
    request_id: &'a str,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// The JSON error body for `code` in `style`.
pub fn body(style: ErrorStyle, code: Code, message: &str, request_id: &str) -> Bytes {
    let json = match style {
        ErrorStyle::OpenAi => serde_json::to_vec(&OpenAiBody {
            error: OpenAiError {
                message,
                kind: code.openai_type(),
                param: None,
                code: code.as_str(),
                request_id,
            },
        }),
        ErrorStyle::Anthropic => serde_json::to_vec(&AnthropicBody {
            kind: "error",
            error: AnthropicError {
                kind: code.anthropic_type(),
                message,
            },
            request_id,
        }),
    };
    // Serializing these plain structs of strings cannot fail.
    Bytes::from(json.unwrap_or_default())
}

/// A final SSE `error` event, for an upstream that fails after the stream has started.
pub fn sse_event(style: ErrorStyle, code: Code, message: &str, request_id: &str) -> Bytes {
    let data = body(style, code, message, request_id);
    let mut event = Vec::with_capacity(data.len() + 24);
    event.extend_from_slice(b"event: error\ndata: ");
    event.extend_from_slice(&data);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §2's table, row by row: status, code, OpenAI type, Anthropic type.
    #[test]
    fn every_code_has_the_status_and_types_of_the_spec_table() {
        let table = [
            (
                Code::MissingApiKey,
                401,
                "missing_api_key",
                "authentication_error",
                "authentication_error",
            ),
            (
                Code::InvalidApiKey,
                401,
                "invalid_api_key",
                "authentication_error",
                "authentication_error",
            ),
            (
                Code::ExpiredApiKey,
                401,
                "expired_api_key",
                "authentication_error",
                "authentication_error",
            ),
            (
                Code::ApiKeyDisabled,
                401,
                "api_key_disabled",
                "authentication_error",
                "authentication_error",
            ),
            (
                Code::IpNotAllowed,
                403,
                "ip_not_allowed",
                "permission_error",
                "permission_error",
            ),
            (
                Code::OriginNotAllowed,
                403,
                "origin_not_allowed",
                "permission_error",
                "permission_error",
            ),
            (
                Code::RouteNotFound,
                404,
                "route_not_found",
                "invalid_request_error",
                "not_found_error",
            ),
            (
                Code::AssistantNotFound,
                404,
                "assistant_not_found",
                "invalid_request_error",
                "not_found_error",
            ),
            (
                Code::InsufficientScope,
                403,
                "insufficient_scope",
                "authorization_error",
                "permission_error",
            ),
            (
                Code::ModelNotAllowed,
                403,
                "model_not_allowed",
                "permission_error",
                "permission_error",
            ),
            (
                Code::RateLimitExceeded,
                429,
                "rate_limit_exceeded",
                "rate_limit_error",
                "rate_limit_error",
            ),
            (
                Code::QuotaExceeded,
                429,
                "quota_exceeded",
                "insufficient_quota",
                "rate_limit_error",
            ),
            (
                Code::RequestTooLarge,
                413,
                "request_too_large",
                "invalid_request_error",
                "request_too_large",
            ),
            (
                Code::HeadersTooLarge,
                431,
                "request_header_fields_too_large",
                "invalid_request_error",
                "invalid_request_error",
            ),
            (
                Code::InvalidRequest,
                400,
                "invalid_request",
                "invalid_request_error",
                "invalid_request_error",
            ),
            (
                Code::UpstreamError,
                502,
                "upstream_error",
                "api_error",
                "api_error",
            ),
            (
                Code::UpstreamTimeout,
                504,
                "upstream_timeout",
                "api_error",
                "api_error",
            ),
        ];
        assert_eq!(table.len(), Code::ALL.len());
        for (code, status, name, openai, anthropic) in table {
            assert_eq!(code.status().as_u16(), status, "{name}");
            assert_eq!(code.as_str(), name);
            assert_eq!(code.openai_type(), openai, "{name}");
            assert_eq!(code.anthropic_type(), anthropic, "{name}");
        }
    }

    #[test]
    fn openai_bodies_have_the_spec_shape() {
        let b = body(
            ErrorStyle::OpenAi,
            Code::InvalidApiKey,
            "Invalid API key.",
            "req_1",
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"message": "Invalid API key.", "type": "authentication_error",
                "param": null, "code": "invalid_api_key", "request_id": "req_1"}})
        );
    }

    #[test]
    fn anthropic_bodies_have_the_spec_shape() {
        let b = body(ErrorStyle::Anthropic, Code::RouteNotFound, "nope", "req_2");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "error", "error": {"type": "not_found_error", "message": "nope"},
                "request_id": "req_2"})
        );
    }

    #[test]
    fn the_sse_error_event_is_one_whole_event() {
        let e = sse_event(ErrorStyle::Anthropic, Code::UpstreamError, "reset", "req_3");
        let text = std::str::from_utf8(&e).unwrap();
        assert!(text.starts_with("event: error\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        assert_eq!(text.matches("\n\n").count(), 1);
    }
}
