//! The one list of the API's capabilities: the poem-openapi API of each (served together and
//! documented together as [`FixedApi`]) and every route each declares ([`ROUTES`]), which
//! `/list`, the authentication middleware, the metrics' route labels and the document's security
//! all read. Adding a capability file means adding it here, twice. The dashboard's routes
//! ([`crate::ui::ROUTES`]) are declared here too, so the same middleware guards them.

use std::sync::Arc;

use super::{config, documents, metrics, output, probes, results, sessions, task_route, tasks};
use crate::app::App;
use crate::http::RouteSet;
use crate::ui;

/// Every declared route, capability by capability.
pub static ROUTES: RouteSet = RouteSet::new(&[
    tasks::ROUTES,
    task_route::ROUTES,
    sessions::ROUTES,
    results::ROUTES,
    config::ROUTES,
    probes::ROUTES,
    metrics::ROUTES,
    output::ROUTES,
    documents::ROUTES,
    ui::ROUTES,
]);

/// The poem-openapi APIs, in the order the document lists their operations.
pub type FixedApi = (
    tasks::TasksApi,
    sessions::SessionsApi,
    results::ResultsApi,
    config::ConfigApi,
    probes::ProbesApi,
    metrics::MetricsApi,
    output::OutputApi,
);

/// The APIs serving `app`.
pub fn fixed_api(app: &Arc<App>) -> FixedApi {
    (
        tasks::TasksApi {
            app: app.clone(),
            routes: &ROUTES,
        },
        sessions::SessionsApi { app: app.clone() },
        results::ResultsApi { app: app.clone() },
        config::ConfigApi { app: app.clone() },
        probes::ProbesApi { app: app.clone() },
        metrics::MetricsApi { app: app.clone() },
        output::OutputApi { app: app.clone() },
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use poem_openapi::OpenApi;

    use super::*;
    use crate::http::Access;
    use crate::table::RouteTable;

    fn table() -> RouteTable {
        let dir = tempfile::tempdir().unwrap();
        let yaml = "- {name: demo1, cluster_type: TendbCluster, language: sh, executable: echo, collected: false}";
        match RouteTable::build(yaml, dir.path(), 1) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// Every operation poem-openapi serves has a declaration (so an access level); the plain
    /// routes are mounted at their declarations' paths, so they have one by construction.
    #[test]
    fn every_served_operation_is_declared() {
        for api in FixedApi::meta() {
            for path in api.paths {
                for op in path.operations {
                    let method = op.method.as_str();
                    assert!(
                        ROUTES
                            .iter()
                            .any(|r| r.method == method && r.path == path.path),
                        "{method} {} is served but declares no access: add it to the ROUTES \
                         of its capability file",
                        path.path
                    );
                }
            }
        }
    }

    #[test]
    fn list_positions_are_unique_and_in_the_order_clients_know() {
        let positions: BTreeSet<_> = ROUTES.iter().filter_map(|r| r.list).collect();
        assert_eq!(
            positions.len(),
            ROUTES.listed().len(),
            "a /list position is taken twice"
        );
        let fixed: Vec<_> = ROUTES
            .listed()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            fixed,
            [
                "POST /async/kill",
                "POST /async/query",
                "GET /discovery",
                "GET /list",
                "GET /ping",
                "GET /-/config",
                "POST /-/reload",
                "GET /results",
                "GET /-/store",
                "GET /healthz",
                "GET /readyz",
                "GET /metrics",
                "GET /async/output",
                "GET /async/output-stream",
                "GET /openapi.json",
                "GET /openapi.yaml",
                "GET /swagger",
            ]
        );
    }

    #[test]
    fn routes_list_is_sorted_and_ends_with_fixed_api() {
        let routes = tasks::list(&table(), &ROUTES);
        assert_eq!(routes[0].method, "POST");
        assert_eq!(routes[0].path, "/async/tendb-cluster/demo1");
        assert!(routes
            .iter()
            .any(|r| r.method == "POST" && r.path == "/sync/tendb-ha/counter"));
        assert_eq!(routes.last().unwrap().path, "/swagger");
    }

    #[test]
    fn templates_prefer_fixed_routes_and_unknown_paths_are_protected() {
        assert_eq!(ROUTES.template("/async/query"), Some("/async/query"));
        assert_eq!(
            ROUTES.template("/async/output-stream"),
            Some("/async/output-stream")
        );
        assert_eq!(
            ROUTES.template("/async/tendb/x"),
            Some("/async/:cluster_type/:name")
        );
        assert_eq!(
            ROUTES.template("/sync/tendb/x/"),
            Some("/sync/:cluster_type/:name")
        );
        assert_eq!(ROUTES.template("/sync/tendb"), None);
        assert_eq!(ROUTES.access("/no-such-route"), Access::Protected);
        assert_eq!(ROUTES.access("/no/such/route"), Access::Protected);
        // `/` only redirects to the dashboard, whose pages ask for a token themselves.
        assert_eq!(ROUTES.access("/"), Access::Open);
        assert_eq!(ROUTES.access("/ping"), Access::Open);
        assert_eq!(ROUTES.access("/list"), Access::Read);
    }

    /// What a read-only token may look at, and what it may not do.
    #[test]
    fn read_tokens_see_the_results_store_and_config_but_change_nothing() {
        for path in ["/results", "/-/store", "/-/config", "/async/query", "/list"] {
            assert_eq!(ROUTES.access(path), Access::Read, "{path}");
        }
        for path in ["/async/kill", "/-/reload", "/sync/a/b", "/async/a/b"] {
            assert_eq!(ROUTES.access(path), Access::Protected, "{path}");
        }
    }
}
