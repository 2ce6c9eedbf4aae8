//! The start page, "Tasks": one row per task (path, cluster type, language, schedule in words and
//! its next fire time, enabled, the last run and a strip of the last 20), filtered by a text and
//! paged, each row's last run kept current by the live page's event stream; a task's page with its "Run" form; and the Run action, which starts an async run and
//! goes to its page.

use std::sync::Arc;

use chrono::Local;
use maud::{html, Markup};
use poem::http::StatusCode;
use poem::web::{Data, Form, Path, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::layout::{self, outcome, outcome_class, shell, Nav};
use super::{redirect, same_origin, words, Viewer};
use crate::api::body;
use crate::app::{App, Input};
use crate::store::{History, Record};
use crate::table::{Task, TaskKind};

/// Rows per page: with the strip of each row's last runs, a page stays well under 300 kB.
const PAGE: usize = 50;
/// Runs in a row's strip.
const STRIP: i64 = 20;

/// The query of the Tasks page.
#[derive(Debug, Default, Deserialize)]
pub struct TasksQuery {
    /// Only tasks whose path or cluster type contains this (any case).
    #[serde(default)]
    q: String,
    /// The first row shown.
    #[serde(default)]
    from: usize,
}

/// `GET /ui/`: the Tasks page.
#[handler]
pub async fn page(
    Data(app): Data<&Arc<App>>,
    Query(query): Query<TasksQuery>,
    req: &Request,
) -> Response {
    let viewer = Viewer::of(req);
    let table = app.routes.load();
    let needle = query.q.trim().to_lowercase();
    let matching: Vec<&Arc<Task>> = table
        .tasks
        .values()
        .filter(|t| {
            needle.is_empty()
                || t.path.to_lowercase().contains(&needle)
                || t.cluster_type.to_lowercase().contains(&needle)
        })
        .collect();
    let total = matching.len();
    let shown: Vec<&Arc<Task>> = matching.into_iter().skip(query.from).take(PAGE).collect();
    let mut rows = Vec::with_capacity(shown.len());
    for task in shown {
        let runs = recent_runs(app, &task.path).await;
        rows.push(row(task, &runs, viewer));
    }
    let main = html! {
        h1 { "Tasks" }
        form.filter method="get" action="/ui/" role="search" {
            label for="filter" { "Filter" }
            input #filter type="search" name="q" value=(query.q) autocomplete="off"
                placeholder="path or cluster type";
            button type="submit" { "Apply" }
        }
        p #task-count { (total) " tasks" @if !needle.is_empty() { " match" } }
        div.scroll {
            table #tasks data-live="/ui/events" {
                thead { tr {
                    th scope="col" { "Task" } th scope="col" { "Cluster type" }
                    th scope="col" { "Language" } th scope="col" { "Schedule" }
                    th scope="col" { "Enabled" } th scope="col" { "Last run" }
                    th scope="col" { "Last 20 runs" } th scope="col" { span.sr { "Action" } }
                } }
                tbody { @for r in rows { (r) } }
            }
        }
        (pager(&query, total))
    };
    shell(app, viewer, Nav::Tasks, "Tasks", main)
}

/// The newest runs of the task at `path` (none when the store cannot answer).
async fn recent_runs(app: &Arc<App>, path: &str) -> Vec<Record> {
    let h = History {
        task: Some(path.to_string()),
        status: None,
        limit: STRIP,
        before: None,
    };
    app.store.history(h).await.unwrap_or_default()
}

/// Links to the pages before and after this one.
fn pager(query: &TasksQuery, total: usize) -> Markup {
    let q = percent_encoding::utf8_percent_encode(&query.q, percent_encoding::NON_ALPHANUMERIC);
    html! {
        nav.pager aria-label="Pages" {
            @if query.from > 0 {
                a href={"/ui/?q=" (q) "&from=" (query.from.saturating_sub(PAGE))} { "Previous" }
            }
            @if total > 0 { span { (query.from + 1) "–" (total.min(query.from + PAGE)) " of " (total) } }
            @if query.from + PAGE < total {
                a href={"/ui/?q=" (q) "&from=" (query.from + PAGE)} { "Next" }
            }
        }
    }
}

/// A task's language: an external task's interpreter, or Rust for a built-in one.
fn language(task: &Task) -> &'static str {
    match &task.kind {
        TaskKind::External { task, .. } => task.language.as_str(),
        TaskKind::Builtin(_) => "built-in (Rust)",
    }
}

fn task_href(task: &Task) -> String {
    format!("/ui/tasks/{}", task.path)
}

fn row(task: &Task, runs: &[Record], viewer: Viewer) -> Markup {
    let next = task
        .schedule
        .as_ref()
        .and_then(|s| s.next_after(Local::now()));
    html! {
        tr data-task=(task.path) {
            th scope="row" { a href=(task_href(task)) { (task.path) } }
            td { (task.cluster_type) }
            td { (language(task)) }
            td {
                @match &task.schedule {
                    Some(s) => { (words::schedule(s)) @if let Some(n) = next { br; small { "next " (layout::when(n)) } } }
                    None => { small { "none" } }
                }
            }
            td { @if task.enabled { "yes" } @else { "no" } }
            td.last {
                @if let Some(last) = runs.first() {
                    a href={"/ui/runs/" (last.session_id)} { (outcome(&last.status)) }
                    br; small { (layout::when_ms(last.start_ms)) }
                } @else { small { "never" } }
            }
            td { (strip(runs)) }
            td {
                @if viewer.can_act {
                    form method="get" action=(task_href(task)) { button type="submit" { "Run" } }
                }
            }
        }
    }
}

