//! API errors in Azure's shape: `{"error": {"code", "message", "target"}}` with a 4xx status for caller
//! mistakes, so scripts written against Azure can read them the same way.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::controller::ControllerError;
use crate::store::StoreError;
use crate::validate::ValidationError;

/// An error the API returns. `message` says what was wrong, where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: u16,
    /// Azure-style error code, e.g. `InvalidParameter`, `ResourceNotFound`.
    pub code: String,
    /// What was wrong, where, and the fix.
    pub message: String,
    /// The field or resource the error is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl ApiError {
    pub(crate) fn new(
        status: u16,
        code: &str,
        message: impl Into<String>,
        target: Option<String>,
    ) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            target,
        }
    }

    /// 400 InvalidParameter: a field breaks a validation rule.
    pub fn invalid(target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameter", message, Some(target.into()))
    }

    /// 400 InvalidRequestContent: the body is not the JSON the endpoint takes.
    pub fn bad_content(message: impl Into<String>, target: Option<String>) -> Self {
        Self::new(400, "InvalidRequestContent", message, target)
    }

    /// 404 ResourceNotFound.
    pub fn not_found(kind: &str, name: &str) -> Self {
        Self::new(
            404,
            "ResourceNotFound",
            format!("{kind} '{name}' was not found; list them with 'vgw {kind} list'"),
            Some(name.to_string()),
        )
    }

    /// 409 Conflict: the change contradicts existing state (a resource in use, a second gateway).
    pub fn conflict(code: &str, target: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(409, code, message, Some(target.into()))
    }

    /// 412 PreconditionFailed: `If-Match` named an etag that is no longer current.
    pub fn precondition_failed(target: &str, current: &str) -> Self {
        Self::new(
            412,
            "PreconditionFailed",
            format!(
                "'{target}' changed since it was read (its etag is now {current}); read it again and retry"
            ),
            Some(target.to_string()),
        )
    }

    /// 401: no or wrong bearer token on the TCP listener.
    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "AuthenticationFailed",
            "missing or invalid bearer token; send 'Authorization: Bearer <token from --api-token-file>'",
            None,
        )
    }

    /// 413: the body exceeds the API's limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("request body exceeds {limit} bytes"),
            None,
        )
    }

    /// 501: an operation whose engine has not been built yet; says so instead of pretending.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            501,
            "NotImplemented",
            format!("{what} is not available in this vgw build yet"),
            None,
        )
    }

    /// 500: the store failed. The message names the operation, never a secret.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalServerError", message, None)
    }

    /// Prefixes the message with the resource it concerns: `vpn-connection c1: ...`.
    pub fn for_resource(mut self, kind: &str, name: &str) -> Self {
        let prefix = format!("{kind} {name}: ");
        if !self.message.starts_with(&prefix) {
            self.message = format!("{prefix}{}", self.message);
        }
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}) {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::json!({ "error": self });
        (status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "state store failure");
        Self::internal(format!("state store: {e}"))
    }
}

/// A broken rule is 400 InvalidParameter with the field as the target.
impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::new(400, "InvalidParameter", e.message, e.target)
    }
}

/// The controller's refusals: a broken rule 400, a read-only replica 409, the store 500.
impl From<ControllerError> for ApiError {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::Invalid(v) => v.into(),
            ControllerError::ReadOnlyReplica { .. } => {
                Self::conflict("ReplicaIsReadOnly", "vnet-gateway", e.to_string())
            }
            ControllerError::Store(s) => s.into(),
            ControllerError::Internal(what) => Self::internal(what),
            ControllerError::ResourceCountLimitExceeded { kind, message } => {
                Self::conflict("ResourceCountLimitExceeded", kind, message)
            }
        }
    }
}
