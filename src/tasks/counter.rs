//! The seed's demo task: counts to N, one logged step per second, then answers "hello world".

use std::time::Duration;

use poem_openapi::Object;

use super::{RustTask, TaskContext};

/// Parameters of the counter demo.
#[derive(Debug, Clone, Object)]
pub struct CounterParams {
    /// How many one-second steps to count.
    #[oai(validator(maximum(value = "86400")))]
    pub counter: u32,
    /// Panic at this step (a demo of a task that panics: only its own run fails).
    #[oai(skip_serializing_if_is_none)]
    pub panic_at: Option<u32>,
}

/// Counts `counter` seconds, logging each step; stops promptly when killed.
pub struct Counter;

impl RustTask for Counter {
    type Params = CounterParams;
    const CLUSTER_TYPE: &'static str = "TendbHA";
    const NAME: &'static str = "counter";
    const DESCRIPTION: &'static str =
        "Demo: counts `counter` seconds, one log line per second, then answers \"hello world\"";
    // A demo: served, but never scheduled, as in the original service.
    const ENABLED: bool = false;

    fn example() -> CounterParams {
        CounterParams {
            counter: 3,
            panic_at: None,
        }
    }

    fn empty_param() -> CounterParams {
        CounterParams {
            counter: 0,
            panic_at: None,
        }
    }

    async fn run(&self, params: CounterParams, ctx: TaskContext) -> Result<String, String> {
        for step in 1..=params.counter {
            if params.panic_at == Some(step) {
                panic!("counter told to panic at step {step}");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    ctx.log(&format!("counter {step}/{}", params.counter));
                }
                () = ctx.cancel.cancelled() => {
                    return Err(format!("killed at step {step} of {}", params.counter));
                }
            }
        }
        Ok("hello world".to_string())
    }
}
