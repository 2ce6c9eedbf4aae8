//! The HTTP layer: translates requests into [`App`] calls and results into `{code, data, msg}`.
//!
//! The fixed API is written with poem-openapi, so its types and `///` comments become the
//! OpenAPI document. The per-task endpoints (`/sync/<ct>/<name>`, `/async/<ct>/<name>`) are plain
//! poem handlers that look the task up in the current route table on every call, so a reload
//! changes them without rebuilding the router. Every error, including poem's own (404, 405,
//! a body that does not parse), leaves through [`error_envelope`], the one place that maps errors
//! to HTTP.

pub mod body;
mod envelope;
pub mod hangup;
pub mod openapi;
pub mod ops;
mod refusal;
mod rendered;
mod results;
mod task_ops;
mod task_route;

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{post, EndpointExt, IntoEndpoint, Response, Route};
use poem_openapi::param::Query;
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{ApiResponse, Object, OpenApi, OpenApiService};
use uuid::Uuid;

use crate::app::App;
use crate::config::Schedule;
use crate::reload::{ConfigStatus, Trigger};
use crate::sessions::SessionInfo;
use crate::store::StoreStatus;
use crate::supervisor::KillError;
use results::ResultsAnswer;

pub use body::LenientJson;
pub use envelope::{respond as envelope_response, Envelope, ErrorEnvelope};

/// One route of `/list`.
#[derive(Debug, Clone, Object)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: String,
    /// URL path.
    pub path: String,
}

/// One task of `/discovery`, as the Django side registers periodic tasks from it: skip it when
/// `enable` is false, schedule it with `crontab(**crontab)` (or the scheduler's own default when
/// there is no `crontab`), and `POST /async/<url>` with `empty_param` as the body.
#[derive(Debug, Clone, Object)]
pub struct DiscoveryItem {
    /// Task name as configured.
    pub name: String,
    /// Cluster type as configured.
    pub cluster_type: String,
    /// `<cluster-type>/<name>` in kebab case: the part after `/sync/` or `/async/`.
    pub url: String,
    /// Whether schedulers should schedule the task; a disabled task is served all the same.
    pub enable: bool,
    /// The body a scheduler posts on schedule: `[]` unless the task says otherwise.
    pub empty_param: serde_json::Value,
    /// The task's schedule as the keyword arguments of `celery.schedules.crontab`; absent (not
    /// null) when the task has none.
    #[oai(skip_serializing_if_is_none)]
    pub crontab: Option<Crontab>,
    /// What the task does.
    pub description: String,
}

/// A schedule as the keyword arguments of `celery.schedules.crontab`, every one a string.
#[derive(Debug, Clone, Object)]
pub struct Crontab {
    /// Minutes, 0-59, e.g. `*/5`.
    pub minute: String,
    /// Hours, 0-23.
    pub hour: String,
    /// Days of the week, 0-6 with Sunday 0, or names (`mon-fri`).
    pub day_of_week: String,
    /// Days of the month, 1-31.
    pub day_of_month: String,
    /// Months, 1-12.
    pub month_of_year: String,
}

impl From<&Schedule> for Crontab {
    fn from(s: &Schedule) -> Self {
        let get = |name| s.get(name).to_string();
        Self {
            minute: get("minute"),
            hour: get("hour"),
            day_of_week: get("day_of_week"),
            day_of_month: get("day_of_month"),
            month_of_year: get("month_of_year"),
        }
    }
}

/// Selects one session.
#[derive(Debug, Clone, Object)]
pub struct SessionRef {
    /// The id `POST /async/...` answered with.
    pub session_id: String,
}

/// Answers of `/async/query` (`T`: a list of sessions) and `/async/kill` (`T`: one session).
#[derive(ApiResponse)]
#[oai(bad_request_handler = "SessionAnswer::bad_body")]
pub enum SessionAnswer<T: ParseFromJSON + ToJSON> {
    /// `/async/query`: the session (a one-element list), or every session newest first.
    /// `/async/kill`: the session has been killed (or had already ended); its final state.
    #[oai(status = 200)]
    Ok(Json<Envelope<T>>),
    /// The body is not JSON or not what the operation reads, or the session id is not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// No such session (never existed, or cleaned after its retention).
    #[oai(status = 404)]
    NotFound(Json<ErrorEnvelope>),
    /// The session is not in memory and the result store cannot be read now.
    #[oai(status = 503)]
    Unavailable(Json<ErrorEnvelope>),
}

