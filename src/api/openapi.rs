//! The OpenAPI document.
//!
//! poem-openapi documents the fixed API from its types and `///` comments, but the task endpoints
//! are one generic poem handler whose real paths come from the config. So the document is built in
//! two steps: poem-openapi's document for the fixed API, parsed as JSON, plus one sync and one
//! async operation per enabled task at its concrete path, generated from the current
//! [`RouteTable`]. Because the table is read at request time (and the result cached per table
//! generation, see [`super::rendered`]), the document follows every reload. Which operations
//! need a token comes from the route declarations ([`super::catalogue`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use poem::http::Method;
use poem_openapi::registry::{MetaApi, Registry};
use poem_openapi::types::Type;
use poem_openapi::{OpenApi, OpenApiService};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::catalogue::{self, FixedApi};
use super::task_ops::{operation, request_body, task_responses, Kind};
use crate::http::{Access, Envelope, ErrorEnvelope};
use crate::table::RouteTable;

pub use super::rendered::to_json;

/// The document's title.
pub const TITLE: &str = "celery-service";

/// The document's description (Markdown), shown at the top of Swagger UI.
const DESCRIPTION: &str = "\
Serves the DBA team's scheduled scripts and built-in Rust tasks as HTTP endpoints.

Every task has `POST /sync/<cluster-type>/<name>` (runs it and answers when it ends) and \
`POST /async/<cluster-type>/<name>` (starts a session and answers with its id; follow it with \
`POST /async/query`, stop it with `POST /async/kill`). Every answer is `{code, data, msg}`: \
`code` 0 on success, 1 on failure.

This document is generated from the current route table, so it lists the tasks being served \
right now, and changes when the config is reloaded.";

/// The tag of the fixed API's operations.
const SERVICE_TAG: &str = "service";

/// The tag of the document and UI routes.
const DOCS_TAG: &str = "documentation";

/// Documents the fixed API without an [`App`](crate::app::App): `OpenApiService` wants an API
/// value, but the document depends only on the API's types, so `celery-service openapi` needs
/// no running state.
struct DocOnly;

impl OpenApi for DocOnly {
    fn meta() -> Vec<MetaApi> {
        FixedApi::meta()
    }

    fn register(registry: &mut Registry) {
        FixedApi::register(registry);
    }

    fn add_routes(
        self,
        _routes: &mut HashMap<String, HashMap<Method, poem::endpoint::BoxEndpoint<'static>>>,
    ) {
        // Never served: the real API is mounted by `api::build`.
    }
}

/// poem-openapi's document of the fixed API, as JSON, with its operations tagged.
fn base() -> &'static Value {
    static BASE: OnceLock<Value> = OnceLock::new();
    BASE.get_or_init(|| {
        let spec = OpenApiService::new(DocOnly, TITLE, env!("CARGO_PKG_VERSION"))
            .description(DESCRIPTION)
            .spec();
        let mut doc: Value = match serde_json::from_str(&spec) {
            Ok(doc) => doc,
            // poem-openapi serialises its own `Document` with serde_json: this cannot fail.
            Err(e) => unreachable!("poem-openapi produced invalid JSON: {e}"),
        };
        // Swagger UI groups untagged operations under "default"; name the group instead.
        if let Some(paths) = doc["paths"].as_object_mut() {
            for op in paths
                .values_mut()
                .filter_map(Value::as_object_mut)
                .flat_map(|p| p.values_mut())
            {
                if op.get("tags").is_none() {
                    op["tags"] = json!([SERVICE_TAG]);
                }
            }
        }
        doc
    })
}

