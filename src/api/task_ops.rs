//! The OpenAPI operations of one task: its sync and async operations, their request body, and
//! the answers every task operation shares (written once, in `components/responses`).

use poem_openapi::registry::Registry;
use poem_openapi::types::Type;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::config::Schedule;
use crate::http::{Envelope, ErrorEnvelope};
use crate::table::{Task, TaskKind};

/// The answers task operations share, once in `components/responses`: with thousands of tasks,
/// writing them into every operation made most of the document (and of its memory).
pub(super) fn task_responses() -> Value {
    let answer = |description: &str, schema: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        })
    };
    let error = ErrorEnvelope::name();
    json!({
        "TaskAnswer": answer(
            "The task ran to its end: `code` 0 and its result (an external task's last stdout \
             line, or a built-in task's result) with the last stderr line as `msg`, or `code` 1 and \
             why it failed as `msg`. A failed task is still HTTP 200.",
            &Envelope::<String>::name(),
        ),
        "SessionStarted": answer(
            "The session has started; `data` is its id, for `POST /async/query` and \
             `POST /async/kill`.",
            &Envelope::<Uuid>::name(),
        ),
        "BadBody": answer(
            "The body cannot be read, is not JSON, or does not fit the task's parameters",
            &error,
        ),
        "NoSuchTask": answer(
            "No such task: it was removed by a reload since this document was read",
            &error,
        ),
        "BodyTooLarge": answer("The body is larger than --max-body-bytes (default 1 MiB)", &error),
    })
}

/// The request body of `task`: a list of extra arguments, or a built-in task's parameters.
pub(super) fn request_body(task: &Task, registry: &mut Registry) -> Value {
    let (schema, example, required, description) = match &task.kind {
        TaskKind::External { task: ext, .. } => (
            json!({"$ref": "#/components/schemas/TaskArgs"}),
            json!(ext.args),
            false,
            None,
        ),
        TaskKind::Builtin(t) => {
            let schema = serde_json::to_value(t.params_schema(registry)).unwrap_or(Value::Null);
            let description = if t.accepts_empty() {
                "The task's parameters. No body means `{}`."
            } else {
                "The task's parameters."
            };
            (schema, t.example(), !t.accepts_empty(), Some(description))
        }
    };
    let mut body = json!({
        "required": required,
        "content": {"application/json": {"schema": schema, "example": example}}
    });
    if let Some(description) = description {
        body["description"] = description.into();
    }
    body
}

/// A stable operation id: `/` becomes `__` and `-` becomes `_`, which cannot collide because
/// path segments are kebab case.
fn operation_id(kind: &str, task: &Task) -> String {
    format!("{kind}__{}", task.path.replace('/', "__").replace('-', "_"))
}

/// How schedulers treat `task`, in words for the operation's description (the same facts are in
/// the operation's `x-enabled` and `x-schedule`).
fn scheduling(task: &Task) -> String {
    let when = match &task.schedule {
        Some(s) => format!(
            "Scheduled at `{}` (minute hour day-of-month month day-of-week)",
            s.line()
        ),
        None => "No schedule of its own: schedulers use their default".to_string(),
    };
    if task.enabled {
        format!("{when}, with the body `{}`.", task.empty_param)
    } else {
        format!("Disabled: schedulers skip it ({}).", when.to_lowercase())
    }
}

/// The two operations every task has.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Sync,
    Async,
}

impl Kind {
    pub(super) fn prefix(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::Async => "async",
        }
    }
}

pub(super) fn operation(kind: Kind, task: &Task, body: Value) -> Value {
    let (summary, what, answer) = match kind {
        Kind::Sync => (
            task.description(),
            format!(
                "Runs `{}` and waits for it to end. If the caller disconnects first, the run is \
                 killed.",
                task.name
            ),
            "TaskAnswer",
        ),
        Kind::Async => (
            format!("{} (in the background)", task.description()),
            format!(
                "Starts `{}` as a session and answers at once with the session id. \
                 `POST /async/query` shows its state and result, `POST /async/kill` stops it.",
                task.name
            ),
            "SessionStarted",
        ),
    };
    let reference = |name: &str| json!({"$ref": format!("#/components/responses/{name}")});
    let mut op = json!({
        "tags": [task.cluster_type],
        "summary": summary,
        "description": format!("{what}\n\n{}", scheduling(task)),
        "operationId": operation_id(kind.prefix(), task),
        "x-enabled": task.enabled,
        "x-schedule": task.schedule.as_ref().map(Schedule::line),
        "requestBody": body,
        "responses": {
            "200": reference(answer),
            "400": reference("BadBody"),
            "404": reference("NoSuchTask"),
            "413": reference("BodyTooLarge"),
        },
    });
    super::refusal::document(&mut op, matches!(kind, Kind::Async));
    op
}
