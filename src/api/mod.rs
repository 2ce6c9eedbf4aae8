//! The HTTP layer: translates requests into [`App`] calls and results into `{code, data, msg}`.
//!
//! One file per capability, each declaring its routes with the access they need (a `ROUTES`
//! const beside the handlers): [`tasks`] (`/list`, `/discovery`), [`task_route`] (the task
//! routes), [`sessions`], [`results`], [`config`] (`/-/config`, `/-/reload`, `/-/store`),
//! [`probes`], [`output`], [`metrics`] and [`documents`] (the OpenAPI document and Swagger UI).
//! [`catalogue`] gathers them; [`openapi`] builds the document.
//!
//! The fixed API is written with poem-openapi, so its types and `///` comments become the
//! OpenAPI document. The per-task endpoints (`/sync/<ct>/<name>`, `/async/<ct>/<name>`) are plain
//! poem handlers that look the task up in the current route table on every call, so a reload
//! changes them without rebuilding the router. Operations answer their errors with the typed
//! variants they document; every other error (poem's own 404, 405, input poem cannot parse)
//! leaves through [`crate::http::error_response`], the one mapping of those to the envelope.

pub mod body;
pub mod catalogue;
pub mod config;
pub mod documents;
pub mod hangup;
pub mod metrics;
pub mod openapi;
pub mod output;
pub mod probes;
pub mod refusal;
mod rendered;
pub mod results;
pub mod sessions;
mod task_ops;
mod task_route;
pub mod tasks;

use std::sync::Arc;

use poem::{EndpointExt, IntoEndpoint, Route};
use poem_openapi::OpenApiService;

use crate::app::App;
use crate::auth::Auth;
use crate::http::error_response;
use crate::metrics::HttpMetrics;
use crate::table::RouteTable;
use catalogue::{FixedApi, ROUTES};

/// Every route served for `table`, in the order `GET /list` answers them.
pub fn list(table: &RouteTable) -> Vec<tasks::RouteInfo> {
    tasks::list(table, &ROUTES)
}

/// The OpenAPI service for the fixed API (also the base of the served document).
pub fn openapi_service(app: &Arc<App>) -> OpenApiService<FixedApi, ()> {
    OpenApiService::new(
        catalogue::fixed_api(app),
        openapi::TITLE,
        env!("CARGO_PKG_VERSION"),
    )
}

/// The whole HTTP application.
pub fn build(app: Arc<App>) -> impl poem::Endpoint {
    let route = crate::ui::mount(task_route::mount(Route::new())).nest("/", openapi_service(&app));
    let cache = Arc::new(rendered::Cache::new(openapi::document));
    let auth = Auth::new(
        app.settings.auth.clone(),
        app.settings.reload_debounce,
        &ROUTES,
    );
    crate::ui::start_page(documents::mount(route, cache))
        .with(auth)
        .data(app)
        .catch_all_error(error_response)
        .with(HttpMetrics::new(&ROUTES))
        .into_endpoint()
}
