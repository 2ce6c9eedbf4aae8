//! The service's own state: the served task config (`GET /-/config`), reloading it
//! (`POST /-/reload`) and the result store's state (`GET /-/store`).

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use crate::app::App;
use crate::http::{Access, Envelope, ErrorEnvelope, Route};
use crate::reload::{ConfigStatus, Trigger};
use crate::store::StoreStatus;

/// The routes of this file, with the access each needs: looking is read-only, reloading is not.
pub const ROUTES: &[Route] = &[
    Route::new("GET", "/-/config", Access::Read).listed(5),
    Route::new("POST", "/-/reload", Access::Protected).listed(6),
    Route::new("GET", "/-/store", Access::Read).listed(8),
];

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

/// The service state API.
pub struct ConfigApi {
    /// The service.
    pub app: Arc<App>,
}

#[OpenApi]
impl ConfigApi {
    /// The result store's state: backend, `connected` or `spooling`, queue depth, spool size.
    #[oai(path = "/-/store", method = "get")]
    async fn store_status(&self) -> Json<Envelope<StoreStatus>> {
        Json(Envelope::ok(self.app.store.status()))
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
