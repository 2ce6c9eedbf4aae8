//! The `celery-service` binary: parse the command line, set up logging, validate, bind, serve.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use celery_service::api::{self, openapi};
use celery_service::app::absolute_dir;
use celery_service::cli::{Cli, Command, ConfigArgs, OpenapiArgs, RunArgs};
use celery_service::reload::{self, Trigger};
use celery_service::table::load_table;
use celery_service::{serve, App, StartError};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(*args),
        Command::Check(args) => check(&args, true),
        Command::List(args) => check(&args, false),
        Command::Openapi(args) => print_openapi(&args),
        Command::Version => {
            println!("celery-service {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("celery-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &ConfigArgs, say_ok: bool) -> anyhow::Result<()> {
    let collect_dir = absolute_dir(&args.collect_dir)?;
    let table = load_table(&args.external_task_config, &collect_dir, 1)?;
    for route in api::list(&table) {
        println!("{:<5} {}", route.method, route.path);
    }
    if say_ok {
        eprintln!(
            "{}: ok, {} tasks",
            args.external_task_config.display(),
            table.tasks.len()
        );
    }
    Ok(())
}

fn print_openapi(args: &OpenapiArgs) -> anyhow::Result<()> {
    let collect_dir = absolute_dir(&args.config.collect_dir)?;
    let table = load_table(&args.config.external_task_config, &collect_dir, 1)?;
    let text = openapi::to_json(&openapi::document(&table));
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            use std::io::Write;
            std::io::stdout().write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // Every run holds three descriptors while it goes (its two output pipes and tokio's pidfd
    // for its exit), so a thousand runs at once pass the usual soft limit of 1,024: take all the
    // hard limit allows. A run refused a descriptor anyway fails with a clear error.
    let nofile = rlimit::increase_nofile_limit(u64::MAX);
    let settings = args.settings().map_err(anyhow::Error::msg)?;
    // Validate before anything listens or logs: a bad config must not start a half service.
    let app = App::load(settings.clone())?;
    init_tracing(&args, &app)?;
    match nofile {
        Ok(limit) => tracing::debug!(limit, "open files limit raised to the hard limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
    // One work-stealing runtime serves everything (see the server module for why).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .thread_name("cs-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Watch for reloads before anything listens, so that a change made right after startup
        // is never missed (and SIGHUP never meets its default action, exiting).
        let hangups = reload_on_hangup(app.clone())?;
        // SIGTERM and SIGINT are taken over now too: the shutdown future is first polled only
        // once the accept loop gets to it, and a signal before that would end the process at
        // once, without draining.
        let shutdown = shutdown_then_hurry(app.clone())?;
        let watch = match reload::watch_config(app.reloader.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "config changes are not picked up by themselves; send SIGHUP or POST /-/reload after each edit");
                None
            }
        };
        // The file may have changed between the load and the start of the watch: compare it
        // with the loaded text now that any later change is seen.
        reload::catch_up(&app.reloader).await;
        // The result store opens before anything listens (a MongoDB that is down only spools).
        app.start_store().await.context("cannot start the result store")?;
        let listener = tokio::net::TcpListener::bind(&args.address)
            .await
            .with_context(|| format!("cannot listen on {}", args.address))?;
        let local = listener.local_addr()?;
        let table = app.routes.load();
        tracing::info!(
            address = %local,
            tasks = table.tasks.len(),
            config = %settings.config_path.display(),
            "listening on {local}"
        );
        drop(table);
        tracing::info!(
            "process tracking: {}",
            app.runs.config().process_tracking_detail
        );
        serve(app.clone(), listener, shutdown).await?;
        hangups.abort();
        drop(watch);
        // Every run has ended: its end record is queued. Write or spool them all.
        app.store.close(std::time::Duration::from_secs(15)).await;
        tracing::info!("stopped");
        app.logs.flushed().await;
        Ok(())
    })
}

/// Reloads the config on every SIGHUP until aborted.
fn reload_on_hangup(app: Arc<App>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the task config");
            // A rejection is logged and shown by `/-/config`.
            let _ = reload::reload_off_thread(&app.reloader, Trigger::Hangup).await;
        }
    }))
}

/// Watches SIGTERM and SIGINT from now on; the future resolves at the first of them, and a
/// second one then ends the shutdown's wait for active runs at once.
fn shutdown_then_hurry(app: Arc<App>) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(async move {
        shutdown_signal(&mut term, &mut int).await;
        tokio::spawn(async move {
            shutdown_signal(&mut term, &mut int).await;
            app.runs.hurry();
        });
    })
}

async fn shutdown_signal(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) {
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}

fn init_tracing(args: &RunArgs, app: &App) -> Result<(), StartError> {
    let filter = || EnvFilter::try_from_env("CS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Through the log writer thread, as the task logs: logging never waits for the disk.
    let file = app
        .logs
        .appender(&app.settings.log_dir.join("celery-service.log"));
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(move || file.clone())
        .with_filter(filter());
    let console = args.console().then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .with_writer(std::io::stdout)
            .with_filter(filter())
    });
    tracing_subscriber::registry()
        .with(file_layer)
        .with(console)
        .init();
    Ok(())
}