/// The whole document for `table`: the fixed API, the documentation routes, and every enabled
/// task's sync and async operations.
pub fn document(table: &RouteTable) -> Value {
    let mut doc = base().clone();
    let mut registry = Registry::new();
    ErrorEnvelope::register(&mut registry);
    Envelope::<String>::register(&mut registry);
    Envelope::<Uuid>::register(&mut registry);

    let mut paths = BTreeMap::new();
    doc_routes(&mut paths);
    let mut cluster_types = BTreeSet::new();
    for task in table.tasks.values() {
        cluster_types.insert(task.cluster_type.clone());
        let body = request_body(task, &mut registry);
        for kind in [Kind::Sync, Kind::Async] {
            paths.insert(
                format!("/{}/{}", kind.prefix(), task.path),
                json!({ "post": operation(kind, task, body.clone()) }),
            );
        }
    }
    if let Some(doc_paths) = doc["paths"].as_object_mut() {
        doc_paths.extend(paths);
    }

    let schemas = doc["components"]["schemas"].take();
    let mut schemas = match schemas {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (name, schema) in &registry.schemas {
        // MetaSchema is plain data with derived `Serialize`: this cannot fail.
        if let Ok(v) = serde_json::to_value(schema) {
            schemas.insert(name.clone(), v);
        }
    }
    schemas.insert(
        "TaskArgs".into(),
        json!({
            "type": "array",
            "items": {"type": "string"},
            "description": "Arguments appended after the configured ones. No body (or `null`) adds none."
        }),
    );
    doc["components"]["schemas"] = Value::Object(schemas);
    doc["components"]["responses"] = super::refusal::with_components(task_responses());
    declare_bearer(&mut doc);

    let mut tags = vec![
        json!({"name": SERVICE_TAG, "description": "Routes, task discovery and async sessions"}),
        json!({"name": DOCS_TAG, "description": "This document and Swagger UI"}),
    ];
    tags.extend(
        cluster_types
            .into_iter()
            .map(|ct| json!({"name": ct, "description": format!("Tasks of cluster type {ct}")})),
    );
    doc["tags"] = Value::Array(tags);
    doc
}

/// Declares the bearer scheme, and puts it on every operation that needs a token when the
/// service runs with `--auth-token` (always declared, so the committed document is the served
/// one; with authentication off the header is ignored). `/metrics` takes it optionally.
fn declare_bearer(doc: &mut Value) {
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer",
                   "description": "A token of --auth-token / --auth-token-file (or --read-token for read-only routes)"}
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let security = match catalogue::ROUTES.access(path) {
            Access::Open => continue,
            Access::Metrics => json!([{}, {"bearer": []}]),
            Access::Read | Access::Protected => json!([{"bearer": []}]),
        };
        for op in item
            .as_object_mut()
            .into_iter()
            .flat_map(|p| p.values_mut())
        {
            op["security"] = security.clone();
        }
    }
}

