//! Looking at the tasks: `GET /list` (every route) and `GET /discovery` (every task, for the
//! Django side's scheduler). The task routes themselves are in [`super::task_route`].

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use crate::app::App;
use crate::config::Schedule;
use crate::http::{Access, Envelope, Route, RouteSet};
use crate::table::RouteTable;

/// The routes of this file, with the access each needs.
pub const ROUTES: &[Route] = &[
    Route::new("GET", "/list", Access::Read).listed(3),
    Route::new("GET", "/discovery", Access::Read).listed(2),
];

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

/// Every route served, in the order `/list` shows them: both task routes of every task by path,
/// then the declared fixed routes at their positions.
pub fn list(table: &RouteTable, routes: &RouteSet) -> Vec<RouteInfo> {
    let mut out = Vec::with_capacity(table.tasks.len() * 2 + 20);
    for path in table.tasks.keys() {
        out.push(("POST", format!("/async/{path}")));
        out.push(("POST", format!("/sync/{path}")));
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out.extend(
        routes
            .listed()
            .iter()
            .map(|r| (r.method, r.path.to_string())),
    );
    out.into_iter()
        .map(|(method, path)| RouteInfo {
            method: method.to_string(),
            path,
        })
        .collect()
}

/// The task listing API.
pub struct TasksApi {
    /// The service.
    pub app: Arc<App>,
    /// Every declared route, for `/list`.
    pub routes: &'static RouteSet,
}

#[OpenApi]
impl TasksApi {
    /// Every route the service answers, in a stable order.
    #[oai(path = "/list", method = "get")]
    async fn list(&self) -> Json<Envelope<Vec<RouteInfo>>> {
        Json(Envelope::ok(list(&self.app.routes.load(), self.routes)))
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
}
