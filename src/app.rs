//! The running service's parts, each owning one thing, and how they are put together at startup.
//!
//! - [`App::runs`]: the run supervisor, every run's life (src/supervisor);
//! - [`App::routes`] and [`App::reloader`]: the served task table and its reloads;
//! - [`App::store`]: the result store, every run's record;
//! - [`App::logs`]: per-task log files;
//! - [`App::readiness`]: what `/readyz` checks.

use std::sync::Arc;

use crate::logs::TaskLogs;
use crate::reload::Reloader;
use crate::runner::tracking::Tracking;
use crate::sessions::Retained;
use crate::store::Store;
use crate::supervisor::observers::{EndedSessions, RunMetrics, StoreRecords, TaskLogLines};
use crate::supervisor::{Bus, Parts, Supervisor};
use crate::table::{load_table, Routes, StartError};

pub use crate::runner::RunResult;
pub use crate::settings::{absolute_dir, Settings};
pub use crate::supervisor::Input;

/// The service's parts, shared by every request.
pub struct App {
    /// Every run: admission, the live registry, sessions, kill, shutdown.
    pub runs: Arc<Supervisor>,
    /// The current route table.
    pub routes: Arc<Routes>,
    /// Reloads the config into `routes` and remembers the last rejected reload.
    pub reloader: Arc<Reloader>,
    /// Every run's result record (src/store).
    pub store: Arc<Store>,
    /// Per-task log files.
    pub logs: Arc<TaskLogs>,
    /// The validated settings.
    pub settings: Settings,
    /// Readiness checks other parts add (`/readyz`).
    pub readiness: crate::health::Readiness,
}

impl App {
    /// Validates the config and prepares everything the service needs, before anything listens.
    pub fn load(settings: Settings) -> Result<Arc<Self>, StartError> {
        let collect_dir = absolute_dir(&settings.collect_dir)?;
        let table = load_table(&settings.config_path, &collect_dir, 1)?;
        std::fs::create_dir_all(&settings.log_dir).map_err(|source| StartError::Io {
            what: "cannot create the log folder",
            path: settings.log_dir.clone(),
            source,
        })?;
        let tracking = Tracking::setup(settings.process_tracking)?;
        let routes = Arc::new(Routes::new(table));
        let reloader = Arc::new(Reloader::new(
            routes.clone(),
            settings.config_path.clone(),
            collect_dir,
            settings.reload_debounce,
        ));
        let store = Arc::new(Store::new(settings.store.clone()));
        let logs = Arc::new(TaskLogs::new(settings.log_dir.clone(), settings.rotation()));
        let retained = Arc::new(Retained::new(settings.session_retention));
        let bus = Bus::new(vec![
            Box::new(TaskLogLines),
            Box::new(RunMetrics),
            Box::new(StoreRecords(store.clone())),
            Box::new(EndedSessions(retained.clone())),
        ]);
        let runs = Supervisor::new(Parts {
            limits: settings.limits,
            grace: settings.kill_grace,
            max_sessions: settings.request_limits.max_sessions,
            retained,
            bus,
            logs: logs.clone(),
            tracking: Some(tracking),
            child_env: vec![
                ("CS_RESULT_DB_URI", store.child_uri().to_string()),
                ("CS_DB_NAME", store.db_name().to_string()),
            ],
        });
        Ok(Arc::new(Self {
            runs,
            routes,
            reloader,
            store,
            logs,
            settings,
            readiness: crate::health::Readiness::default(),
        }))
    }

    /// Starts the result store; a session another replica asks to kill is killed here. From
    /// then on `/readyz` also checks that the store is connected or spooling.
    pub async fn start_store(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        let runs = Arc::downgrade(&self.runs);
        let store = self.store.clone();
        self.readiness.add(Arc::new(move || {
            let status = store.status();
            crate::health::Check {
                name: "store".into(),
                ready: status.state.is_ready(),
                detail: format!(
                    "{} {} ({}; {} queued, {} spooled)",
                    status.backend,
                    status.state,
                    status.location,
                    status.queue_depth,
                    status.spool_size
                ),
            }
        }));
        self.store
            .start(Arc::new(move |id| {
                if let Some(runs) = runs.upgrade() {
                    tokio::spawn(async move {
                        let _ = runs.kill(id).await;
                    });
                }
            }))
            .await
    }
}
