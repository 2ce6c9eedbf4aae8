//! celery-service: serves a DBA team's legacy scheduled scripts and built-in Rust tasks as HTTP
//! endpoints that a Celery beat schedule calls.
//!
//! Modules, each owning one concern:
//! - [`cli`]: the command line, every flag with its `CS_*` variable.
//! - [`config`]: the external task YAML, validated with every error reported at once.
//! - [`table`]: the route table built from a config plus the built-in tasks, swapped atomically.
//! - [`runner`]: argv building and child processes (the only module with pids and signals).
//! - [`supervisor`]: the one owner of a run's life: admission, the registry of live runs,
//!   start, stop, finish, and the run events that the log, metrics, store and sessions observe.
//! - [`sessions`]: what a poller sees of a session, and the retention of ended ones.
//! - [`tasks`]: tasks written in Rust and their registry.
//! - [`store`]: every run's result record: embedded SQLite or MongoDB, spool, replicas.
//! - [`logs`]: per-task and service log files with size rotation.
//! - [`reload`]: the one reload path (file change, SIGHUP, `POST /-/reload`) and its status.
//! - [`app`]: the service's parts and how startup puts them together.
//! - [`http`]: the `{code, data, msg}` envelope, the one error mapping, route declarations and
//!   the route-template matcher (a leaf: it imports no other module of the crate).
//! - [`api`]: HTTP endpoints, one file per capability, each declaring its routes' access.
//! - [`auth`]: bearer tokens, checked against the access the API declares.
//! - [`ui`]: the web dashboard at `/ui/`: server-rendered pages, live over server-sent events.
//! - [`limits`]: request and resource limits.
//! - [`metrics`]: Prometheus metrics.
//! - [`health`]: readiness checks.
//! - [`settings`]: the validated settings of `celery-service run`.
//! - [`server`]: the accept loop, one hyper connection task per client, which connections are
//!   held and when an idle one is closed (`server::connections`), and shutdown in stages.
//!
//! [`App::load`] validates a config and [`serve`] runs the service on a listener until a
//! shutdown future resolves, so tests start the real server on `127.0.0.1:0`.
//!
//! This file is only the index: every item lives in the module that owns it.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod health;
pub mod http;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod reload;
pub mod runner;
pub mod server;
pub mod sessions;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod table;
pub mod tasks;
pub mod ui;

pub use app::{App, Settings};
pub use config::ConfigErrors;
pub use server::serve;
pub use table::StartError;
