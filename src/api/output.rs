//! A run's output: by offset (`GET /async/output`) or as server-sent events
//! (`GET /async/output-stream`), read from its task's log file.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use poem::web::sse::Event;
use poem::IntoResponse;
use poem_openapi::param::{Header, Query};
use poem_openapi::payload::{EventStream, Json, Payload};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::sessions::parse_session_id;
use crate::app::App;
use crate::http::{Access, Envelope, ErrorEnvelope, Route};
use crate::logs::tail::{self, TailError};

/// The routes of this file, with the access each needs: reading output stops nothing.
pub const ROUTES: &[Route] = &[
    Route::new("GET", "/async/output", Access::Read).listed(12),
    Route::new("GET", "/async/output-stream", Access::Read).listed(13),
];

/// How often the event stream looks for new output while the run goes on.
const STREAM_POLL: Duration = Duration::from_millis(200);

/// The output API.
pub struct OutputApi {
    /// The service.
    pub app: Arc<App>,
}

/// One output line of a run.
#[derive(Debug, Clone, Object)]
pub struct OutputLine {
    /// When it was logged (RFC 3339).
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line, without its newline.
    pub text: String,
}

/// A page of a run's output.
#[derive(Debug, Clone, Object)]
pub struct OutputPage {
    /// The run's lines from the asked offset on (bounded by `--output-max-bytes`).
    pub lines: Vec<OutputLine>,
    /// The byte offset in the task log to ask for next.
    pub next_offset: u64,
    /// Whether the run has ended and every line of it has been answered.
    pub done: bool,
}

/// Answers of `/async/output` (`P`: a page as JSON) and `/async/output-stream` (`P`: the pages
/// as server-sent events).
#[derive(ApiResponse)]
pub enum OutputAnswer<P: Payload + IntoResponse> {
    /// `/async/output`: a page of output. `/async/output-stream`: one `OutputPage` event per
    /// batch of lines, each with its `next_offset` as the event id; the stream ends after the
    /// page with `done`.
    #[oai(status = 200)]
    Ok(P),
    /// The session id is not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// No such session (past its retention: pass `task`), or its task is no longer configured.
    #[oai(status = 404)]
    NotFound(Json<ErrorEnvelope>),
    /// The log rotated past the offset.
    #[oai(status = 410)]
    Gone(Json<ErrorEnvelope>),
}

type PageAnswer = OutputAnswer<Json<Envelope<OutputPage>>>;
type StreamAnswer = OutputAnswer<EventStream<BoxStream<'static, OutputPage>>>;

/// Where a session's output is: its task's log file, and whether the session is known to be
/// still running.
struct Source {
    log: std::path::PathBuf,
    session: Uuid,
}

/// Why output cannot be served.
enum Refused {
    Bad(String),
    NotFound(String),
    Gone(String),
}

impl<P: Payload + IntoResponse> From<Refused> for OutputAnswer<P> {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Bad(m) => Self::BadRequest(Json(ErrorEnvelope::new(m))),
            Refused::NotFound(m) => Self::NotFound(Json(ErrorEnvelope::new(m))),
            Refused::Gone(m) => Self::Gone(Json(ErrorEnvelope::new(m))),
        }
    }
}

impl OutputApi {
    fn source(&self, session_id: &str, task: Option<&str>) -> Result<Source, Refused> {
        let session = parse_session_id(session_id).map_err(Refused::Bad)?;
        let path = match self.app.runs.session(session) {
            Some(s) => s.task,
            None => task.map(String::from).ok_or_else(|| {
                Refused::NotFound(format!(
                    "session {session} not found (past its retention, pass `task=<cluster-type>/<name>`)"
                ))
            })?,
        };
        let table = self.app.routes.load();
        let Some(task) = table.get(path.trim_matches('/')) else {
            return Err(Refused::NotFound(format!(
                "task {path} of session {session} is not configured"
            )));
        };
        Ok(Source {
            log: self.app.logs.path(&task.name),
            session,
        })
    }

    /// Whether the session has ended (a session no longer held ended long ago).
    fn ended(&self, session: Uuid) -> bool {
        self.app.runs.session(session).is_none_or(|s| s.done)
    }