// A body that does not parse is answered by the operation's own documented 400 variant, so the
// document and the answer cannot drift apart (poem-openapi calls this instead of failing).
impl<T: ParseFromJSON + ToJSON> SessionAnswer<T> {
    fn bad_body(err: poem::Error) -> Self {
        Self::BadRequest(Json(ErrorEnvelope::new(err.to_string())))
    }
}

type QueryAnswer = SessionAnswer<Vec<SessionInfo>>;
type KillAnswer = SessionAnswer<SessionInfo>;

/// Answers of `POST /-/reload`.
#[derive(ApiResponse)]
pub enum ReloadAnswer {
    /// The file was valid and is served now (or was already served unchanged).
    #[oai(status = 200)]
    Ok(Json<Envelope<ConfigStatus>>),
    /// The file was rejected; `msg` lists every error. The previous config keeps serving.
    #[oai(status = 422)]
    Rejected(Json<ErrorEnvelope>),
}

fn parse_session_id(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|e| format!("session_id `{raw}` is not a UUID: {e}"))
}

/// The fixed API.
pub struct Api {
    app: Arc<App>,
}

#[OpenApi]
impl Api {
    /// Every route the service answers, in a stable order.
    #[oai(path = "/list", method = "get")]
    async fn list(&self) -> Json<Envelope<Vec<RouteInfo>>> {
        let table = self.app.routes.load();
        let routes = table
            .routes()
            .into_iter()
            .map(|(method, path)| RouteInfo {
                method: method.to_string(),
                path,
            })
            .collect();
        Json(Envelope::ok(routes))
    }

    /// Every task with its URL, for the Django side to register periodic tasks.
    #[oai(path = "/discovery", method = "get")]
    async fn discovery(&self) -> Json<Envelope<Vec<DiscoveryItem>>> {
        let table = self.app.routes.load();
        let items = table
            .tasks
            .values()
            .map(|t| DiscoveryItem {
                name: t.name.clone(),
                cluster_type: t.cluster_type.clone(),
                url: t.path.clone(),
                enable: t.enabled,
                empty_param: t.empty_param.clone(),
                crontab: t.schedule.as_ref().map(Crontab::from),
                description: t.description(),
            })
            .collect();
        Json(Envelope::ok(items))
    }

    /// Shows one async session, or all of them.
    ///
    /// With a `session_id`, the session as a one-element list; with no body, `{}` or a null
    /// `session_id`, every session newest first. Finished sessions stay for the retention period.
    #[oai(path = "/async/query", method = "post")]
    async fn query(&self, body: LenientJson<Option<SessionQuery>>) -> QueryAnswer {
        let Some(raw) = body.0.and_then(|q| q.session_id) else {
            return QueryAnswer::Ok(Json(Envelope::ok(self.app.runs.sessions())));
        };
        let id = match parse_session_id(&raw) {
            Ok(id) => id,
            Err(e) => return QueryAnswer::BadRequest(Json(ErrorEnvelope::new(e))),
        };
        let session = self.app.runs.session(id);
        // A session seen as done has its log records in its file.
        self.app.logs.flushed().await;
        if let Some(s) = session {
            return QueryAnswer::Ok(Json(Envelope::ok(vec![s])));
        }
        // Not in memory: after a restart, past the retention, or on another replica.
        match self.app.store.get(id).await {
            Ok(Some(r)) => QueryAnswer::Ok(Json(Envelope::ok(vec![r.to_session()]))),
            Ok(None) => {
                QueryAnswer::NotFound(Json(ErrorEnvelope::new(format!("session {id} not found"))))
            }
            Err(e) => QueryAnswer::Unavailable(Json(ErrorEnvelope::new(e.to_string()))),
        }
    }

    /// Kills an async session.
    ///
    /// Kills the session's whole process group (SIGTERM, then SIGKILL after the grace period)
    /// and answers with its final state; the session stays queryable.
    #[oai(path = "/async/kill", method = "post")]
    async fn kill(&self, body: LenientJson<SessionRef>) -> KillAnswer {
        let id = match parse_session_id(&body.0.session_id) {
            Ok(id) => id,
            Err(e) => return KillAnswer::BadRequest(Json(ErrorEnvelope::new(e))),
        };
        let killed = self.app.runs.kill(id).await;
        let wait = self.app.runs.deadlines().stopped_within();
        match killed {
            Ok(s) => KillAnswer::Ok(Json(Envelope::ok(s))),
            // Not here: its owner (another replica) is asked through the result store.
            Err(e @ KillError::NotFound(_)) => match self.app.store.remote_kill(id, wait).await {
                Ok(Some(s)) => KillAnswer::Ok(Json(Envelope::ok(s))),
                Ok(None) => KillAnswer::NotFound(Json(ErrorEnvelope::new(e.to_string()))),
                Err(e) => KillAnswer::Unavailable(Json(ErrorEnvelope::new(e.to_string()))),
            },
        }
    }

