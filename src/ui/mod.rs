//! The web dashboard at `/ui/`: server-rendered pages (maud) for the tasks, the live runs, one
//! run, the history and the served config, with live parts over server-sent events fed by the
//! run supervisor's events ([`crate::supervisor::Supervisor::subscribe`]).
//!
//! One file per page: [`tasks`] (the start page, a task's Run form and the Run action),
//! [`running`] (live runs, Kill and the one event stream of live pages), [`run`] (a run's page and
//! its output stream), [`history`] (the store's records and the 24 hour timeline), [`config`]
//! (the served config and Reload) and [`signin`] (the token cookie). [`layout`] is the frame every
//! page shares (navigation, the rejected-reload alert, the spooling notice) and the embedded
//! stylesheet and script; nothing is loaded from anywhere but the service itself.
//!
//! Access is declared in [`ROUTES`] like every API route: pages are read-only, the actions (Run,
//! Kill, Reload) need a full token and a request from the dashboard's own origin.

mod config;
mod history;
mod layout;
mod run;
mod running;
mod signin;
mod tasks;
mod words;

use poem::http::{header, Method, StatusCode};
use poem::{get, post, Endpoint, EndpointExt, IntoResponse, Request, Response};

use crate::auth::Grant;
use crate::http::{Access, Route};

/// `GET /`: the start page of the dashboard.
const ROOT: Route = Route::new("GET", "/", Access::Open).undocumented();

/// A page: read-only, not an API operation.
const fn page(path: &'static str) -> Route {
    Route::new("GET", path, Access::Read).undocumented()
}

/// An action: changes something, so a full token only.
const fn action(path: &'static str) -> Route {
    Route::new("POST", path, Access::Protected).undocumented()
}

const TASKS: Route = page("/ui");
const TASK: Route = page("/ui/tasks/:cluster_type/:name");
const RUN_TASK: Route = action("/ui/tasks/:cluster_type/:name/run");
const RUNNING: Route = page("/ui/running");
const EVENTS: Route = page("/ui/events");
const RUN: Route = page("/ui/runs/:id");
const OUTPUT: Route = page("/ui/runs/:id/output");
const KILL: Route = action("/ui/runs/:id/kill");
const HISTORY: Route = page("/ui/history");
const CONFIG: Route = page("/ui/config");
const RELOAD: Route = action("/ui/config/reload");
const SIGNIN: Route = Route::new("GET", "/ui/signin", Access::Open).undocumented();
const SIGNIN_POST: Route = Route::new("POST", "/ui/signin", Access::Open).undocumented();
const SIGNOUT: Route = Route::new("POST", "/ui/signout", Access::Open).undocumented();
const CSS: Route = Route::new("GET", "/ui/assets/ui.css", Access::Open).undocumented();
const JS: Route = Route::new("GET", "/ui/assets/ui.js", Access::Open).undocumented();

/// The routes of the dashboard, with the access each needs.
pub const ROUTES: &[Route] = &[
    ROOT,
    TASKS,
    TASK,
    RUN_TASK,
    RUNNING,
    EVENTS,
    RUN,
    OUTPUT,
    KILL,
    HISTORY,
    CONFIG,
    RELOAD,
    SIGNIN,
    SIGNIN_POST,
    SIGNOUT,
    CSS,
    JS,
];

/// Adds the dashboard to `route`, at its declared paths.
pub fn mount(route: poem::Route) -> poem::Route {
    route
        .at(TASKS.path, get(tasks::page))
        // The start page is `/ui/`; the router tells it from `/ui`, the declarations do not.
        .at("/ui/", get(tasks::page))
        .at(TASK.path, get(tasks::task_page))
        .at(RUN_TASK.path, post(tasks::run_action))
        .at(RUNNING.path, get(running::page))
        .at(EVENTS.path, get(running::events))
        .at(RUN.path, get(run::page))
        .at(OUTPUT.path, get(run::output))
        .at(KILL.path, post(running::kill_action))
        .at(HISTORY.path, get(history::page))
        .at(CONFIG.path, get(config::page))
        .at(RELOAD.path, post(config::reload_action))
        .at(SIGNIN.path, get(signin::page).post(signin::submit))
        .at(SIGNOUT.path, post(signin::sign_out))
        .at(CSS.path, get(layout::asset(layout::CSS_TYPE, layout::CSS)))
        .at(JS.path, get(layout::asset(layout::JS_TYPE, layout::JS)))
}

/// Sends `GET /` to the dashboard ([`ROOT`]). Done around the router because the OpenAPI
/// service, nested at `/`, owns that path there.
pub fn start_page<E: Endpoint + 'static>(ep: E) -> impl Endpoint<Output = Response> {
    ep.around(|ep, req| async move {
        if req.method() == Method::GET && req.uri().path() == ROOT.path {
            return Ok(redirect("/ui/"));
        }
        ep.call(req).await.map(IntoResponse::into_response)
    })
}

/// What the viewer may do: no tokens configured, or a full token, may change things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Viewer {
    /// Whether Run, Kill and Reload are offered.
    pub can_act: bool,
    /// Whether tokens are configured (a Sign out button is offered).
    pub signed_in: bool,
}

impl Viewer {
    /// The viewer of `req`, from the grant the authentication middleware gave it.
    pub fn of(req: &Request) -> Self {
        match req.extensions().get::<Grant>() {
            None => Self {
                can_act: true,
                signed_in: false,
            },
            Some(grant) => Self {
                can_act: *grant == Grant::Full,
                signed_in: true,
            },
        }
    }
}

/// A `303 See Other` to `to`.
pub(crate) fn redirect(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .finish()
}

/// Whether a state-changing request comes from the dashboard's own pages: its `Origin` is this
/// service's (a page elsewhere cannot make a signed-in browser act).
pub(crate) fn same_origin(req: &Request) -> bool {
    let (Some(origin), Some(host)) = (req.header(header::ORIGIN), req.header(header::HOST)) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|o| o == host)
}

/// The answer to an action from another origin.
pub(crate) fn cross_origin() -> Response {
    Response::builder()
        .status(StatusCode::FORBIDDEN)
        .content_type("text/plain; charset=utf-8")
        .body("refused: the request's Origin is not this dashboard's")
}
