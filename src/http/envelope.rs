//! The `{code, data, msg}` envelope every answer uses, and the OpenAPI document describes: one
//! [`Envelope`] for answers that carry data (a failed sync run too: `code` 1, HTTP 200), and
//! [`ErrorEnvelope`] for refused requests, whose `data` is always null; and [`error_response`],
//! the one mapping of errors nobody else answered (poem's own 404, 405, unparsable input) to it.

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::Object;

/// A successful (or task-level) answer: `code` 0 on success, 1 when the task failed.
#[derive(Debug, Clone, Object)]
pub struct Envelope<T: ParseFromJSON + ToJSON> {
    /// 0 on success, 1 when the task failed.
    pub code: i32,
    /// The result.
    pub data: T,
    /// The last stderr line on success, the failure text otherwise.
    pub msg: String,
}

impl<T: ParseFromJSON + ToJSON> Envelope<T> {
    /// `code` 0 with `data`.
    pub fn ok(data: T) -> Self {
        Self {
            code: 0,
            data,
            msg: String::new(),
        }
    }

    /// `code` 0 when `ok`, else 1, with `data` and `msg`.
    pub fn of(ok: bool, data: T, msg: String) -> Self {
        Self {
            code: i32::from(!ok),
            data,
            msg,
        }
    }
}

/// An error answer: `code` 1, `data` null, `msg` says what is wrong.
#[derive(Debug, Clone, Object)]
pub struct ErrorEnvelope {
    /// Always 1.
    pub code: i32,
    /// Always null.
    #[oai(nullable)]
    pub data: Option<String>,
    /// What is wrong.
    pub msg: String,
}

impl ErrorEnvelope {
    /// An error saying `msg`.
    pub fn new(msg: impl Into<String>) -> Self {
        Self {
            code: 1,
            data: None,
            msg: msg.into(),
        }
    }
}

/// A JSON answer with `status`.
pub fn respond<T: ToJSON>(status: StatusCode, body: &T) -> Response {
    let json = body.to_json_string();
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(json)
}

/// An error answer with `status` saying `msg`: what the middleware (authentication) and
/// [`error_response`] send.
pub fn refuse(status: StatusCode, msg: impl Into<String>) -> Response {
    respond(status, &ErrorEnvelope::new(msg))
}

/// The one mapping of an error that no operation answered itself (poem's 404 and 405, a body
/// or parameter poem cannot parse) to the envelope, keeping its HTTP status. Operations answer
/// their own errors with the typed variants their document lists.
pub async fn error_response(err: poem::Error) -> Response {
    let status = err.status();
    if status == StatusCode::NOT_FOUND {
        refuse(status, "no such route (GET /list shows every route)")
    } else {
        refuse(status, err.to_string())
    }
}
