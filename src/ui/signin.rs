//! "Sign in": with tokens configured, the dashboard asks for one and keeps it in an HttpOnly,
//! SameSite=Strict cookie, which the authentication middleware reads on `/ui` routes. The token
//! is checked by the next page the browser opens: a wrong one comes back here.

use std::sync::Arc;

use maud::html;
use poem::http::header;
use poem::web::{Data, Form, Query};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::layout::{shell, Nav};
use super::{redirect, Viewer};
use crate::app::App;
use crate::auth::COOKIE;

/// The query of the sign-in page.
#[derive(Debug, Default, Deserialize)]
pub struct SigninQuery {
    /// Set when the token given was refused.
    #[serde(default)]
    refused: bool,
}

/// `GET /ui/signin`: the form.
#[handler]
pub async fn page(
    Data(app): Data<&Arc<App>>,
    Query(query): Query<SigninQuery>,
    req: &Request,
) -> Response {
    let had_token = req
        .header(header::COOKIE)
        .is_some_and(|c| c.contains(COOKIE));
    let main = html! {
        h1 { "Sign in" }
        @if !app.settings.auth.enabled() {
            p { "This service has no tokens configured: no sign-in is needed. " a href="/ui/" { "Tasks" } }
        } @else {
            @if query.refused || had_token { p.error role="alert" { "That token is not valid here." } }
            form.signin method="post" action="/ui/signin" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
            p { small { "A full token (--auth-token) may run, kill and reload; a read-only token (--read-token) sees every page." } }
        }
    };
    let viewer = Viewer {
        can_act: false,
        signed_in: false,
    };
    shell(app, viewer, Nav::None, "Sign in", main)
}

/// The sign-in form's field.
#[derive(Debug, Deserialize)]
pub struct SigninForm {
    token: String,
}

fn cookie(value: &str, max_age: i64) -> String {
    let value = percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC);
    format!("{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

/// `POST /ui/signin`: keeps the token in the cookie and goes to the start page.
#[handler]
pub async fn submit(Form(form): Form<SigninForm>) -> Response {
    let mut resp = redirect("/ui/");
    if let Ok(v) = cookie(form.token.trim(), 30 * 24 * 3600).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/signout`: forgets the cookie.
#[handler]
pub async fn sign_out() -> Response {
    let mut resp = redirect("/ui/signin");
    if let Ok(v) = cookie("", 0).parse() {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}
