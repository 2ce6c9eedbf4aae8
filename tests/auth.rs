//! Bearer-token authentication through the real binary: every route `/list` reports needs the
//! right token (open, read-only or full), the log never holds a token, the token file is re-read
//! when it changes, `--metrics-token` closes `/metrics` alone, and the dashboard takes its cookie
//! on `/ui` routes only.

mod common;

use std::time::Duration;

use common::{poll, Server, OPS_TASKS};
use serde_json::Value;

const FULL: &str = "full-one";

const FULL2: &str = "full-two";

const READ: &str = "read-only";

/// Routes that stay open, and those a read-only token may call: what the issue says, written
/// out here rather than taken from the service's own table.
const OPEN: &[&str] = &[
    "/ping",
    "/healthz",
    "/readyz",
    "/metrics",
    "/swagger",
    "/openapi.json",
    "/openapi.yaml",
];

const READ_ROUTES: &[&str] = &[
    "/list",
    "/discovery",
    "/async/query",
    "/async/output",
    "/async/output-stream",
    "/results",
    "/-/store",
    "/-/config",
];

async fn call(s: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, String, bool) {
    let url = format!("{}{path}", s.base);
    let mut req = match method {
        "POST" => s.http.post(url).body("[]"),
        _ => s.http.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let bearer = resp
        .headers()
        .get("www-authenticate")
        .is_some_and(|v| v == "Bearer");
    (status, resp.text().await.unwrap_or_default(), bearer)
}

fn assert_refused(status: u16, body: &str, bearer: bool, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{what}: {body}"));
    assert_eq!(v["code"], 1, "{what}: {body}");
    assert!(v["data"].is_null(), "{what}: {body}");
    assert!(
        !v["msg"].as_str().unwrap_or("").is_empty(),
        "{what}: {body}"
    );
    if want == 401 {
        assert!(bearer, "{what}: no WWW-Authenticate: Bearer");
    }
}

#[tokio::test]
async fn every_route_list_reports_needs_the_right_token() {
    let tokens = format!("--auth-token={FULL},{FULL2}");
    let read = format!("--read-token={READ}");
    // Only quick tasks: every task route is called with a full token.
    let quick = OPS_TASKS.split("- name: ticker").next().unwrap();
    let s = Server::start(quick, &[&tokens, &read]);
    let (status, list) = {
        let resp = s
            .http
            .get(format!("{}/list", s.base))
            .bearer_auth(FULL)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{list}");
    let mut routes: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(routes.len() > 20, "{routes:?}");
    // A path no route serves is protected by default.
    routes.push(("GET".into(), "/no-such-route".into()));
    routes.push(("POST".into(), "/sync/no-such/task".into()));
    for (method, path) in &routes {
        // The stream would wait for a run: ask it about a session that cannot exist.
        let path = if path.starts_with("/async/output") {
            format!("{path}?session_id=not-a-uuid")
        } else {
            path.clone()
        };
        let bare = path.split('?').next().unwrap();
        let what = |who: &str| format!("{method} {path} with {who}");
        let (st, body, bearer) = call(&s, method, &path, None).await;
        if OPEN.contains(&bare) {
            assert!(st != 401 && st != 403, "{}: {st} {body}", what("no token"));
            continue;
        }
        assert_refused(st, &body, bearer, 401, &what("no token"));
        let (st, body, bearer) = call(&s, method, &path, Some("wrong")).await;
        assert_refused(st, &body, bearer, 401, &what("a wrong token"));
        let (st, body, bearer) = call(&s, method, &path, Some(READ)).await;
        if READ_ROUTES.contains(&bare) {
            assert!(
                st != 401 && st != 403,
                "{}: {st} {body}",
                what("a read token")
            );
        } else {
            assert_refused(st, &body, bearer, 403, &what("a read token"));
        }
        for full in [FULL, FULL2] {
            let (st, body, _) = call(&s, method, &path, Some(full)).await;
            assert!(
                st != 401 && st != 403,
                "{}: {st} {body}",
                what("a full token")
            );
        }
    }
    // The log names route and outcome, never a token.
    let log = poll(Duration::from_secs(5), || async {
        let log = std::fs::read_to_string(s.path("logs/celery-service.log")).unwrap_or_default();
        log.contains("wrong_token").then_some(log)
    })
    .await;
    assert!(
        log.contains(r#"route="/sync/:cluster_type/:name""#),
        "{log}"
    );
    for secret in [FULL, FULL2, READ, "Bearer"] {
        assert!(!log.contains(secret), "the log holds {secret}");
    }
    // The document declares the scheme on protected operations only.
    let (_, doc) = s.get("/openapi.json").await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/sync/tendb-cluster/demo1"]["post"]["security"][0]["bearer"],
        serde_json::json!([])
    );
    assert!(doc["paths"]["/ping"]["get"].get("security").is_none());
}

#[tokio::test]
async fn a_token_file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "# ops\nfirst\n").unwrap();
    let arg = format!("--auth-token-file={}", file.display());
    let s = Server::start(OPS_TASKS, &[&arg]);
    assert_eq!(call(&s, "GET", "/-/config", Some("first")).await.0, 200);
    assert_eq!(call(&s, "GET", "/-/config", Some("second")).await.0, 401);
    std::fs::write(&file, "second\n").unwrap();
    poll(Duration::from_secs(10), || async {
        (call(&s, "GET", "/-/config", Some("second")).await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(call(&s, "GET", "/-/config", Some("first")).await.0, 401);
}

#[tokio::test]
async fn metrics_token_closes_metrics() {
    let s = Server::start(OPS_TASKS, &["--metrics-token=scrape"]);
    assert_eq!(call(&s, "GET", "/metrics", None).await.0, 401);
    assert_eq!(call(&s, "GET", "/metrics", Some("scrape")).await.0, 200);
    // Authentication of everything else stays off.
    assert_eq!(call(&s, "GET", "/list", None).await.0, 200);
}

/// A read-only token looks at the result history, the store and the served config, and still
/// starts, kills and reloads nothing.
#[tokio::test]
async fn a_read_token_reads_results_store_and_config_and_changes_nothing() {
    let tokens = format!("--auth-token={FULL}");
    let read = format!("--read-token={READ}");
    let s = Server::start(OPS_TASKS, &[&tokens, &read]);
    let data = |body: &str| -> Value {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(v["code"], 0, "{body}");
        v["data"].clone()
    };
    let (st, body, _) = call(&s, "GET", "/results", Some(READ)).await;
    assert_eq!(st, 200, "{body}");
    assert!(data(&body)["records"].is_array(), "{body}");
    let (st, body, _) = call(&s, "GET", "/-/store", Some(READ)).await;
    assert_eq!(st, 200, "{body}");
    assert!(data(&body)["backend"].is_string(), "{body}");
    let (st, body, _) = call(&s, "GET", "/-/config", Some(READ)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(data(&body)["generation"], 1, "{body}");

    for (method, path) in [
        ("POST", "/sync/tendb-cluster/demo1"),
        ("POST", "/async/tendb-cluster/demo1"),
        ("POST", "/async/kill"),
        ("POST", "/-/reload"),
    ] {
        let (st, body, bearer) = call(&s, method, path, Some(READ)).await;
        assert_refused(
            st,
            &body,
            bearer,
            403,
            &format!("{method} {path} with a read token"),
        );
    }
    // Nothing was started: no session, and no run in the history.
    let resp = s
        .http
        .post(format!("{}/async/query", s.base))
        .bearer_auth(FULL)
        .body("{}")
        .send()
        .await
        .unwrap();
    let body = resp.text().await.unwrap();
    assert_eq!(data(&body), serde_json::json!([]), "{body}");
    let (_, body, _) = call(&s, "GET", "/results", Some(FULL)).await;
    assert_eq!(data(&body)["records"], serde_json::json!([]), "{body}");
    let (_, body, _) = call(&s, "GET", "/-/config", Some(FULL)).await;
    assert_eq!(data(&body)["generation"], 1, "{body}");
}

/// The dashboard: its pages send a browser without a token to the sign-in page, take the token
/// from the `cs_token` cookie (on `/ui` routes only), show a read-only token no button, and its
/// actions need a full token and the dashboard's own Origin.
#[tokio::test]
async fn the_dashboard_takes_its_cookie_on_ui_routes_only() {
    let tokens = format!("--auth-token={FULL}");
    let read = format!("--read-token={READ}");
    let s = Server::start(OPS_TASKS, &[&tokens, &read]);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let origin = s.base.clone();
    let get = |path: &str, cookie: Option<&str>| {
        let mut req = http.get(format!("{}{path}", s.base));
        if let Some(token) = cookie {
            req = req.header("cookie", format!("cs_token={token}"));
        }
        req.send()
    };
    let location = |r: &reqwest::Response| {
        r.headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string())
    };

    let root = get("/", None).await.unwrap();
    assert_eq!(
        (root.status().as_u16(), location(&root).as_deref()),
        (303, Some("/ui/"))
    );
    let page = get("/ui/", None).await.unwrap();
    assert_eq!(
        (page.status().as_u16(), location(&page).as_deref()),
        (303, Some("/ui/signin"))
    );
    let wrong = get("/ui/history", Some("nope")).await.unwrap();
    assert_eq!(location(&wrong).as_deref(), Some("/ui/signin"));
    assert_eq!(get("/ui/signin", None).await.unwrap().status(), 200);

    let full = get("/ui/", Some(FULL)).await.unwrap();
    assert_eq!(full.status(), 200);
    assert!(full.text().await.unwrap().contains(">Run</button>"));
    let ro = get("/ui/", Some(READ)).await.unwrap();
    assert_eq!(ro.status(), 200);
    assert!(!ro.text().await.unwrap().contains(">Run</button>"));
    // The API still wants the header: a cookie is no token there.
    assert_eq!(get("/results", Some(FULL)).await.unwrap().status(), 401);

    let reload = |token: &'static str, from: String| {
        http.post(format!("{}/ui/config/reload", s.base))
            .header("cookie", format!("cs_token={token}"))
            .header("origin", from)
            .send()
    };
    assert_eq!(reload(READ, origin.clone()).await.unwrap().status(), 403);
    let elsewhere = reload(FULL, "http://evil.example".into()).await.unwrap();
    assert_eq!(elsewhere.status(), 403);
    let done = reload(FULL, origin).await.unwrap();
    assert_eq!(
        (done.status().as_u16(), location(&done).as_deref()),
        (303, Some("/ui/config"))
    );
}
