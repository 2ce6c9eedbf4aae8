//! Request bodies, read one lenient way whatever the `Content-Type` says.
//!
//! Celery workers and on-call engineers post with `curl -d '{...}'`, which sends
//! `application/x-www-form-urlencoded`, or with no body at all. poem-openapi's `Json` would refuse
//! both, so every body goes through [`lenient`]: the bytes are JSON whatever the content type
//! says, and an empty (or all-blank) body is JSON `null`. [`LenientJson`] does it for the fixed
//! API and still documents itself as `application/json`; [`task_input`] does it for task
//! bodies.

use poem::{Request, RequestBody, Result};

use crate::app::Input;
use crate::table::{Task, TaskKind};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::ParseFromJSON;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::Value;

/// A JSON body parsed into `T`, whatever the request's content type.
pub struct LenientJson<T>(pub T);

impl<'a, T: ParseFromJSON + Send> ApiExtractor<'a> for LenientJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: T::IS_REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<()>,
    ) -> Result<Self> {
        let bytes = <Vec<u8> as poem::FromRequest>::from_request(request, body).await?;
        let value = lenient(&bytes).map_err(|reason| ParseRequestPayloadError { reason })?;
        let parsed = T::parse_from_json(Some(value)).map_err(|e| ParseRequestPayloadError {
            reason: e.into_message(),
        })?;
        Ok(Self(parsed))
    }
}

/// A body as JSON: `null` when it is empty or blank. `Err` says why it is not JSON.
pub fn lenient(body: &[u8]) -> std::result::Result<Value, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))
}

/// Reads a request body for `task`. `Err` says what is wrong with it, for an HTTP 400.
pub fn task_input(task: &Task, body: &[u8]) -> std::result::Result<Input, String> {
    let value = lenient(body)?;
    match &task.kind {
        TaskKind::External { .. } => {
            let items = match value {
                Value::Null => return Ok(Input::Args(Vec::new())),
                Value::Array(items) => items,
                other => {
                    return Err(format!(
                        "the body must be a JSON array of strings, like [\"a\", \"b\"]; found {}",
                        json_kind(&other)
                    ))
                }
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    // No program argument can hold a NUL: say so now rather than fail the run.
                    Value::String(s) if s.contains('\0') => Err(format!(
                        "element {i} contains a NUL character, which no program argument can hold"
                    )),
                    Value::String(s) => Ok(s),
                    other => Err(format!(
                        "the body must be a JSON array of strings; element {i} is {}",
                        json_kind(&other)
                    )),
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Input::Args)
        }
        TaskKind::Builtin(t) => {
            // No body means no parameters, as `{}`.
            let value = if value.is_null() {
                Value::Object(Default::default())
            } else {
                value
            };
            let prepared = t.clone().prepare(value.clone()).map_err(|e| {
                format!(
                    "the body does not fit the parameters of `{}`: {e}",
                    task.path
                )
            })?;
            Ok(Input::Builtin(prepared, value))
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
