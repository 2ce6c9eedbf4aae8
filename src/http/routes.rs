//! Route declarations and the route-template matcher.
//!
//! Every route the service serves is declared once, beside its handler, as a [`Route`]: method,
//! path template (poem's `:param` segments), the [`Access`] it needs, how the OpenAPI document
//! covers it and where `GET /list` shows it. The API gathers the declarations into one
//! [`RouteSet`]; `/list`, the authentication middleware, the metrics' route labels and the
//! document's security all read that set.

/// Who may call a route once authentication is on, from the most open to the most closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Anyone (probes, the Swagger page and the document it loads).
    Open,
    /// Open, unless `--metrics-token` is set; then that token or a full one.
    Metrics,
    /// A read-only token or a full one: looks at the service, starts or stops nothing.
    Read,
    /// A full token only.
    Protected,
}

/// How the OpenAPI document covers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// The document has the route at its path.
    Listed,
    /// A template: the document has one concrete path per task instead.
    PerTask,
    /// Not in the document (Swagger UI's own files).
    Undocumented,
}

/// One served route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// HTTP method, upper case.
    pub method: &'static str,
    /// Path template; `:name` matches one non-empty segment.
    pub path: &'static str,
    /// The token it needs.
    pub access: Access,
    /// How the document covers it.
    pub doc: Doc,
    /// Its position in `GET /list`, whose order clients have always seen; `None` for routes
    /// `/list` does not show (the task templates, listed per task, and Swagger UI's files).
    pub list: Option<u8>,
}

impl Route {
    /// A documented route that `/list` does not show.
    pub const fn new(method: &'static str, path: &'static str, access: Access) -> Self {
        Self {
            method,
            path,
            access,
            doc: Doc::Listed,
            list: None,
        }
    }

    /// The same route, shown at `position` of `/list`.
    pub const fn listed(mut self, position: u8) -> Self {
        self.list = Some(position);
        self
    }

    /// The same route, documented per task.
    pub const fn per_task(mut self) -> Self {
        self.doc = Doc::PerTask;
        self
    }

    /// The same route, left out of the document.
    pub const fn undocumented(mut self) -> Self {
        self.doc = Doc::Undocumented;
        self
    }

    /// Whether `path` (without its query) is served by this route's template.
    pub fn matches(&self, path: &str) -> bool {
        if !self.path.contains(':') {
            return self.path == path;
        }
        let mut want = self.path.split('/');
        let mut got = path.split('/');
        loop {
            match (want.next(), got.next()) {
                (None, None) => return true,
                (Some(w), Some(g)) if w.starts_with(':') && !g.is_empty() => {}
                (Some(w), Some(g)) if w == g => {}
                _ => return false,
            }
        }
    }
}

/// Every declared route, in groups (one per capability of the API).
pub struct RouteSet {
    groups: &'static [&'static [Route]],
}

impl RouteSet {
    /// The set of `groups`.
    pub const fn new(groups: &'static [&'static [Route]]) -> Self {
        Self { groups }
    }

    /// Every route, group by group.
    pub fn iter(&self) -> impl Iterator<Item = &'static Route> {
        self.groups.iter().flat_map(|g| g.iter())
    }

    /// The routes serving `path`: the fixed ones if any, else the templates that match it. A
    /// trailing slash is ignored, as the router ignores it.
    fn serving(&self, path: &str) -> Vec<&'static Route> {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        let fixed: Vec<_> = self.iter().filter(|r| r.path == path).collect();
        if !fixed.is_empty() {
            return fixed;
        }
        self.iter().filter(|r| r.matches(path)).collect()
    }

    /// The template `path` is served under, if any route serves it.
    pub fn template(&self, path: &str) -> Option<&'static str> {
        self.serving(path).first().map(|r| r.path)
    }

    /// The access `path` needs: the strictest of its routes', or [`Access::Protected`] for a
    /// path no route serves, so that nothing is open by omission.
    pub fn access(&self, path: &str) -> Access {
        self.serving(path)
            .iter()
            .map(|r| r.access)
            .max()
            .unwrap_or(Access::Protected)
    }

    /// The routes `GET /list` shows, in its order.
    pub fn listed(&self) -> Vec<&'static Route> {
        let mut out: Vec<_> = self.iter().filter(|r| r.list.is_some()).collect();
        out.sort_by_key(|r| r.list);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &[Route] = &[
        Route::new("POST", "/async/query", Access::Read),
        Route::new("POST", "/async/:cluster_type/:name", Access::Protected).per_task(),
        Route::new("GET", "/ping", Access::Open).listed(1),
        Route::new("GET", "/list", Access::Read).listed(0),
    ];
    const SET: RouteSet = RouteSet::new(&[GROUP]);

    #[test]
    fn fixed_paths_win_over_templates_and_unknown_paths_are_protected() {
        assert_eq!(SET.template("/async/query"), Some("/async/query"));
        assert_eq!(SET.access("/async/query"), Access::Read);
        assert_eq!(
            SET.template("/async/tendb/x/"),
            Some("/async/:cluster_type/:name")
        );
        assert_eq!(SET.template("/async/tendb"), None);
        assert_eq!(SET.template("/async/tendb/"), None);
        assert_eq!(SET.template("/async/tendb/x/y"), None);
        assert_eq!(SET.access("/nothing"), Access::Protected);
        assert_eq!(SET.access("/"), Access::Protected);
        assert_eq!(SET.access("/ping"), Access::Open);
    }

    #[test]
    fn listed_follows_the_declared_positions() {
        let paths: Vec<_> = SET.listed().iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/list", "/ping"]);
    }
}
