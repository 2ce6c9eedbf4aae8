//! The documents, open to anyone: the OpenAPI document (`GET /openapi.json`, `GET /openapi.yaml`,
//! built by [`super::openapi`] and cached per config generation) and the bundled Swagger UI
//! (`GET /swagger` and its files).
//!
//! The document is open so that the Swagger page can load it before anyone presses Authorize;
//! it names tasks and their arguments but runs nothing. Swagger UI comes from the npm package
//! `swagger-ui-dist`, vendored in `assets/swagger/` and compiled into the binary: the hosts have
//! no internet, and poem-openapi's own Swagger UI page inlines a document fixed at start-up
//! instead of loading the live one.

use std::sync::Arc;

use bytes::Bytes;
use poem::http::{header, StatusCode};
use poem::web::Data;
use poem::{get, handler, EndpointExt, Response};

use super::rendered::Cache;
use crate::app::App;
use crate::http::{Access, Route};

const JSON: Route = Route::new("GET", "/openapi.json", Access::Open).listed(14);
const YAML: Route = Route::new("GET", "/openapi.yaml", Access::Open).listed(15);
const SWAGGER: Route = Route::new("GET", "/swagger", Access::Open).listed(16);

/// A file of Swagger UI: its route, content type and bytes.
type Asset = (Route, &'static str, &'static [u8]);

/// The files Swagger UI's page loads; not API operations, so not in the document.
const ASSETS: [Asset; 3] = [
    (
        Route::new("GET", "/swagger/swagger-ui-bundle.js", Access::Open).undocumented(),
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger/swagger-ui-bundle.js"),
    ),
    (
        Route::new("GET", "/swagger/swagger-ui.css", Access::Open).undocumented(),
        "text/css; charset=utf-8",
        include_bytes!("../../assets/swagger/swagger-ui.css"),
    ),
    (
        Route::new("GET", "/swagger/favicon-32x32.png", Access::Open).undocumented(),
        "image/png",
        include_bytes!("../../assets/swagger/favicon-32x32.png"),
    ),
];

/// The routes of this file, with the access each needs.
pub const ROUTES: &[Route] = &[JSON, YAML, SWAGGER, ASSETS[0].0, ASSETS[1].0, ASSETS[2].0];

fn text(content_type: &'static str, body: Bytes) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(poem::Body::from_bytes(body))
}

#[handler]
async fn openapi_json(Data(app): Data<&Arc<App>>, Data(cache): Data<&Arc<Cache>>) -> Response {
    let r = cache.get(app.routes.load()).await;
    text("application/json", r.json.clone())
}

#[handler]
async fn openapi_yaml(Data(app): Data<&Arc<App>>, Data(cache): Data<&Arc<Cache>>) -> Response {
    let r = cache.get(app.routes.load()).await;
    text("application/yaml", r.yaml.clone())
}

/// A bundled file. The page itself is revalidated on every load; the big files behind it are
/// cached by browsers for a day (they change only with a deploy).
fn asset(content_type: &'static str, bytes: &'static [u8]) -> poem::RouteMethod {
    let cache = if content_type.starts_with("text/html") {
        "no-cache"
    } else {
        "public, max-age=86400"
    };
    get(poem::endpoint::make_sync(move |_| {
        Response::builder()
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, cache)
            .body(bytes)
    }))
}

/// Adds the documents and Swagger UI's files to `route`, at their declared paths; the document
/// answers come from `cache`.
pub(super) fn mount(route: poem::Route, cache: Arc<Cache>) -> poem::Route {
    let page = asset(
        "text/html; charset=utf-8",
        include_bytes!("../../assets/swagger/index.html"),
    );
    let route = route
        .at(JSON.path, get(openapi_json).data(cache.clone()))
        .at(YAML.path, get(openapi_yaml).data(cache))
        .at(SWAGGER.path, page);
    ASSETS.into_iter().fold(route, |r, (decl, ty, bytes)| {
        r.at(decl.path, asset(ty, bytes))
    })
}
