//! One run of the floor's command, started exactly the way the service starts its children: the
//! service's own spawning code (src/runner/command.rs, compiled in here: tokio::process wrapped by
//! process-wrap, a process group of its own, the same three extra variables), stdin from
//! `/dev/null`, stdout and stderr piped and read to the end, and the child reaped by tokio. Only
//! the service's own work around it (HTTP, logs, the line splitting, the workers) is left out,
//! which is what the ratio to the floor measures.

use std::ffi::OsString;

use tokio::io::{AsyncRead, AsyncReadExt};

#[path = "../../../src/runner/command.rs"]
mod command;

/// The variables the service adds for every run, with values of the same length, so that the
/// child's environment is built the same way and is as large.
const VARS: [(&str, &str); 3] = [
    ("CS_TASK_NAME", "floor"),
    ("CS_CLUSTER_TYPE", "bench"),
    ("CS_SESSION_ID", "00000000-0000-4000-8000-000000000000"),
];

/// The command, and the runtime one worker thread starts it on (the service's workers each run
/// a current-thread runtime too).
pub struct Prepared {
    program: OsString,
    args: Vec<OsString>,
    runtime: tokio::runtime::Runtime,
}

impl Prepared {
    pub fn new(command: &[String]) -> Result<Self, String> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| "spawn needs -- PROG ARGS...".to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime: {e}"))?;
        Ok(Self {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            runtime,
        })
    }

    /// Runs the command to its end; `Ok(true)` when it exited 0 having printed something.
    pub fn run(&self) -> Result<bool, String> {
        self.runtime.block_on(async {
            let mut child = command::spawn(&self.program, &self.args, &VARS)
                .map_err(|e| format!("cannot spawn {:?}: {e}", self.program))?;
            let stdout = child.stdout().take();
            let stderr = child.stderr().take();
            let (printed, _) = tokio::join!(drain(stdout), drain(stderr));
            let status = child
                .wait()
                .await
                .map_err(|e| format!("cannot wait for {:?}: {e}", self.program))?;
            Ok(status.success() && printed > 0)
        })
    }
}

/// Reads a stream to its end; how many bytes came.
async fn drain(stream: Option<impl AsyncRead + Unpin>) -> usize {
    let Some(mut stream) = stream else { return 0 };
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        total += n;
    }
    total
}