/// The operations of the document routes ([`super::documents`]).
fn doc_routes(paths: &mut BTreeMap<String, Value>) {
    let get = |summary: &str, id: &str, media: &str, schema: Value| {
        json!({"get": {
            "tags": [DOCS_TAG],
            "summary": summary,
            "operationId": id,
            "responses": {"200": {
                "description": summary,
                "content": {media: {"schema": schema}}
            }}
        }})
    };
    paths.insert(
        "/openapi.json".into(),
        get(
            "This OpenAPI document, as JSON",
            "openapi_json",
            "application/json",
            json!({"type": "object"}),
        ),
    );
    paths.insert(
        "/openapi.yaml".into(),
        get(
            "This OpenAPI document, as YAML",
            "openapi_yaml",
            "application/yaml",
            json!({"type": "object"}),
        ),
    );
    paths.insert(
        "/swagger".into(),
        get(
            "Swagger UI for this document",
            "swagger",
            "text/html",
            json!({"type": "string"}),
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::super::rendered::Cache;
    use super::*;
    use crate::config::Schedule;
    use crate::http::Doc;
    use std::sync::Arc;

    fn table(yaml: &str) -> RouteTable {
        let dir = tempfile::tempdir().unwrap();
        match RouteTable::build(yaml, dir.path(), 1) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    const YAML: &str = "
- {name: demo1, cluster_type: TendbCluster, language: sh, executable: echo, args: [a], collected: false}
- {name: cluster_demo1, cluster_type: tendb, language: sh, executable: echo, collected: false, schedule: '*/5 2-4 * * 1-5', enable: false}
";

    #[test]
    fn every_task_gets_both_operations_with_distinct_ids_and_its_scheduling() {
        let t = table(YAML);
        let doc = document(&t);
        let mut ids = BTreeSet::new();
        for task in t.tasks.values() {
            for kind in ["sync", "async"] {
                let op = &doc["paths"][format!("/{kind}/{}", task.path)]["post"];
                assert!(op.is_object(), "{kind} {}", task.path);
                assert_eq!(op["x-enabled"], task.enabled, "{kind} {}", task.path);
                assert_eq!(
                    op["x-schedule"].as_str(),
                    task.schedule.as_ref().map(Schedule::line).as_deref()
                );
                if let Some(id) = op["operationId"].as_str() {
                    assert!(ids.insert(id.to_string()), "duplicate operationId {id}");
                }
            }
        }
        // `tendb-cluster/demo1` and `tendb/cluster-demo1` must not share an id.
        assert!(ids.contains("sync__tendb_cluster__demo1"), "{ids:?}");
        assert!(ids.contains("sync__tendb__cluster_demo1"), "{ids:?}");
        let op = &doc["paths"]["/async/tendb/cluster-demo1"]["post"];
        assert_eq!(op["x-schedule"], "*/5 2-4 * * 1-5");
        assert_eq!(op["x-enabled"], false);
        let text = op["description"].as_str().unwrap();
        assert!(
            text.contains("Disabled: schedulers skip it (scheduled at `*/5 2-4 * * 1-5`"),
            "{text}"
        );
    }

    /// Every declared route is in the document unless it is declared undocumented, and the
    /// document has nothing undeclared.
    #[test]
    fn the_document_has_every_declared_route_and_nothing_else() {
        let doc = document(&table(YAML));
        let paths = doc["paths"].as_object().unwrap();
        for r in catalogue::ROUTES.iter() {
            let method = r.method.to_lowercase();
            let documented: Vec<_> = paths
                .iter()
                .filter(|(p, item)| r.matches(p) && item.get(&method).is_some())
                .map(|(p, _)| p.as_str())
                .collect();
            match r.doc {
                Doc::Listed => assert_eq!(documented, [r.path], "{} {}", r.method, r.path),
                Doc::PerTask => assert!(
                    documented.iter().any(|p| *p != r.path),
                    "{} {} has no per-task operation in the document",
                    r.method,
                    r.path
                ),
                Doc::Undocumented => assert!(documented.is_empty(), "{}", r.path),
            }
        }
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                let upper = method.to_uppercase();
                assert!(
                    catalogue::ROUTES
                        .iter()
                        .any(|r| r.method == upper && r.matches(path)),
                    "the document has {upper} {path}, which no route declares"
                );
            }
        }
    }

    #[test]
    fn document_is_deterministic_and_ends_with_a_newline() {
        let a = to_json(&document(&table(YAML)));
        let b = to_json(&document(&table(YAML)));
        assert_eq!(a, b);
        assert!(a.ends_with("}\n"));
    }

    #[tokio::test]
    async fn cache_renders_again_only_for_a_new_generation() {
        let cache = Cache::new(document);
        let first = cache.get(Arc::new(table(YAML))).await;
        assert!(Arc::ptr_eq(&first, &cache.get(Arc::new(table(YAML))).await));
        let dir = tempfile::tempdir().unwrap();
        let Ok(next) = RouteTable::build(YAML, dir.path(), 2) else {
            panic!("valid config rejected")
        };
        let next = Arc::new(next);
        let second = cache.get(next.clone()).await;
        assert!(!Arc::ptr_eq(&first, &second));
        // The answers share the cached bytes instead of copying them.
        assert_eq!(second.json.as_ptr(), cache.get(next).await.json.as_ptr());
    }
}