    async fn page(&self, src: &Source, offset: u64) -> Result<OutputPage, Refused> {
        // Read the state first: a run seen as ended has all its lines queued for the file.
        let ended = self.ended(src.session);
        self.app.logs.flushed().await;
        let (path, session, max) = (
            src.log.clone(),
            src.session,
            self.app.settings.request_limits.output_max_bytes,
        );
        let read = tokio::task::spawn_blocking(move || tail::read(&path, session, offset, max))
            .await
            .map_err(|e| Refused::Gone(format!("the read failed: {e}")))?;
        let t = match read {
            Ok(t) => t,
            Err(e @ TailError::Rotated { .. }) => return Err(Refused::Gone(e.to_string())),
            Err(e) => return Err(Refused::NotFound(e.to_string())),
        };
        Ok(OutputPage {
            lines: t
                .lines
                .into_iter()
                .map(|l| OutputLine {
                    time: l.time,
                    stream: l.stream,
                    text: l.text,
                })
                .collect(),
            next_offset: t.next_offset,
            done: ended && t.at_end,
        })
    }
}

/// The pages of `src` from `offset` on, as the run prints, ending with the page whose `done` is
/// true (or at a rotation or read error).
fn follow(app: Arc<App>, src: Source, offset: u64) -> BoxStream<'static, OutputPage> {
    let ops = Arc::new(OutputApi { app });
    let start = (ops, src, offset, false);
    stream::unfold(start, |(ops, src, offset, finished)| async move {
        if finished {
            return None;
        }
        loop {
            // A rotation or a read error ends the stream.
            let page = ops.page(&src, offset).await.ok()?;
            if page.done || !page.lines.is_empty() {
                let next = page.next_offset;
                let done = page.done;
                return Some((page, (ops, src, next, done)));
            }
            tokio::time::sleep(STREAM_POLL).await;
        }
    })
    .boxed()
}

/// The output of session `session_id` from byte `offset` of its task's log, page by page as the
/// run prints (what `/async/output-stream` sends); `task` is needed once the session is past its
/// retention. `Err` says why there is none.
pub fn pages(
    app: Arc<App>,
    session_id: &str,
    task: Option<&str>,
    offset: u64,
) -> Result<BoxStream<'static, OutputPage>, String> {
    let ops = OutputApi { app: app.clone() };
    match ops.source(session_id, task) {
        Ok(src) => Ok(follow(app, src, offset)),
        Err(Refused::Bad(m) | Refused::NotFound(m) | Refused::Gone(m)) => Err(m),
    }
}

#[OpenApi]
impl OutputApi {
    /// A run's stdout and stderr lines from byte `offset` of its task log, the offset to ask
    /// for next, and whether the run is done. Start at 0 (or a previous `next_offset`).
    #[oai(path = "/async/output", method = "get")]
    async fn output(
        &self,
        /// The session id `POST /async/...` answered with.
        session_id: Query<String>,
        /// Byte offset in the task log; 0 reads from the start of the current file.
        offset: Query<Option<u64>>,
        /// The task's path (`<cluster-type>/<name>`), needed only once the session is past its
        /// retention.
        task: Query<Option<String>>,
    ) -> PageAnswer {
        let src = match self.source(&session_id.0, task.0.as_deref()) {
            Ok(src) => src,
            Err(e) => return e.into(),
        };
        match self.page(&src, offset.0.unwrap_or(0)).await {
            Ok(p) => OutputAnswer::Ok(Json(Envelope::ok(p))),
            Err(e) => e.into(),
        }
    }

    /// The same pages as server-sent events, as the run prints; the stream ends with the page
    /// whose `done` is true. A browser's `EventSource` that reconnects resumes where it stopped.
    #[oai(path = "/async/output-stream", method = "get")]
    async fn output_stream(
        &self,
        /// The session id `POST /async/...` answered with.
        session_id: Query<String>,
        /// Byte offset in the task log to start from.
        offset: Query<Option<u64>>,
        /// The task's path, needed only once the session is past its retention.
        task: Query<Option<String>>,
        /// Sent by a reconnecting `EventSource`: the id of the last event it got (that page's
        /// `next_offset`); the stream resumes there, whatever `offset` says.
        #[oai(name = "Last-Event-ID")]
        last_event_id: Header<Option<u64>>,
    ) -> StreamAnswer {
        let src = match self.source(&session_id.0, task.0.as_deref()) {
            Ok(src) => src,
            Err(e) => return e.into(),
        };
        let pages = follow(
            self.app.clone(),
            src,
            last_event_id.0.or(offset.0).unwrap_or(0),
        );
        let events = EventStream::new(pages).to_event(|page: OutputPage| {
            Event::message(page.to_json_string()).id(page.next_offset.to_string())
        });
        OutputAnswer::Ok(events)
    }
}
