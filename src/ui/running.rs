//! "Running": every live run with its task, start, elapsed time and latest output line, kept up
//! to date by the one event stream of live pages (`GET /ui/events`, fed by the supervisor's run
//! events); and the Kill action, which ends a run as `POST /async/kill` does.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use maud::{html, Markup};
use poem::http::StatusCode;
use poem::web::sse::{Event, SSE};
use poem::web::{Data, Path};
use poem::{handler, IntoResponse, Request, Response};
use serde_json::json;
use uuid::Uuid;

use super::layout::{self, shell, Nav};
use super::{redirect, same_origin, Viewer};
use crate::app::App;
use crate::supervisor::{KillError, Live, RunEvent, RunInfo};

/// How often an idle event stream sends a comment, so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `GET /ui/running`: the live runs.
#[handler]
pub async fn page(Data(app): Data<&Arc<App>>, req: &Request) -> Response {
    let viewer = Viewer::of(req);
    let mut runs = app.runs.live_runs();
    runs.sort_by_key(|r| std::cmp::Reverse(r.info.start_at));
    let main = html! {
        h1 { "Running" }
        p #running-empty hidden[!runs.is_empty()] { "Nothing is running." }
        div.scroll {
            table #running data-live="/ui/events" data-can-act=[viewer.can_act.then_some("1")] {
                thead { tr {
                    th scope="col" { "Task" } th scope="col" { "Started" }
                    th scope="col" { "Elapsed" } th scope="col" { "Latest output" }
                    th scope="col" { span.sr { "Action" } }
                } }
                tbody {
                    @for run in &runs { (row(&run.info, &latest(run), viewer.can_act)) }
                }
            }
        }
    };
    shell(app, viewer, Nav::Running, "Running", main)
}

fn latest(run: &Live) -> String {
    crate::logs::lock(&run.latest).clone()
}

/// One live run's row; the script keeps its elapsed time and latest line current.
fn row(info: &RunInfo, latest: &str, can_act: bool) -> Markup {
    let id = info.id.to_string();
    html! {
        tr id={"run-" (id)} data-start=(info.start_at.timestamp_millis()) {
            th scope="row" { a href={"/ui/runs/" (id)} { (info.task.path) } }
            td { (layout::when(info.start_at)) }
            td.elapsed { (layout::duration_ms(info.started.elapsed().as_millis() as i64)) }
            td { code.latest { (latest) } }
            td { @if can_act { (kill_button(&id)) } }
        }
    }
}

/// The Kill button; the script asks for confirmation before the form is sent.
pub fn kill_button(id: &str) -> Markup {
    html! {
        form method="post" action={"/ui/runs/" (id) "/kill"} data-confirm="Kill this run?" {
            button.danger type="submit" { "Kill" }
        }
    }
}

/// One run event as the pages' script reads it: `started` carries the new row, `output` the
/// run's latest line, `ended` its outcome.
fn event(ev: RunEvent) -> Event {
    match ev {
        RunEvent::Started(info) => {
            let row = row(&info, "", true).into_string();
            Event::message(json!({"id": info.id, "task": info.task.path, "row": row}).to_string())
                .event_type("started")
        }
        RunEvent::Output { id, line } => {
            Event::message(json!({"id": id, "line": &*line}).to_string()).event_type("output")
        }
        RunEvent::Ended {
            info, result, took, ..
        } => Event::message(
            json!({
                "id": info.id,
                "task": info.task.path,
                "status": result.outcome(),
                "class": layout::outcome_class(result.outcome()),
                "took": layout::duration_ms(took.as_millis() as i64),
            })
            .to_string(),
        )
        .event_type("ended"),
    }
}

/// How often an event stream with nothing to send looks whether shutdown has begun.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// `GET /ui/events`: every run event from now on, one stream per live page. It ends when
/// shutdown begins, so an open page does not hold the connection through the shutdown's grace.
#[handler]
pub async fn events(Data(app): Data<&Arc<App>>) -> impl IntoResponse {
    let start = (app.runs.subscribe(), app.clone());
    let events = stream::unfold(start, |(mut live, app)| async move {
        loop {
            if app.runs.is_draining() {
                return None;
            }
            tokio::select! {
                ev = live.next() => return Some((event(ev?), (live, app))),
                () = tokio::time::sleep(DRAIN_CHECK) => {}
            }
        }
    });
    SSE::new(events.boxed()).keep_alive(KEEP_ALIVE)
}

/// `POST /ui/runs/<id>/kill`: kills the run and shows its page.
#[handler]
pub async fn kill_action(
    Data(app): Data<&Arc<App>>,
    Path(id): Path<String>,
    req: &Request,
) -> Response {
    if !same_origin(req) {
        return super::cross_origin();
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return plain(StatusCode::BAD_REQUEST, "the run id is not a UUID");
    };
    match app.runs.kill(id).await {
        Ok(_) => redirect(&format!("/ui/runs/{id}")),
        // Another replica's run: ask through the store, as /async/kill does.
        Err(KillError::NotFound(_)) => {
            let wait = app.runs.deadlines().stopped_within();
            match app.store.remote_kill(id, wait).await {
                Ok(Some(_)) => redirect(&format!("/ui/runs/{id}")),
                Ok(None) => plain(StatusCode::NOT_FOUND, "no run has this id"),
                Err(_) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the result store cannot be reached",
                ),
            }
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    Response::builder()
        .status(status)
        .content_type("text/plain; charset=utf-8")
        .body(text)
}
