//! Admin API errors, and the one place they become HTTP status codes and bodies.
//!
//! Handlers return [`ApiError`]; [`ApiError::status`] and [`ApiError::code`] are pinned by a
//! test. Internal causes (storage, I/O) are logged with their source and answered with a generic
//! message, so no path, record or secret leaks into a body.

use http::StatusCode;

use super::api::{ErrorBody, ErrorDetail};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input in a named field: 400 with `code` = `invalid_<field>` and `param` = field.
    #[error("{message}")]
    InvalidField { field: String, message: String },
    /// A field that the endpoint does not take.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// The body is not JSON or not an object.
    #[error("{0}")]
    BadBody(String),
    /// A query parameter is malformed.
    #[error("{message}")]
    InvalidQuery { param: String, message: String },
    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },
    #[error("no such endpoint: {method} {path}")]
    NoRoute { method: String, path: String },
    #[error("method {method} is not allowed on {path} (allowed: {allow})")]
    MethodNotAllowed {
        method: String,
        path: String,
        /// The methods the path has, for the `Allow` header.
        allow: &'static str,
    },
    /// The change conflicts with current state: 409 with this code.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("peer is not allowed to use the admin socket")]
    Forbidden,
    #[error("storage error")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidField {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn not_found(what: &'static str, id: &str) -> ApiError {
        ApiError::NotFound {
            what,
            id: id.to_owned(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidField { .. }
            | ApiError::UnknownField(_)
            | ApiError::BadBody(_)
            | ApiError::InvalidQuery { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> String {
        match self {
            ApiError::InvalidField { field, .. } => format!("invalid_{field}"),
            ApiError::UnknownField(_) => "unknown_field".into(),
            ApiError::BadBody(_) => "invalid_body".into(),
            ApiError::InvalidQuery { param, .. } => format!("invalid_{param}"),
            ApiError::NotFound { .. } | ApiError::NoRoute { .. } => "not_found".into(),
            ApiError::MethodNotAllowed { .. } => "method_not_allowed".into(),
            ApiError::Conflict { code, .. } => (*code).into(),
            ApiError::TooLarge(_) => "request_too_large".into(),
            ApiError::Forbidden => "permission_denied".into(),
            ApiError::Store(_) | ApiError::Internal(_) => "internal_error".into(),
        }
    }

    fn kind(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::FORBIDDEN => "permission_error",
            s if s.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            ApiError::InvalidField { field, .. } => Some(field.clone()),
            ApiError::UnknownField(field) => Some(field.clone()),
            ApiError::InvalidQuery { param, .. } => Some(param.clone()),
            _ => None,
        }
    }

    /// The body sent for this error. Server errors get a generic message; the cause is logged.
    pub fn body(&self) -> ErrorBody {
        let message = if self.status().is_server_error() {
            "internal error; see the keygate log".to_owned()
        } else {
            self.to_string()
        };
        ErrorBody {
            error: ErrorDetail {
                message,
                kind: self.kind().to_owned(),
                param: self.param(),
                code: self.code(),
                request_id: None,
            },
        }
    }
}

impl From<String> for ApiError {
    fn from(message: String) -> Self {
        ApiError::Internal(message)
    }
}

impl From<crate::keyring::IndexError> for ApiError {
    fn from(e: crate::keyring::IndexError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<getrandom::Error> for ApiError {
    fn from(e: getrandom::Error) -> Self {
        ApiError::Internal(format!("the OS random source failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_status_code_and_type() {
        let cases: Vec<(ApiError, u16, &str, &str)> = vec![
            (
                ApiError::invalid("name", "x"),
                400,
                "invalid_name",
                "invalid_request_error",
            ),
            (
                ApiError::UnknownField("nmae".into()),
                400,
                "unknown_field",
                "invalid_request_error",
            ),
            (
                ApiError::BadBody("x".into()),
                400,
                "invalid_body",
                "invalid_request_error",
            ),
            (
                ApiError::InvalidQuery {
                    param: "limit".into(),
                    message: "x".into(),
                },
                400,
                "invalid_limit",
                "invalid_request_error",
            ),
            (
                ApiError::not_found("key", "k"),
                404,
                "not_found",
                "not_found_error",
            ),
            (
                ApiError::NoRoute {
                    method: "GET".into(),
                    path: "/x".into(),
                },
                404,
                "not_found",
                "not_found_error",
            ),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                    path: "/api/keys".into(),
                    allow: "GET, POST",
                },
                405,
                "method_not_allowed",
                "invalid_request_error",
            ),
            (
                ApiError::Conflict {
                    code: "key_limit_reached",
                    message: "x".into(),
                },
                409,
                "key_limit_reached",
                "invalid_request_error",
            ),
            (
                ApiError::TooLarge(10),
                413,
                "request_too_large",
                "invalid_request_error",
            ),
            (
                ApiError::Forbidden,
                403,
                "permission_denied",
                "permission_error",
            ),
            (
                ApiError::Internal("boom".into()),
                500,
                "internal_error",
                "api_error",
            ),
        ];
        for (err, status, code, kind) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            let body = err.body();
            assert_eq!(body.error.code, code, "{err:?}");
            assert_eq!(body.error.kind, kind, "{err:?}");
        }
    }

    #[test]
    fn server_errors_do_not_leak_their_cause() {
        let body = ApiError::Internal("/var/lib/keygate/secret-path".into()).body();
        assert!(!body.error.message.contains("secret-path"));
    }

    #[test]
    fn field_errors_name_the_field_as_param() {
        let body = ApiError::invalid("allowed_ips", "bad").body();
        assert_eq!(body.error.param.as_deref(), Some("allowed_ips"));
    }
}
