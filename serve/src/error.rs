//! Errors as the API answers them: a status and `{"error": {"kind", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// No bearer token, or one the server does not know: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The tenant may not use `capability`: 403.
    #[error("{message}")]
    Forbidden {
        /// What it may not use (`agent code-reviewer`, `model claude-opus-4-1`).
        capability: String,
        /// Why, in words.
        message: String,
    },
    /// No such run, batch or agent: 404.
    #[error("{0}")]
    NotFound(String),
    /// A malformed body, an unknown field, a bad value: 400.
    #[error("{0}")]
    BadRequest(String),
    /// A body over the cap: 413.
    #[error("{0}")]
    TooLarge(String),
    /// The body's content type is not one the endpoint reads: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The server is shutting down: 503.
    #[error("{0}")]
    Unavailable(String),
}

/// The body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `unauthorized`, `forbidden`, `not_found`, `bad_request`, `too_large`,
    /// `unsupported_media_type`, `unavailable`.
    pub kind: String,
    /// In words.
    pub message: String,
    /// For `forbidden`: what the tenant may not use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `kind` of the body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::TooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(ErrorBody {
                error: ErrorDetail {
                    kind: self.kind().to_owned(),
                    message: self.to_string(),
                    capability: match &self {
                        Self::Forbidden { capability, .. } => Some(capability.clone()),
                        _ => None,
                    },
                },
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
