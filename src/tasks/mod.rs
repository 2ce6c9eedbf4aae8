//! Tasks written in Rust: the [`RustTask`] trait, and the registry that lists them.
//!
//! Adding a task is one new module beside `counter.rs` plus one line in [`registry`]. A built-in
//! task gets the same sync and async endpoints, sessions, kill and log file as an external one.
//! Its parameters are a `poem_openapi::Object`, so the request body is checked against them (a
//! body that does not fit is answered with HTTP 400) and their schema appears in the OpenAPI
//! document.

mod counter;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ToJSON, Type};
use serde_json::Value;
use uuid::Uuid;

use crate::logs::{Stream, TaskLog};
use crate::runner::Stop;

pub use counter::Counter;

/// Every built-in task. One line per task.
pub fn registry() -> Vec<Arc<dyn DynTask>> {
    vec![Arc::new(Registered(Counter))]
}

/// What a running built-in task can use.
pub struct TaskContext {
    /// The run's session id.
    pub session: Uuid,
    /// Cancelled when the run is killed; a task must return promptly once it is.
    pub cancel: Stop,
    log: Arc<TaskLog>,
    progress: Option<crate::runner::Progress>,
}

impl TaskContext {
    /// Builds a context; used by the executor.
    pub fn new(
        session: Uuid,
        cancel: Stop,
        log: Arc<TaskLog>,
        progress: Option<crate::runner::Progress>,
    ) -> Self {
        Self {
            session,
            cancel,
            log,
            progress,
        }
    }

    /// Writes a line to the task's log, as an external task's stdout would; an async session
    /// shows it as its `message` until the task ends.
    pub fn log(&self, line: &str) {
        self.log.line(self.session, Stream::Stdout, line.as_bytes());
        if let Some(progress) = &self.progress {
            progress(line.as_bytes());
        }
    }
}

/// A task written in Rust.
pub trait RustTask: Send + Sync + 'static {
    /// The request body; an empty body is parsed as `{}`.
    type Params: ParseFromJSON + ToJSON + Send + 'static;
    /// Cluster type, e.g. `TendbHA`; its kebab case is the first URL segment.
    const CLUSTER_TYPE: &'static str;
    /// Task name; its kebab case is the second URL segment, and it names the log file.
    const NAME: &'static str;
    /// One line for `/discovery` and the OpenAPI summary.
    const DESCRIPTION: &'static str;
    /// Whether schedulers should schedule it (`enable` in `/discovery`); it is served either way.
    const ENABLED: bool = true;
    /// When a scheduler should run it: a crontab line in Celery's dialect (see
    /// [`Schedule`](crate::config::Schedule)), checked when the route table is built. `None`
    /// leaves the choice to the scheduler's default.
    const SCHEDULE: Option<&'static str> = None;

    /// Parameters to show as the example in the OpenAPI document.
    fn example() -> Self::Params;

    /// The parameters a scheduler posts on schedule (`empty_param` in `/discovery`).
    fn empty_param() -> Self::Params;

    /// Runs once. `Ok` is the answer's `data`; `Err` its failure message.
    fn run(
        &self,
        params: Self::Params,
        ctx: TaskContext,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// A run that has been checked and is ready to start.
pub type Prepared = Box<
    dyn FnOnce(TaskContext) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send,
>;

/// The object-safe face of a [`RustTask`], as the route table holds it.
pub trait DynTask: Send + Sync {
    /// See [`RustTask::CLUSTER_TYPE`].
    fn cluster_type(&self) -> &'static str;
    /// See [`RustTask::NAME`].
    fn name(&self) -> &'static str;
    /// See [`RustTask::DESCRIPTION`].
    fn description(&self) -> &'static str;
    /// See [`RustTask::ENABLED`].
    fn enabled(&self) -> bool;
    /// See [`RustTask::SCHEDULE`].
    fn schedule(&self) -> Option<&'static str>;
    /// See [`RustTask::empty_param`], as JSON.
    fn empty_param(&self) -> Value;
    /// Whether an empty body is valid.
    fn accepts_empty(&self) -> bool;
    /// The example parameters as JSON.
    fn example(&self) -> Value;
    /// Registers the parameter schema and returns a reference to it.
    fn params_schema(&self, registry: &mut Registry) -> MetaSchemaRef;
    /// Checks the body and returns the run, or says what is wrong with the body.
    fn prepare(self: Arc<Self>, body: Value) -> Result<Prepared, String>;
}

/// Adapts a [`RustTask`] to [`DynTask`].
pub struct Registered<T>(pub T);

impl<T: RustTask> DynTask for Registered<T> {
    fn cluster_type(&self) -> &'static str {
        T::CLUSTER_TYPE
    }
    fn name(&self) -> &'static str {
        T::NAME
    }
    fn description(&self) -> &'static str {
        T::DESCRIPTION
    }
    fn enabled(&self) -> bool {
        T::ENABLED
    }
    fn schedule(&self) -> Option<&'static str> {
        T::SCHEDULE
    }
    fn empty_param(&self) -> Value {
        T::empty_param().to_json().unwrap_or(Value::Null)
    }
    fn accepts_empty(&self) -> bool {
        T::Params::parse_from_json(Some(Value::Object(Default::default()))).is_ok()
    }
    fn example(&self) -> Value {
        T::example().to_json().unwrap_or(Value::Null)
    }
    fn params_schema(&self, registry: &mut Registry) -> MetaSchemaRef {
        T::Params::register(registry);
        T::Params::schema_ref()
    }
    fn prepare(self: Arc<Self>, body: Value) -> Result<Prepared, String> {
        let params = T::Params::parse_from_json(Some(body)).map_err(|e| e.into_message())?;
        Ok(Box::new(move |ctx| {
            Box::pin(async move { self.0.run(params, ctx).await })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_takes_its_own_empty_param_and_schedule() {
        for task in registry() {
            let body = task.empty_param();
            assert!(
                task.clone().prepare(body.clone()).is_ok(),
                "{} refuses its own empty_param {body}",
                task.name()
            );
            if let Some(line) = task.schedule() {
                assert!(
                    crate::config::Schedule::from_line(line).is_ok(),
                    "{}",
                    task.name()
                );
            }
        }
    }
}
