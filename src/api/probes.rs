//! Probes, always open: liveness (`GET /ping`, `GET /healthz`) and readiness (`GET /readyz`).

use std::sync::Arc;

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::app::App;
use crate::health::{self, Check};
use crate::http::{Access, Route};

/// The routes of this file, with the access each needs.
pub const ROUTES: &[Route] = &[
    Route::new("GET", "/ping", Access::Open).listed(4),
    Route::new("GET", "/healthz", Access::Open).listed(9),
    Route::new("GET", "/readyz", Access::Open).listed(10),
];

/// What `/readyz` answers.
#[derive(Debug, Clone, Object)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// Every check, with what it found.
    pub checks: Vec<Check>,
}

/// Answers of `/readyz`.
#[derive(ApiResponse)]
pub enum ReadyAnswer {
    /// Every check passed.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A check failed; `checks` says which and why.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

/// The probes API.
pub struct ProbesApi {
    /// The service.
    pub app: Arc<App>,
}

#[OpenApi]
impl ProbesApi {
    /// Liveness probe: answers `pong`.
    #[oai(path = "/ping", method = "get")]
    async fn ping(&self) -> PlainText<&'static str> {
        PlainText("pong")
    }

    /// Liveness probe: the process answers. Always open.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> Json<Readiness> {
        Json(Readiness {
            ready: true,
            checks: Vec::new(),
        })
    }

    /// Readiness probe: the config is loaded and every added check (the result store) passes.
    /// Always open; the body says what is not ready.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self) -> ReadyAnswer {
        let mut checks = vec![health::config_check(&self.app.reloader.status())];
        checks.extend(self.app.readiness.run());
        let ready = checks.iter().all(|c| c.ready);
        let body = Json(Readiness { ready, checks });
        if ready {
            ReadyAnswer::Ready(body)
        } else {
            ReadyAnswer::NotReady(body)
        }
    }
}
