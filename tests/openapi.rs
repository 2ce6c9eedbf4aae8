//! The served OpenAPI document and Swagger UI, against the real binary: the document is valid
//! OpenAPI 3 (checked by openapi-spec-validator), lists every task at its concrete path, follows
//! the route table, and the committed `openapi/openapi.json` is what the code produces.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{binary, poll, Server};
use serde_json::Value;

const CONFIG_A: &str = r#"
- name: demo1
  cluster_type: TendbCluster
  language: sh
  executable: echo hello
  args: ["aaa", "bbb"]
  collected: false
  description: Says hello to its arguments
- name: report
  cluster_type: sqlsvr
  language: python3
  executable: args.py
  collected: true
"#;

const CONFIG_B: &str = r#"
- name: demo1
  cluster_type: TendbCluster
  language: sh
  executable: echo hello
  collected: false
- name: greet_all
  cluster_type: redis
  language: perl
  executable: args.pl
  args: ["--all"]
  collected: true
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Validates `doc` with the python package openapi-spec-validator, failing clearly without it.
fn assert_valid_openapi(doc: &Value, dir: &Path) {
    let probe = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .expect("run python3 (needed to validate the OpenAPI document)");
    assert!(
        probe.status.success(),
        "the python module openapi_spec_validator is missing; install it with\n    \
         python3 -m pip install openapi-spec-validator\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let file = dir.join("served-openapi.json");
    std::fs::write(&file, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    let out = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn paths(doc: &Value) -> BTreeSet<String> {
    doc["paths"].as_object().unwrap().keys().cloned().collect()
}

/// The `key` field of every element of the array `items`.
fn field_of_each(items: &Value, key: &str) -> BTreeSet<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap().to_string())
        .collect()
}

/// Every path `/list` shows.
async fn listed_paths(server: &Server) -> BTreeSet<String> {
    let (status, list) = server.get("/list").await;
    assert_eq!(status, 200, "{list}");
    field_of_each(&list["data"], "path")
}

fn is_task_path(p: &str) -> bool {
    (p.starts_with("/sync/") || p.starts_with("/async/"))
        && p != "/async/query"
        && p != "/async/kill"
        && p != "/async/output"
        && p != "/async/output-stream"
}

async fn served(server: &Server) -> Value {
    let (status, doc) = server.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    doc
}

/// Every listed task route is documented as a POST, and the document has no task route that
/// `/list` does not show, nor any path that `/list` does not know.
async fn assert_document_matches_routes(server: &Server, doc: &Value) {
    let documented: BTreeSet<String> = paths(doc).into_iter().filter(|p| is_task_path(p)).collect();
    let known = listed_paths(server).await;
    let listed: BTreeSet<String> = known.iter().filter(|p| is_task_path(p)).cloned().collect();
    assert_eq!(documented, listed, "task operations differ from /list");
    for p in &listed {
        assert!(
            doc["paths"][p]["post"].is_object(),
            "{p} has no POST operation"
        );
    }
    for p in paths(doc) {
        assert!(
            known.contains(p.as_str()),
            "{p} is documented but not a route"
        );
    }
}

#[tokio::test]
async fn served_document_is_valid_openapi_with_every_task() {
    let server = Server::start(CONFIG_A, &[]);
    let doc = served(&server).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_valid_openapi(&doc, server.dir.path());
    assert_document_matches_routes(&server, &doc).await;

    // An external task: tagged by cluster type, its description as summary, the body a list of
    // strings with the configured arguments as example, and every answer it can give.
    let op = &doc["paths"]["/sync/tendb-cluster/demo1"]["post"];
    assert_eq!(op["tags"], serde_json::json!(["TendbCluster"]));
    assert_eq!(op["summary"], "Says hello to its arguments");
    let body = &op["requestBody"]["content"]["application/json"];
    let args = resolve(&doc, &body["schema"]);
    assert_eq!(args["type"], "array");
    assert_eq!(args["items"]["type"], "string");
    assert_eq!(body["example"], serde_json::json!(["aaa", "bbb"]));
    let statuses: BTreeSet<&str> = op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from(["200", "400", "404", "409", "413", "429", "503"])
    );
    // Shared answers are written once, in components/responses, and referred to.
    let ok = resolve(&doc, &op["responses"]["200"]);
    let answer = resolve(&doc, &ok["content"]["application/json"]["schema"]);
    assert_eq!(answer["properties"]["data"]["type"], "string");
    assert_eq!(answer["properties"]["code"]["type"], "integer");

    // A task without description gets the default one.
    let op = &doc["paths"]["/async/sqlsvr/report"]["post"];
    assert_eq!(op["tags"], serde_json::json!(["sqlsvr"]));
    assert!(
        op["summary"].as_str().unwrap().contains("args.py"),
        "{}",
        op["summary"]
    );
    let ok = resolve(&doc, &op["responses"]["200"]);
    let started = resolve(&doc, &ok["content"]["application/json"]["schema"]);
    assert_eq!(started["properties"]["data"]["format"], "uuid");
    // An async call may be refused for an Idempotency-Key of another task, and documents it.
    assert!(op["responses"]["422"].is_object(), "{op}");
    assert_eq!(op["parameters"][0]["name"], "Idempotency-Key");

    // The built-in counter: its parameters' schema and example.
    let op = &doc["paths"]["/sync/tendb-ha/counter"]["post"];
    let body = &op["requestBody"]["content"]["application/json"];
    assert_eq!(body["schema"]["$ref"], "#/components/schemas/CounterParams");
    assert_eq!(body["example"], serde_json::json!({"counter": 3}));
    assert_eq!(op["requestBody"]["required"], true);
    let params = &doc["components"]["schemas"]["CounterParams"];
    assert_eq!(params["properties"]["counter"]["type"], "integer");
    assert_eq!(params["required"], serde_json::json!(["counter"]));

    // Every cluster type is a tag with a description.
    let tags = field_of_each(&doc["tags"], "name");
    for tag in ["TendbCluster", "TendbHA", "sqlsvr", "service"] {
        assert!(tags.contains(tag), "tag {tag} missing from {tags:?}");
    }

    // The YAML form is the same document.
    let (status, yaml) = server.get_text("/openapi.yaml").await;
    assert_eq!(status, 200);
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, doc);
}

