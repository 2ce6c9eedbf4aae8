//! The frame every dashboard page shares: the head, the navigation, the rejected-reload alert and
//! the spooling notice; the embedded stylesheet and script; and the small formats pages share
//! (times, durations, outcome colours).

use std::sync::Arc;

use chrono::{DateTime, Local, TimeZone};
use maud::{html, Markup, DOCTYPE};
use poem::http::header;
use poem::Response;

use super::Viewer;
use crate::app::App;
use crate::store::StoreState;

/// The stylesheet: light and dark follow the system (`prefers-color-scheme`).
pub const CSS: &[u8] = include_bytes!("../../assets/ui/ui.css");
/// Its content type.
pub const CSS_TYPE: &str = "text/css; charset=utf-8";
/// The script: the task filter, Kill's confirmation, the live views (no build step).
pub const JS: &[u8] = include_bytes!("../../assets/ui/ui.js");
/// Its content type.
pub const JS_TYPE: &str = "text/javascript; charset=utf-8";

/// Which page of the navigation is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    /// The Tasks page (and a task's page).
    Tasks,
    /// The Running page.
    Running,
    /// The History page.
    History,
    /// The Config page.
    Config,
    /// A page of none of them (a run, sign-in).
    None,
}

/// An embedded file, cached by browsers for an hour (it changes only with a deploy).
pub fn asset(
    content_type: &'static str,
    bytes: &'static [u8],
) -> impl poem::Endpoint<Output = Response> {
    poem::endpoint::make_sync(move |_| {
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, "public, max-age=3600")
            .body(bytes)
    })
}

/// A whole page: `title`, the navigation with `nav` current, the notices, then `main`.
pub fn shell(app: &Arc<App>, viewer: Viewer, nav: Nav, title: &str, main: Markup) -> Response {
    let links = [
        (Nav::Tasks, "/ui/", "Tasks"),
        (Nav::Running, "/ui/running", "Running"),
        (Nav::History, "/ui/history", "History"),
        (Nav::Config, "/ui/config", "Config"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · celery-service" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
            }
            body {
                header {
                    nav aria-label="Dashboard" {
                        strong { "celery-service" }
                        ul {
                            @for (n, href, label) in links {
                                li { a href=(href) aria-current=[(n == nav).then_some("page")] { (label) } }
                            }
                        }
                        @if viewer.signed_in {
                            form method="post" action="/ui/signout" { button type="submit" { "Sign out" } }
                        }
                    }
                }
                (notices(app))
                main { (main) }
            }
        }
    };
    html_response(markup)
}

/// The rejected-reload alert and the spooling notice, shown on every page.
fn notices(app: &Arc<App>) -> Markup {
    let config = app.reloader.status();
    let store = app.store.status();
    html! {
        @if let Some(failure) = &config.last_error {
            div.alert role="alert" {
                strong { "The newest config file was rejected" }
                " (" (when_rfc3339(&failure.at)) "); generation " (config.generation)
                " keeps serving. "
                pre { (failure.message) }
            }
        }
        @if store.state == StoreState::Spooling {
            div.notice role="status" {
                strong { "The result store is spooling: " }
                (store.spool_size) " records wait on local disk until " (store.location)
                " is back."
                @if let Some(e) = &store.last_error { " Last error: " (e) }
            }
        }
    }
}

/// What a page may load and where its forms may go: this service only.
const CSP: &str =
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'";

/// An HTML answer; pages are never cached (they are live state) and load nothing from elsewhere.
pub fn html_response(markup: Markup) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .body(markup.into_string())
}

/// A moment as pages show it: local date and time to the second.
pub fn when(t: DateTime<Local>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Milliseconds since the epoch as [`when`] shows them.
pub fn when_ms(ms: i64) -> String {
    Local
        .timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| ms.to_string(), when)
}

/// An RFC 3339 time as [`when`] shows it.
pub fn when_rfc3339(text: &str) -> String {
    DateTime::parse_from_rfc3339(text)
        .map_or_else(|_| text.to_string(), |t| when(t.with_timezone(&Local)))
}

/// A duration in the largest units that matter: `850 ms`, `12.3 s`, `4 min 5 s`, `2 h 3 min`.
pub fn duration_ms(ms: i64) -> String {
    match ms {
        ..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// The class colouring an outcome (`ok`, `failed`, `killed`, `running` …): green for a
/// success, blue while live, amber when someone or something stopped it, violet when its
/// replica was lost, red for a failure or a timeout.
pub fn outcome_class(status: &str) -> &'static str {
    match status {
        "ok" => "ok",
        "running" => "live",
        "killed" | "cancelled" | "shutdown" | "replaced" => "killed",
        "lost" => "lost",
        _ => "bad",
    }
}

/// An outcome as a coloured word.
pub fn outcome(status: &str) -> Markup {
    html! { span class={"outcome " (outcome_class(status))} { (status) } }
}

/// A JSON value, compact.
pub fn json(value: &serde_json::Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}
