//! Config: the served task config (generation, load time, checksum, task count, file) and the
//! "Reload" action, which takes the same path as a file change, SIGHUP or `POST /-/reload`.

use std::sync::Arc;

use maud::html;
use poem::web::Data;
use poem::{handler, Request, Response};

use super::layout::{self, shell, Nav};
use super::{redirect, same_origin, Viewer};
use crate::app::App;
use crate::reload::Trigger;

/// `GET /ui/config`: the served config.
#[handler]
pub async fn page(Data(app): Data<&Arc<App>>, req: &Request) -> Response {
    let viewer = Viewer::of(req);
    let status = app.reloader.status();
    let store = app.store.status();
    let main = html! {
        h1 { "Config" }
        dl.facts {
            dt { "Generation" } dd #generation { (status.generation) }
            dt { "Loaded" } dd { (layout::when_rfc3339(&status.loaded_at)) }
            dt { "Checksum" } dd { code { (status.checksum) } }
            dt { "Tasks" } dd { (status.task_count) }
            dt { "File" } dd { code { (status.config_path) } }
            dt { "Result store" } dd { (store.backend) " " (store.state.as_str()) " (" (store.location) ")" }
        }
        @if viewer.can_act {
            form method="post" action="/ui/config/reload" {
                button type="submit" { "Reload" }
            }
        }
    };
    shell(app, viewer, Nav::Config, "Config", main)
}

/// `POST /ui/config/reload`: reloads the config and shows the page again; a rejected file shows
/// as the alert every page carries.
#[handler]
pub async fn reload_action(Data(app): Data<&Arc<App>>, req: &Request) -> Response {
    if !same_origin(req) {
        return super::cross_origin();
    }
    // A rejection is remembered by the reloader and shown by every page.
    let _ = crate::reload::reload_off_thread(&app.reloader, Trigger::Request).await;
    redirect("/ui/config")
}
