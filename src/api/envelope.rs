//! The `{code, data, msg}` envelope every answer uses.

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::Object;

/// A successful (or task-level) answer: `code` 0 on success, 1 when the task failed.
#[derive(Debug, Clone, Object)]
pub struct Envelope<T: ParseFromJSON + ToJSON> {
    /// 0 on success, 1 on failure.
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

/// The answer of a sync run, `{code, data, msg}` with string `data`, as
/// `respond(StatusCode::OK, &Envelope { code, data, msg })` makes it.
///
/// Serialized directly with serde: poem-openapi's `ToJSON` first builds a `serde_json::Value`
/// map, with its keys and both strings copied, then serializes that, which was 4 % of the
/// service's instructions per sync call (BENCHMARKS.md, step 20). The bytes are the same; a test
/// compares them.
pub fn respond_run(code: i32, data: &str, msg: &str) -> Response {
    #[derive(serde::Serialize)]
    struct Run<'a> {
        code: i32,
        data: &'a str,
        msg: &'a str,
    }
    match serde_json::to_vec(&Run { code, data, msg }) {
        Ok(json) => Response::builder()
            .status(StatusCode::OK)
            .content_type("application/json; charset=utf-8")
            .body(json),
        // Serializing strings and an integer cannot fail; should it anyway, take the long way.
        Err(_) => respond(
            StatusCode::OK,
            &Envelope {
                code,
                data: data.to_string(),
                msg: msg.to_string(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_answer_is_byte_for_byte_the_typed_envelope() {
        let cases = [
            (0, "hello", ""),
            (1, "", "exited with code 3"),
            (
                0,
                "quote \" back\\slash \u{1} tab\t é 中文 🦀",
                "line\nbreak",
            ),
        ];
        for (code, data, msg) in cases {
            let typed = Envelope {
                code,
                data: data.to_string(),
                msg: msg.to_string(),
            }
            .to_json_string();
            let resp = respond_run(code, data, msg);
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(
                resp.headers()["content-type"],
                "application/json; charset=utf-8"
            );
            let body = resp.into_body().into_string().await.unwrap();
            assert_eq!(body, typed);
        }
    }
}
