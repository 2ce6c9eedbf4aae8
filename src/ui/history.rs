//! "History": the result store's records, newest first, filtered by task and status and paged by
//! cursor, under a timeline of the last 24 hours drawn as SVG (one lane per task, one mark per
//! run coloured by outcome; each mark is a link whose title names the run).

use std::collections::BTreeMap;
use std::sync::Arc;

use maud::{html, Markup};
use poem::web::{Data, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::layout::{self, outcome, outcome_class, shell, Nav};
use super::Viewer;
use crate::app::App;
use crate::store::record::now_ms;
use crate::store::{History, Record};

/// Records per page of the table.
const PAGE: i64 = 50;
/// The most runs the timeline draws (the newest), so the page stays small.
const MARKS: i64 = 1000;
/// The most lanes the timeline draws (the tasks with the newest runs).
const LANES: usize = 30;
const DAY_MS: i64 = 24 * 3600 * 1000;
/// The statuses a record can have (`RunResult::outcome`, `running`, `lost`), for the filter.
const STATUSES: [&str; 9] = [
    "running",
    "ok",
    "failed",
    "killed",
    "timed_out",
    "cancelled",
    "shutdown",
    "replaced",
    "lost",
];

/// The query of the History page.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    /// Only this task path.
    #[serde(default)]
    task: String,
    /// Only this status.
    #[serde(default)]
    status: String,
    /// The cursor: records older than `<start_ms>_<session id>`.
    #[serde(default)]
    before: String,
}

fn some(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `GET /ui/history`: the timeline, the filter and a page of records.
#[handler]
pub async fn page(
    Data(app): Data<&Arc<App>>,
    Query(query): Query<HistoryQuery>,
    req: &Request,
) -> Response {
    let viewer = Viewer::of(req);
    let before = query
        .before
        .split_once('_')
        .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())));
    let filter = History {
        task: some(&query.task),
        status: some(&query.status),
        limit: PAGE,
        before,
    };
    let timeline = History {
        limit: MARKS,
        before: None,
        ..filter.clone()
    };
    let (records, recent) = match (
        app.store.history(filter).await,
        app.store.history(timeline).await,
    ) {
        (Ok(r), Ok(t)) => (r, t),
        (Err(e), _) | (_, Err(e)) => {
            let main = html! { h1 { "History" } p.error role="alert" { "The result store cannot answer: " (e) } };
            return shell(app, viewer, Nav::History, "History", main);
        }
    };
    let main = html! {
        h1 { "History" }
        h2 #timeline-title { "Last 24 hours" }
        (draw_timeline(&recent, now_ms()))
        (filter_form(&query))
        div.scroll { (table(&records)) }
        (older(&query, &records))
    };
    shell(app, viewer, Nav::History, "History", main)
}

fn filter_form(query: &HistoryQuery) -> Markup {
    html! {
        form.filter method="get" action="/ui/history" {
            label for="task" { "Task" }
            input #task name="task" value=(query.task) placeholder="cluster-type/name";
            label for="status" { "Status" }
            select #status name="status" {
                option value="" { "any" }
                @for s in STATUSES { option value=(s) selected[query.status == s] { (s) } }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn table(records: &[Record]) -> Markup {
    html! {
        table #history {
            thead { tr {
                th scope="col" { "Started" } th scope="col" { "Task" } th scope="col" { "Status" }
                th scope="col" { "Duration" } th scope="col" { "Host" } th scope="col" { "Run" }
            } }
            tbody {
                @for r in records {
                    tr {
                        td { (layout::when_ms(r.start_ms)) }
                        td { (r.path) }
                        td { (outcome(&r.status)) }
                        td { (r.duration_ms.map(layout::duration_ms).unwrap_or_default()) }
                        td { (r.host) }
                        td { a href={"/ui/runs/" (r.session_id)} { "details" } }
                    }
                }
            }
        }
        @if records.is_empty() { p { "No records." } }
    }
}

/// The link to the next page, after the oldest record shown.
fn older(query: &HistoryQuery, records: &[Record]) -> Markup {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    html! {
        @if let (Some(last), true) = (records.last(), records.len() as i64 == PAGE) {
            nav.pager aria-label="Pages" {
                a href={"/ui/history?task=" (enc(&query.task)) "&status=" (enc(&query.status))
                    "&before=" (last.start_ms) "_" (last.session_id)} { "Older" }
            }
        }
    }
}

/// The last 24 hours up to `now`: one lane per task (the tasks of the newest runs first), one
/// mark per run from its start to its end, coloured by outcome.
fn draw_timeline(records: &[Record], now: i64) -> Markup {
    let since = now - DAY_MS;
    let mut lanes: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for r in records.iter().filter(|r| r.start_ms >= since) {
        if !lanes.contains_key(r.path.as_str()) {
            if order.len() == LANES {
                continue;
            }
            order.push(&r.path);
        }
        lanes.entry(&r.path).or_default().push(r);
    }
    let (width, label, lane_h) = (1000i64, 200i64, 18i64);
    let height = lane_h * order.len() as i64 + 20;
    let x = |ms: i64| label + (ms - since).clamp(0, DAY_MS) * (width - label) / DAY_MS;
    html! {
        figure.timeline {
            svg viewBox={"0 0 " (width) " " (height)} role="img" aria-labelledby="timeline-title" {
                @for h in (0..=24).step_by(6) {
                    @let gx = x(since + h * 3600 * 1000);
                    line.grid x1=(gx) x2=(gx) y1="0" y2=(height - 14) {}
                    text.axis x=(gx) y=(height - 2) { "-" (24 - h) " h" }
                }
                @for (i, task) in order.iter().enumerate() {
                    @let y = i as i64 * lane_h;
                    text.lane x="0" y=(y + 13) { (task) }
                    @for r in &lanes[task] {
                        @let x0 = x(r.start_ms);
                        @let w = (x(r.end_ms.unwrap_or(now)) - x0).max(3);
                        a href={"/ui/runs/" (r.session_id)} {
                            rect class=(outcome_class(&r.status)) x=(x0) y=(y + 3) width=(w) height="12" {
                                title { (r.path) " · " (r.status) " · " (layout::when_ms(r.start_ms))
                                    @if let Some(d) = r.duration_ms { " · " (layout::duration_ms(d)) } }
                            }
                        }
                    }
                }
            }
            figcaption {
                (order.len()) " tasks, runs coloured by outcome; hover or focus a mark to see the run."
                @if records.len() as i64 == MARKS { " The newest " (MARKS) " runs are drawn." }
            }
        }
    }
}