/// The last runs as bars, oldest left: colour by outcome, height by duration.
fn strip(runs: &[Record]) -> Markup {
    let longest = runs
        .iter()
        .filter_map(|r| r.duration_ms)
        .max()
        .unwrap_or(1)
        .max(1);
    let n = runs.len();
    html! {
        svg.strip width="160" height="20" viewBox="0 0 160 20" role="img"
            aria-label={(n) " recent runs"} {
            @for (i, r) in runs.iter().rev().enumerate() {
                @let h = 4 + 16 * r.duration_ms.unwrap_or(longest) / longest;
                rect class=(outcome_class(&r.status)) x=(i * 8) y=(20 - h) width="6" height=(h) {
                    title { (r.status) " " (layout::when_ms(r.start_ms)) }
                }
            }
        }
    }
}

/// `GET /ui/tasks/<ct>/<name>`: a task, its Run form and its recent runs.
#[handler]
pub async fn task_page(
    Data(app): Data<&Arc<App>>,
    Path((ct, name)): Path<(String, String)>,
    req: &Request,
) -> Response {
    let Some(task) = app.routes.load().get(&format!("{ct}/{name}")).cloned() else {
        return not_found(app, req, &format!("{ct}/{name}"));
    };
    let args = layout::json(&task.empty_param);
    run_form(app, req, &task, &args, None)
}

fn not_found(app: &Arc<App>, req: &Request, path: &str) -> Response {
    let mut resp = shell(
        app,
        Viewer::of(req),
        Nav::Tasks,
        "No such task",
        html! {
            h1 { "No such task" }
            p { "No task is configured at " code { (path) } ". " a href="/ui/" { "All tasks" } }
        },
    );
    resp.set_status(StatusCode::NOT_FOUND);
    resp
}

/// The task's page with its form holding `args`, and `error` above it when the last try was
/// refused.
fn run_form(
    app: &Arc<App>,
    req: &Request,
    task: &Task,
    args: &str,
    error: Option<&str>,
) -> Response {
    let viewer = Viewer::of(req);
    let main = html! {
        h1 { (task.path) }
        p { (task.description()) }
        dl {
            dt { "Cluster type" } dd { (task.cluster_type) }
            dt { "Language" } dd { (language(task)) }
            dt { "Schedule" } dd { @match &task.schedule { Some(s) => { (words::schedule(s)) " (" code { (s.line()) } ")" } None => "none" } }
            dt { "Enabled" } dd { @if task.enabled { "yes" } @else { "no" } }
        }
        @if viewer.can_act {
            form.run method="post" action={(task_href(task)) "/run"} {
                @if let Some(e) = error { p.error role="alert" { (e) } }
                label for="args" { "Arguments" }
                textarea #args name="args" rows="4" spellcheck="false" aria-describedby="args-help" { (args) }
                small #args-help { "JSON: a list of arguments, or a built-in task's parameters." }
                button type="submit" { "Run" }
            }
        } @else {
            p { "A read-only token cannot start runs." }
        }
        p { a href={"/ui/history?task=" (task.path)} { "History of this task" } }
    };
    let mut resp = shell(app, viewer, Nav::Tasks, &task.path, main);
    if error.is_some() {
        resp.set_status(StatusCode::BAD_REQUEST);
    }
    resp
}

/// The Run form's fields.
#[derive(Debug, Deserialize)]
pub struct RunForm {
    /// The body, as the task route takes it.
    args: String,
}

/// `POST /ui/tasks/<ct>/<name>/run`: starts the task as an async run, then shows its page; a
/// refused body or run shows the form again with the service's error.
#[handler]
pub async fn run_action(
    Data(app): Data<&Arc<App>>,
    Path((ct, name)): Path<(String, String)>,
    Form(form): Form<RunForm>,
    req: &Request,
) -> Response {
    if !same_origin(req) {
        return super::cross_origin();
    }
    let Some(task) = app.routes.load().get(&format!("{ct}/{name}")).cloned() else {
        return not_found(app, req, &format!("{ct}/{name}"));
    };
    let input = body::task_input(&task, form.args.as_bytes()).and_then(|input| match &input {
        Input::Args(args) => app.settings.request_limits.check_args(args).map(|()| input),
        Input::Builtin(..) => Ok(input),
    });
    let input = match input {
        Ok(input) => input,
        Err(e) => return run_form(app, req, &task, &form.args, Some(&e)),
    };
    match app.runs.start_async(task.clone(), input, None) {
        Ok(id) => redirect(&format!("/ui/runs/{id}")),
        Err(refused) => run_form(app, req, &task, &form.args, Some(&refused.to_string())),
    }
}
