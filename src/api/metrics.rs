//! `GET /metrics`: the Prometheus scrape, open unless `--metrics-token` is set.

use std::sync::Arc;

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi};

use crate::app::App;
use crate::http::{Access, ErrorEnvelope, Route};

/// The routes of this file, with the access each needs.
pub const ROUTES: &[Route] = &[Route::new("GET", "/metrics", Access::Metrics).listed(11)];

/// Answers of `/metrics`.
#[derive(ApiResponse)]
pub enum MetricsAnswer {
    /// The scrape, in the OpenMetrics text format.
    #[oai(
        status = 200,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    )]
    Ok(PlainText<String>),
    /// `--metrics-token` is set and the request carries no valid token.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorEnvelope>),
}

/// The metrics API.
pub struct MetricsApi {
    /// The service.
    pub app: Arc<App>,
}

#[OpenApi]
impl MetricsApi {
    /// Prometheus metrics (see docs/operations.md, Monitoring). Open unless `--metrics-token` is set.
    #[oai(path = "/metrics", method = "get")]
    async fn metrics(&self) -> MetricsAnswer {
        let now = crate::metrics::Snapshot {
            sessions: self.app.runs.session_count(),
            generation: self.app.routes.load().generation,
            log_records_dropped: self.app.logs.dropped(),
        };
        MetricsAnswer::Ok(PlainText(crate::metrics::render(now)))
    }
}