    /// Result history from the result store, newest first.
    ///
    /// Filters: `task` (a task path such as `tendb-cluster/demo1`), `status` (`ok`, `failed`,
    /// `killed`, `cancelled`, `timed_out`, `shutdown`, `lost`, `running`, …); `limit` (1-1000,
    /// default 50); `before`: the `next` cursor of the previous page.
    #[oai(path = "/results", method = "get")]
    async fn results(
        &self,
        task: Query<Option<String>>,
        status: Query<Option<String>>,
        limit: Query<Option<u32>>,
        before: Query<Option<String>>,
    ) -> ResultsAnswer {
        let h = match results::history(task.0, status.0, limit.0, before.0) {
            Ok(h) => h,
            Err(e) => return ResultsAnswer::BadRequest(Json(ErrorEnvelope::new(e))),
        };
        let limit = h.limit;
        match self.app.store.history(h).await {
            Ok(records) => ResultsAnswer::Ok(Json(Envelope::ok(results::page(records, limit)))),
            Err(e) => ResultsAnswer::unavailable(&e),
        }
    }

    /// The result store's state: backend, `connected` or `spooling`, queue depth, spool size.
    #[oai(path = "/-/store", method = "get")]
    async fn store_status(&self) -> Json<Envelope<StoreStatus>> {
        Json(Envelope::ok(self.app.store.status()))
    }

    /// Liveness probe: answers `pong`.
    #[oai(path = "/ping", method = "get")]
    async fn ping(&self) -> PlainText<&'static str> {
        PlainText("pong")
    }

    /// The served task config: generation, load time, checksum, task count, path, and why the
    /// newest version of the file was rejected, if it was.
    #[oai(path = "/-/config", method = "get")]
    async fn config_status(&self) -> Json<Envelope<ConfigStatus>> {
        let mut status = self.app.reloader.status();
        status.run_control = Some(Box::new(self.app.runs.config()));
        Json(Envelope::ok(status))
    }

    /// Reloads the task config now, as a file change or SIGHUP does. A rejected file changes
    /// nothing: the previous config keeps serving and the answer (HTTP 422) lists every error.
    #[oai(path = "/-/reload", method = "post")]
    async fn reload(&self) -> ReloadAnswer {
        match crate::reload::reload_off_thread(&self.app.reloader, Trigger::Request).await {
            Ok(status) => ReloadAnswer::Ok(Json(Envelope::ok(status))),
            Err(e) => ReloadAnswer::Rejected(Json(ErrorEnvelope::new(e.to_string()))),
        }
    }
}

/// The optional body of `/async/query`.
#[derive(Debug, Clone, Object)]
pub struct SessionQuery {
    /// The session to show; absent means every session.
    pub session_id: Option<String>,
}

/// The OpenAPI service for the fixed API (also the base of the served document).
pub fn openapi_service(app: Arc<App>) -> OpenApiService<(Api, ops::OpsApi), ()> {
    let ops = ops::OpsApi { app: app.clone() };
    OpenApiService::new(
        (Api { app }, ops),
        openapi::TITLE,
        env!("CARGO_PKG_VERSION"),
    )
}

/// The whole HTTP application.
pub fn build(app: Arc<App>) -> impl poem::Endpoint {
    let api = openapi_service(app.clone());
    let route = Route::new()
        .at(
            "/sync/:cluster_type/:name",
            post(task_route::task_route.data(task_route::Mode::Sync)),
        )
        .at(
            "/async/:cluster_type/:name",
            post(task_route::task_route.data(task_route::Mode::Async)),
        )
        .nest("/", api);
    let auth = crate::auth::Auth::new(app.settings.auth.clone(), app.settings.reload_debounce);
    openapi::mount(route)
        .with(auth)
        .data(app)
        .catch_all_error(error_envelope)
        .with(crate::metrics::HttpMetrics)
        .into_endpoint()
}

/// Turns any error into the envelope, keeping its HTTP status.
async fn error_envelope(err: poem::Error) -> Response {
    let status = err.status();
    let msg = if status == StatusCode::NOT_FOUND {
        "no such route (GET /list shows every route)".to_string()
    } else {
        err.to_string()
    };
    envelope::respond(status, &ErrorEnvelope::new(msg))
}