/// `value`, or what its `$ref` (`#/components/...`) points to.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(r) => {
            let target = doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or(&Value::Null);
            assert!(!target.is_null(), "dangling {r}");
            target
        }
        None => value,
    }
}

#[tokio::test]
async fn bad_bodies_get_the_documented_400_envelope() {
    let server = Server::start(CONFIG_A, &[]);
    let doc = served(&server).await;
    for (path, body) in [
        ("/async/kill", "not json"),
        ("/async/kill", r#"{"session_id": 5}"#),
        ("/async/query", "[1"),
        ("/async/query", r#"{"session_id": "nope"}"#),
        ("/sync/tendb-cluster/demo1", r#"{"a": 1}"#),
        ("/async/tendb-ha/counter", r#"{"counter": "many"}"#),
    ] {
        let (status, answer) = server.post(path, Some(body)).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["code"], 1, "{answer}");
        assert!(answer["data"].is_null(), "{answer}");
        assert!(!answer["msg"].as_str().unwrap().is_empty(), "{answer}");
        let declared = resolve(&doc, &doc["paths"][path]["post"]["responses"]["400"]);
        let schema = declared["content"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["schema"]["$ref"]
            .clone();
        assert_eq!(
            schema, "#/components/schemas/ErrorEnvelope",
            "{path}: {declared}"
        );
    }
    let data = &doc["components"]["schemas"]["ErrorEnvelope"]["properties"]["data"];
    assert_eq!(data["nullable"], true, "{data}");
}

#[tokio::test]
async fn different_configs_give_different_documents() {
    let a = Server::start(CONFIG_A, &[]);
    let b = Server::start(CONFIG_B, &[]);
    let (doc_a, doc_b) = (served(&a).await, served(&b).await);
    assert_document_matches_routes(&a, &doc_a).await;
    assert_document_matches_routes(&b, &doc_b).await;
    assert!(paths(&doc_a).contains("/sync/sqlsvr/report"));
    assert!(!paths(&doc_b).contains("/sync/sqlsvr/report"));
    assert!(paths(&doc_b).contains("/sync/redis/greet-all"));
    let op = &doc_b["paths"]["/async/redis/greet-all"]["post"];
    assert_eq!(
        op["requestBody"]["content"]["application/json"]["example"],
        serde_json::json!(["--all"])
    );
    assert_valid_openapi(&doc_b, b.dir.path());
}

/// The document is built from the route table a reload swaps in.
#[tokio::test]
async fn document_follows_a_reload() {
    let server = Server::start(CONFIG_A, &[]);
    let before = served(&server).await;
    assert!(paths(&before).contains("/sync/sqlsvr/report"));

    std::fs::write(server.path("external-tasks.yaml"), CONFIG_B).unwrap();
    let (status, answer) = server.post("/-/reload", None).await;
    assert_eq!(status, 200, "{answer}");

    let after = poll(Duration::from_secs(10), || async {
        let doc = served(&server).await;
        paths(&doc).contains("/sync/redis/greet-all").then_some(doc)
    })
    .await;
    assert!(
        !paths(&after).contains("/sync/sqlsvr/report"),
        "a removed task is still documented"
    );
    assert_document_matches_routes(&server, &after).await;
    assert_valid_openapi(&after, server.dir.path());
}

/// `celery-service openapi` for the bundled config.
fn generate(extra: &[&str]) -> std::process::Output {
    let repo = repo();
    let out = Command::new(binary())
        .arg("openapi")
        .arg("--external-task-config")
        .arg(repo.join("external-tasks.yaml"))
        .arg("--collect-dir")
        .arg(repo.join("collect"))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn committed_document_is_current() {
    let committed =
        std::fs::read_to_string(repo().join("openapi/openapi.json")).unwrap_or_default();
    let generated = String::from_utf8(generate(&[]).stdout).unwrap();
    assert!(
        committed == generated,
        "openapi/openapi.json is out of date; regenerate it with\n    \
         cargo run -- openapi --output openapi/openapi.json"
    );
    assert!(generated.ends_with("}\n"), "no trailing newline");

    // --output writes the same text, and a second run gives the same bytes.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.json");
    generate(&["--output", file.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), generated);
}

#[tokio::test]
async fn served_document_for_the_bundled_config_is_the_committed_one() {
    let yaml = std::fs::read_to_string(repo().join("external-tasks.yaml")).unwrap();
    let collect = repo().join("collect");
    let server = Server::start(&yaml, &["--collect-dir", collect.to_str().unwrap()]);
    let (status, text) = server.get_text("/openapi.json").await;
    assert_eq!(status, 200);
    let committed = std::fs::read_to_string(repo().join("openapi/openapi.json")).unwrap();
    assert!(
        text == committed,
        "the served document differs from openapi/openapi.json (see committed_document_is_current)"
    );
}

/// `GET path`, expecting 200; its content type and body.
async fn fetch(server: &Server, path: &str) -> (String, Vec<u8>) {
    let resp = server
        .http
        .get(format!("{}{path}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn swagger_ui_is_served_from_the_binary_and_loads_the_live_document() {
    let server = Server::start(CONFIG_A, &[]);
    let (content_type, html) = fetch(&server, "/swagger").await;
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let html = String::from_utf8(html).unwrap();
    assert!(html.contains(r#"url: "/openapi.json""#), "{html}");
    // No CDN: every script and stylesheet comes from this service.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    for (asset, expected_type, min_len) in [
        ("/swagger/swagger-ui-bundle.js", "text/javascript", 500_000),
        ("/swagger/swagger-ui.css", "text/css", 50_000),
        ("/swagger/favicon-32x32.png", "image/png", 100),
    ] {
        assert!(html.contains(asset), "{asset} not referenced");
        let (content_type, body) = fetch(&server, asset).await;
        assert!(
            content_type.starts_with(expected_type),
            "{asset}: {content_type}"
        );
        assert!(body.len() >= min_len, "{asset} is too small");
    }
}
