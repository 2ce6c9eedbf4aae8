//! The answers of a task call that run control refuses (409, 422, 429, 503), and how the
//! OpenAPI document describes them and the `Idempotency-Key` header.

use poem::http::StatusCode;
use poem::Response;
use poem_openapi::types::Type;
use serde_json::{json, Value};

use crate::http::{respond, ErrorEnvelope};
use crate::supervisor::Refusal;

/// What a client is asked to wait before calling again after a 429 or 503, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

/// The error answer for `refusal`, with its status (and `Retry-After` where waiting helps).
pub fn answer(refusal: &Refusal) -> Response {
    let status = status(refusal);
    let mut resp = respond(status, &ErrorEnvelope::new(refusal.to_string()));
    if matches!(refusal, Refusal::TooMany(_) | Refusal::Draining) {
        resp.headers_mut()
            .insert("retry-after", RETRY_AFTER_SECS.into());
    }
    resp
}

fn status(refusal: &Refusal) -> StatusCode {
    match refusal {
        Refusal::Busy { .. } => StatusCode::CONFLICT,
        Refusal::KeyOfOtherTask { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        Refusal::Draining | Refusal::TooManySessions(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `responses` plus the shared refusal answers, for `components/responses`.
pub fn with_components(mut responses: Value) -> Value {
    let error = json!({"$ref": format!("#/components/schemas/{}", ErrorEnvelope::name())});
    let retry = json!({"Retry-After": {
        "description": "Seconds to wait before calling again",
        "schema": {"type": "integer"}
    }});
    let answer = |description: &str, headers: Option<&Value>| {
        let mut a = json!({
            "description": description,
            "content": {"application/json": {"schema": error}},
        });
        if let Some(h) = headers {
            a["headers"] = h.clone();
        }
        a
    };
    if let Some(map) = responses.as_object_mut() {
        map.insert(
            "Busy".into(),
            answer(
                "The task has `concurrency_policy: forbid` and a run of it is active; `msg` names \
                 its session",
                None,
            ),
        );
        map.insert(
            "KeyOfOtherTask".into(),
            answer(
                "The `Idempotency-Key` was already used for another task within the window",
                None,
            ),
        );
        map.insert(
            "TooMany".into(),
            answer("`--max-running` runs are active", Some(&retry)),
        );
        map.insert(
            "Draining".into(),
            answer(
                "The service is shutting down and starts no new runs",
                Some(&retry),
            ),
        );
    }
    responses
}

/// Adds the refusal answers (and, for an async call, the `Idempotency-Key` header) to a task
/// operation.
pub fn document(operation: &mut Value, is_async: bool) {
    let reference = |name: &str| json!({"$ref": format!("#/components/responses/{name}")});
    if let Some(responses) = operation["responses"].as_object_mut() {
        responses.insert("409".into(), reference("Busy"));
        responses.insert("429".into(), reference("TooMany"));
        responses.insert("503".into(), reference("Draining"));
        if is_async {
            responses.insert("422".into(), reference("KeyOfOtherTask"));
        }
    }
    if is_async {
        operation["parameters"] = json!([{
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "A key for this call (e.g. `<url>@<scheduled time>`): a second call \
                with the same key for the same task within `--idempotency-window` answers with \
                the session the first one started instead of starting another run.",
            "schema": {"type": "string"}
        }]);
    }
}
