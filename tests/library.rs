//! The service as a library, as `celery_service`'s own doc says to use it: settings from the same
//! flags as `celery-service run`, [`App::load`], then [`serve`] on a listener bound to
//! `127.0.0.1:0` until a shutdown future resolves. Real HTTP through it, a real child process, and
//! a shutdown that ends the run still going before `serve` returns.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use celery_service::cli::{Cli, Command};
use celery_service::supervisor::{LiveEvents, Mode, RunEvent};
use celery_service::{serve, App, Settings};
use clap::Parser;
use common::{poll, process_gone};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const TASKS: &str = r#"
- name: hello
  cluster_type: Library
  language: sh
  executable: echo hello
  collected: false
- name: nap
  cluster_type: Library
  language: sh
  executable: echo started $$; exec sleep 60
  collected: false
"#;

/// The settings `celery-service run` would make of these flags, for a service living in `dir`.
fn settings(dir: &Path) -> Settings {
    let path = |rel: &str| dir.join(rel).display().to_string();
    let cli = Cli::try_parse_from([
        "celery-service".to_string(),
        "run".into(),
        "--external-task-config".into(),
        path("external-tasks.yaml"),
        "--collect-dir".into(),
        path("collect"),
        "--log-dir".into(),
        path("logs"),
        "--result-db-file".into(),
        path("results.sqlite3"),
        // The subreaper mechanism on every machine: the cgroup one (picked by `auto` as root)
        // would make cgroups below this test process's own, which is not what this test is about.
        "--process-tracking".into(),
        "subreaper".into(),
        "--shutdown-timeout".into(),
        "0s".into(),
    ])
    .expect("the flags parse");
    let Command::Run(args) = cli.command else {
        panic!("not `run`")
    };
    args.settings().expect("valid settings")
}

/// `POST path` with `body` to `base`; the status and the JSON answer.
async fn post(http: &reqwest::Client, base: &str, path: &str, body: &str) -> (u16, Value) {
    let resp = http
        .post(format!("{base}{path}"))
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    (resp.status().as_u16(), resp.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_real_http_on_an_ephemeral_port_and_stops_on_its_shutdown_future() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("external-tasks.yaml"), TASKS).unwrap();
    std::fs::create_dir(dir.path().join("collect")).unwrap();
    let app: Arc<App> = App::load(settings(dir.path())).expect("the config loads");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(app, listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let ping = http.get(format!("{base}/ping")).send().await.unwrap();
    assert_eq!(ping.status().as_u16(), 200);
    assert_eq!(ping.text().await.unwrap(), "pong");
    let (status, v) = post(&http, &base, "/sync/library/hello", r#"["from", "a test"]"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"code": 0, "data": "hello from a test", "msg": ""})
    );

    // A run still going when the shutdown future resolves is ended before `serve` returns.
    let (status, v) = post(&http, &base, "/async/library/nap", "").await;
    assert_eq!(status, 200, "{v}");
    let id = v["data"].as_str().unwrap().to_string();
    let query = format!(r#"{{"session_id":"{id}"}}"#);
    let pid: i32 = poll(Duration::from_secs(20), || async {
        let (_, v) = post(&http, &base, "/async/query", &query).await;
        v["data"][0]["message"]
            .as_str()?
            .strip_prefix("started ")?
            .parse()
            .ok()
    })
    .await;
    assert!(!process_gone(pid), "the run's process is not running");
    stop.send(()).unwrap();
    let served = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("serve returns after its shutdown future resolved")
        .expect("the serve task did not panic");
    served.expect("serve ends without an error");
    assert!(process_gone(pid), "the run outlived serve");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the port still accepts after serve returned"
    );
}

/// The next event of `events` that concerns run `id` (any run when `None`), within 20 s.
async fn next_of(events: &mut LiveEvents, id: Option<uuid::Uuid>) -> RunEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("an event within 20 s")
            .expect("the bus is open");
        let of = match &event {
            RunEvent::Started(info) => info.id,
            RunEvent::Output { id, .. } => *id,
            RunEvent::Ended { info, .. } => info.id,
        };
        if id.is_none_or(|id| id == of) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_view_follows_each_run_and_a_kill_ends_a_sync_run_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("external-tasks.yaml"), TASKS).unwrap();
    std::fs::create_dir(dir.path().join("collect")).unwrap();
    let app: Arc<App> = App::load(settings(dir.path())).expect("the config loads");
    let mut events = app.runs.subscribe();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(app.clone(), listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    // A run that ends by itself: started, its output line, ended with its result, in that order.
    let (status, v) = post(&http, &base, "/sync/library/hello", r#"["live"]"#).await;
    assert_eq!((status, &v["data"]), (200, &json!("hello live")), "{v}");
    let RunEvent::Started(info) = next_of(&mut events, None).await else {
        panic!("the first event of a run is not Started")
    };
    assert_eq!(
        (info.task.path.as_str(), info.mode),
        ("library/hello", Mode::Sync)
    );
    let RunEvent::Output { line, .. } = next_of(&mut events, Some(info.id)).await else {
        panic!("no output event before the end")
    };
    assert_eq!(&*line, "hello live");
    let RunEvent::Ended { result, .. } = next_of(&mut events, Some(info.id)).await else {
        panic!("no end event")
    };
    assert!(result.ok && result.data == "hello live", "{result:?}");

    // A sync run is a live run like any other: /async/kill ends it, and its caller is told.
    let caller = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { post(&http, &base, "/sync/library/nap", "").await })
    };
    let RunEvent::Started(nap) = next_of(&mut events, None).await else {
        panic!("the nap did not start")
    };
    assert_eq!(app.runs.live_runs().len(), 1);
    let kill = format!(r#"{{"session_id":"{}"}}"#, nap.id);
    let (status, v) = post(&http, &base, "/async/kill", &kill).await;
    assert_eq!((status, &v["data"]["done"]), (200, &json!(true)), "{v}");
    let (status, v) = caller.await.unwrap();
    assert_eq!((status, &v["code"]), (200, &json!(1)), "{v}");
    assert!(
        v["msg"].as_str().unwrap().starts_with("killed on request"),
        "{v}"
    );
    assert!(
        app.runs.live_runs().is_empty(),
        "the killed run is still live"
    );
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
