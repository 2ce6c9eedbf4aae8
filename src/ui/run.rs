//! A run's page, `/ui/runs/<session id>`: its status, task, arguments, command, host and
//! instance, times, exit code or signal and error, and its output following live
//! (`GET /ui/runs/<id>/output`, server-sent events that resume at `Last-Event-ID`). It reads a
//! live run from the supervisor, an ended one from the result store (so runs of other replicas
//! show too) or, with no store, from the retained sessions.

use std::sync::Arc;
use std::time::Duration;

use maud::{html, Markup};
use poem::http::StatusCode;
use poem::web::sse::{Event, SSE};
use poem::web::{Data, Path, Query};
use poem::{handler, IntoResponse, Request, Response};
use poem_openapi::types::ToJSON;
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{self, outcome, shell, Nav};
use super::running::kill_button;
use super::Viewer;
use crate::api::output as api_output;
use crate::app::App;
use crate::store::Record;

/// What the page shows of a run, from wherever it is known.
struct Shown {
    status: String,
    task: String,
    args: String,
    command: String,
    host: String,
    instance: String,
    start: String,
    end: Option<String>,
    duration: Option<String>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    error: String,
    last_lines: (String, String),
}

/// The run `id`, live here, recorded in the store, or retained as a session.
async fn find(app: &Arc<App>, id: Uuid) -> Option<Shown> {
    let owner = app.store.owner();
    if let Some(live) = app.runs.live_runs().into_iter().find(|r| r.info.id == id) {
        let info = &live.info;
        return Some(Shown {
            status: "running".into(),
            task: info.task.path.clone(),
            args: layout::json(&info.args),
            command: info.command.clone(),
            host: owner.host.clone(),
            instance: owner.instance.clone(),
            start: layout::when(info.start_at),
            end: None,
            duration: None,
            exit_code: None,
            signal: None,
            error: String::new(),
            last_lines: (crate::logs::lock(&live.latest).clone(), String::new()),
        });
    }
    if let Some(r) = settled_record(app, id).await {
        return Some(from_record(r));
    }
    let s = app.runs.session(id)?;
    Some(Shown {
        status: if s.error.is_empty() {
            "success"
        } else {
            "failed"
        }
        .into(),
        task: s.task,
        args: layout::json(&s.args),
        command: String::new(),
        host: owner.host.clone(),
        instance: owner.instance.clone(),
        start: layout::when(s.start_at),
        end: s.end_at.map(layout::when),
        duration: s
            .end_at
            .map(|e| layout::duration_ms((e - s.start_at).num_milliseconds())),
        exit_code: s.exit_code,
        signal: None,
        error: s.error,
        last_lines: (s.message, String::new()),
    })
}

/// How long a page waits for the last record of a run that has just ended here.
const SETTLE: Duration = Duration::from_secs(3);

/// The run's record. A run of this instance that is no longer live has just ended and its last
/// record is queued for the store: wait for it (up to [`SETTLE`]) rather than show it running.
async fn settled_record(app: &Arc<App>, id: Uuid) -> Option<Record> {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let record = app.store.get(id).await.ok().flatten()?;
        let ours = record.instance == app.store.owner().instance;
        if record.done || !ours || tokio::time::Instant::now() >= deadline {
            return Some(record);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn from_record(r: Record) -> Shown {
    Shown {
        status: r.status,
        task: r.path,
        args: layout::json(&r.args),
        command: r.command,
        host: r.host,
        instance: r.instance,
        start: layout::when_ms(r.start_ms),
        end: r.end_ms.map(layout::when_ms),
        duration: r.duration_ms.map(layout::duration_ms),
        exit_code: r.exit_code,
        signal: r.signal,
        error: r.error,
        last_lines: (r.stdout_last, r.stderr_last),
    }
}

/// `GET /ui/runs/<id>`: the run's page.
#[handler]
pub async fn page(Data(app): Data<&Arc<App>>, Path(id): Path<String>, req: &Request) -> Response {
    let viewer = Viewer::of(req);
    let found = match Uuid::parse_str(&id) {
        Ok(id) => find(app, id).await.map(|s| (id, s)),
        Err(_) => None,
    };
    let Some((id, run)) = found else {
        let mut resp = shell(
            app,
            viewer,
            Nav::None,
            "No such run",
            html! {
                h1 { "No such run" }
                p { "No run with id " code { (id) } " is live here or recorded in the result store." }
            },
        );
        resp.set_status(StatusCode::NOT_FOUND);
        return resp;
    };
    // Live here, so its output follows; a record still saying `running` is another replica's.
    let live = app.runs.live_runs().iter().any(|r| r.info.id == id);
    let main = html! {
        h1 { "Run of " a href={"/ui/tasks/" (run.task)} { (run.task) } }
        p { "Status: " span #run-status { (outcome(&run.status)) } }
        @if live && viewer.can_act { (kill_button(&id.to_string())) }
        (facts(&id, &run))
        h2 { "Output" }
        ol #output.output data-stream={"/ui/runs/" (id) "/output?task=" (run.task)}
            data-live=[live.then_some("1")] aria-live="polite" {}
        @if !live && !run.last_lines.0.is_empty() {
            p { "Last stdout line: " code { (run.last_lines.0) } }
        }
        @if !run.last_lines.1.is_empty() { p { "Last stderr line: " code { (run.last_lines.1) } } }
    };
    shell(app, viewer, Nav::None, &format!("Run {id}"), main)
}

fn facts(id: &Uuid, run: &Shown) -> Markup {
    html! {
        dl.facts {
            dt { "Session" } dd { code { (id) } }
            dt { "Arguments" } dd { code { (run.args) } }
            dt { "Command" } dd { code { (run.command) } }
            dt { "Host" } dd { (run.host) " (instance " (run.instance) ")" }
            dt { "Started" } dd { (run.start) }
            dt { "Ended" } dd { (run.end.as_deref().unwrap_or("—")) }
            dt { "Duration" } dd { (run.duration.as_deref().unwrap_or("—")) }
            dt { "Exit" } dd {
                @match (run.exit_code, run.signal) {
                    (Some(c), _) => { "code " (c) }
                    (None, Some(s)) => { "signal " (s) }
                    (None, None) => "—",
                }
            }
            @if !run.error.is_empty() { dt { "Error" } dd { pre.error { (run.error) } } }
        }
    }
}

/// The query of the output stream.
#[derive(Debug, Deserialize)]
pub struct OutputQuery {
    /// The run's task path (found from the session while it is held).
    task: Option<String>,
}

/// `GET /ui/runs/<id>/output`: the run's output as server-sent events, one page of lines each,
/// with the offset to resume at as the event id.
#[handler]
pub async fn output(
    Data(app): Data<&Arc<App>>,
    Path(id): Path<String>,
    Query(query): Query<OutputQuery>,
    req: &Request,
) -> Response {
    let offset = req
        .header("last-event-id")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    match api_output::pages(app.clone(), &id, query.task.as_deref(), offset) {
        Ok(pages) => SSE::new(futures_util::StreamExt::map(pages, |p| {
            Event::message(p.to_json_string()).id(p.next_offset.to_string())
        }))
        .keep_alive(Duration::from_secs(15))
        .into_response(),
        Err(e) => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .content_type("text/plain; charset=utf-8")
            .body(e),
    }
}
