//! Errors as the API shows them: `{"error": {"code", "message"}}` with a
//! stable code. Internal detail goes to the log, never into a response.

use hyper::StatusCode;

use crate::events::Invalid;
use crate::store::SubmitError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The offending field, when one field is to blame.
    pub field: Option<String>,
    pub retry_after_secs: Option<u32>,
    /// Methods the path accepts, for 405 answers.
    pub allow: Option<Box<str>>,
    /// More members of the error object (`address`, `reason`…).
    pub details: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_secs: None,
            allow: None,
            details: Vec::new(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_detail(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.details.push((name, value.into()));
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field}: {}", message.into()),
        )
        .with_field(field)
    }

    /// A query parameter that is unknown, repeated or malformed.
    pub fn invalid_query(name: &str, what: impl Into<String>) -> Self {
        Self::bad_request("invalid_query", format!("{name}: {}", what.into())).with_field(name)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send a valid API key as `Authorization: Bearer KEY`",
        )
    }

    /// The key is valid but its role or tenant does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self::method_not_allowed_list(allow.to_owned())
    }

    /// `allow`: the methods the path accepts, comma-separated.
    pub fn method_not_allowed_list(allow: String) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this path accepts {allow}"),
        );
        e.allow = Some(allow.into());
        e
    }

    /// Back-pressure: the caller should retry after the given delay.
    pub fn overloaded() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the write queue is full; retry after the Retry-After delay",
        );
        e.retry_after_secs = Some(1);
        e
    }

    /// A write refused because the server is stopping.
    pub fn shutting_down() -> Self {
        ApiError::unavailable("the server is shutting down; nothing was written")
    }

    /// A write whose commit failed or whose fate is unknown; `cause` goes
    /// to the log, not to the client.
    pub fn not_acknowledged(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "write failed");
        ApiError::unavailable(
            "storage failed and the write was not acknowledged; retry it with the same idempotency key",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after_secs = Some(5);
        e
    }

    /// Reports a validation failure of one item of a batch, naming its
    /// index. A field given as a JSON pointer into the item (`/data/amount`)
    /// becomes one into the batch (`/events/3/data/amount`).
    pub fn in_item(mut self, list: &str, index: usize) -> Self {
        let path = match &self.field {
            Some(f) if f.starts_with('/') => format!("/{list}/{index}{f}"),
            Some(f) => format!("{list}[{index}].{f}"),
            None => format!("{list}[{index}]"),
        };
        self.message = format!("{list}[{index}]: {}", self.message);
        self.field = Some(path);
        self
    }

    pub fn body(&self) -> String {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(f) = &self.field {
            error["field"] = f.clone().into();
        }
        for (name, value) in &self.details {
            error[*name] = value.clone().into();
        }
        serde_json::json!({ "error": error }).to_string()
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        match e {
            Invalid::Json(m) => {
                ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {m}"))
            }
            Invalid::Shape(m) => ApiError::bad_request("invalid_body", m),
            Invalid::Field { field, message } => ApiError::invalid_field(field, message),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Busy => ApiError::overloaded(),
            SubmitError::Closed => ApiError::shutting_down(),
            SubmitError::Failed(cause) => ApiError::not_acknowledged(&cause),
        }
    }
}
