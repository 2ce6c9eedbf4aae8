//! The store through its real parts: a real SQLite file, the off backend, and the spool in
//! front of a real MongoDB client whose server does not answer.

use std::net::TcpListener;
use std::time::Duration;

use super::spool::Spooled;
use super::*;

fn settings(dir: &std::path::Path, address: Option<String>, off: bool) -> StoreSettings {
    StoreSettings {
        address,
        user: None,
        password: Secret::new(None),
        db_name: "cs".into(),
        file: dir.join("results.sqlite3"),
        retention: Duration::from_secs(3600),
        replica_timeout: Duration::from_secs(60),
        off,
    }
}

fn record(owner: &Owner) -> Record {
    Record::started(
        Start {
            session: Uuid::new_v4(),
            task: "demo1",
            cluster_type: "TendbCluster",
            path: "tendb-cluster/demo1",
            is_async: true,
            args: serde_json::json!(["1"]),
            command: "/bin/echo 1".into(),
        },
        owner,
    )
}

fn no_kill() -> KillHook {
    Arc::new(|_| {})
}

/// Polls `get` until it answers `done` (up to 10 s).
async fn wait_done(store: &Store, id: Uuid, done: bool) -> Record {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = store.get(id).await.unwrap() {
            if r.done == done {
                return r;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record {id} never had done={done}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn off_keeps_nothing_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(settings(dir.path(), None, true));
    assert_eq!(store.child_uri(), "");
    store.start(no_kill()).await.unwrap();
    let r = record(store.owner());
    let id = Uuid::parse_str(&r.session_id).unwrap();
    store.put(r);
    let status = store.status();
    assert_eq!(
        (status.backend.as_str(), status.state),
        ("off", StoreState::Off)
    );
    assert_eq!((status.location.as_str(), status.queue_depth), ("", 0));
    assert!(store.get(id).await.unwrap().is_none());
    assert!(store
        .remote_kill(id, Duration::ZERO)
        .await
        .unwrap()
        .is_none());
    let e = store.history(History::default()).await.unwrap_err();
    assert!(e.to_string().contains("--no-result-store"), "{e}");
    assert!(!dir.path().join("results.sqlite3").exists());
    store.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn embedded_writes_a_run_and_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(settings(dir.path(), None, false));
    assert!(store.child_uri().starts_with("file:"));
    assert!(matches!(
        store.get(Uuid::nil()).await,
        Err(StoreError::NotStarted)
    ));
    store.start(no_kill()).await.unwrap();
    let start = record(store.owner());
    let id = Uuid::parse_str(&start.session_id).unwrap();
    store.put(start.clone());
    wait_done(&store, id, false).await;
    let mut result = crate::runner::RunResult::failure("out".into(), "exited with code 3".into());
    result.exit_code = Some(3);
    store.put(start.ended(&result));
    let end = wait_done(&store, id, true).await;
    assert_eq!((end.status.as_str(), end.exit_code), ("failed", Some(3)));
    let h = History {
        task: Some("tendb-cluster/demo1".into()),
        limit: 10,
        ..History::default()
    };
    assert_eq!(store.history(h).await.unwrap(), vec![end]);
    let status = store.status();
    assert_eq!(
        (status.backend.as_str(), status.state),
        ("embedded", StoreState::Connected)
    );
    assert_eq!(status.last_error, None);
    store.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_spool_keeps_what_an_unreachable_database_refuses() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on: the MongoDB client fails after its server selection timeout.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = settings(dir.path(), Some(format!("127.0.0.1:{port}")), false);
    let mongo = mongo::Mongo::new(&s.uri(), &s.db_name, s.password.clone())
        .await
        .unwrap();
    let spooled = Spooled::open(mongo, &s.file).await.unwrap();
    let r = record(&Owner::current());
    spooled.write(std::slice::from_ref(&r)).await.unwrap();
    let c = spooled.condition();
    assert_eq!((c.state, c.spool_size), (StoreState::Spooling, 1));
    assert!(c.last_error.is_some());
    assert_eq!(spooled.get(&r.session_id).await.unwrap(), Some(r.clone()));
    // A replay that fails keeps the record where it is.
    spooled.tick().await;
    assert_eq!(spooled.condition().spool_size, 1);
    // Another start finds it in the file and goes on spooling behind it.
    let again = mongo::Mongo::new(&s.uri(), &s.db_name, s.password.clone())
        .await
        .unwrap();
    let reopened = Spooled::open(again, &s.file).await.unwrap();
    let c = reopened.condition();
    assert_eq!((c.state, c.spool_size), (StoreState::Spooling, 1));
    assert_eq!(reopened.get(&r.session_id).await.unwrap(), Some(r));
}
