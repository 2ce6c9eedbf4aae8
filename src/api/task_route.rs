//! The task routes, `POST /sync/<cluster-type>/<name>` and `POST /async/<cluster-type>/<name>`:
//! the task looked up, its body read and checked, then run to its end or started as a session.

use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use poem::http::StatusCode;
use poem::web::{Data, Path};
use poem::{handler, post, Body, EndpointExt, Request, Response};

use super::{body, hangup, refusal};
use crate::app::{self, App};
use crate::http::{respond, Access, Envelope, ErrorEnvelope, Route};

/// `POST /sync/<cluster-type>/<name>`: starts and stops runs, so a full token only. `/list` and
/// the document show it once per task.
const SYNC: Route = Route::new("POST", "/sync/:cluster_type/:name", Access::Protected).per_task();
/// `POST /async/<cluster-type>/<name>`, declared as [`SYNC`] is.
const ASYNC: Route = Route::new("POST", "/async/:cluster_type/:name", Access::Protected).per_task();

/// The routes of this file, with the access each needs.
pub const ROUTES: &[Route] = &[SYNC, ASYNC];

/// Adds both task routes to `route`, at their declared templates.
pub fn mount(route: poem::Route) -> poem::Route {
    route
        .at(SYNC.path, post(task_route.data(Mode::Sync)))
        .at(ASYNC.path, post(task_route.data(Mode::Async)))
}

/// Reads a whole request body of at most `max` bytes (`--max-body-bytes`).
///
/// Collected frame by frame under `http_body_util::Limited` rather than with poem's
/// `into_bytes_limit`, which zeroes a read buffer kept inside the handler's future, so every
/// sync call would zero and copy it.
async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, Response> {
    let body: BoxBody<bytes::Bytes, std::io::Error> = body.into();
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            &ErrorEnvelope::new(format!(
                "the body is larger than {max} bytes (--max-body-bytes)"
            )),
        )),
        Err(e) => Err(respond(
            StatusCode::BAD_REQUEST,
            &ErrorEnvelope::new(format!("cannot read the body: {e}")),
        )),
    }
}

/// Reads the body, looks the task up and checks the body against it; `Err` is the finished
/// error answer.
///
/// The body is read first, also for a task that does not exist: a request answered before its
/// body was read leaves the body in the connection, and the client's next request on that
/// kept-alive connection then fails without ever reaching the service.
async fn prepare(
    app: &App,
    ct: &str,
    name: &str,
    body: Body,
) -> Result<(Arc<crate::table::Task>, app::Input), Response> {
    let bytes = read_body(body, app.settings.request_limits.max_body).await?;
    let table = app.routes.load();
    let mut path = String::with_capacity(ct.len() + 1 + name.len());
    path.push_str(ct);
    path.push('/');
    path.push_str(name);
    let Some(task) = table.get(&path).cloned() else {
        return Err(respond(
            StatusCode::NOT_FOUND,
            &ErrorEnvelope::new(format!("no task at {path} (GET /list shows every route)")),
        ));
    };
    drop(table);
    let input = body::task_input(&task, &bytes)
        .and_then(|input| match &input {
            app::Input::Args(args) => app.settings.request_limits.check_args(args).map(|()| input),
            app::Input::Builtin(..) => Ok(input),
        })
        .map_err(|e| respond(StatusCode::BAD_REQUEST, &ErrorEnvelope::new(e)))?;
    Ok((task, input))
}

/// How a task route runs its task.
#[derive(Clone, Copy)]
enum Mode {
    Sync,
    Async,
}

/// `POST /sync/<ct>/<name>` and `POST /async/<ct>/<name>`: the task and its input, then the run.
#[handler]
async fn task_route(
    Path((ct, name)): Path<(String, String)>,
    body: Body,
    Data(app): Data<&Arc<App>>,
    Data(mode): Data<&Mode>,
    req: &Request,
) -> Response {
    let (task, input) = match prepare(app, &ct, &name, body).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    match mode {
        Mode::Sync => sync_task(app, task, input, req).await,
        Mode::Async => async_task(app, task, input, req),
    }
}

/// Runs the task and answers with its last stdout line.
async fn sync_task(
    app: &Arc<App>,
    task: Arc<crate::table::Task>,
    input: app::Input,
    req: &Request,
) -> Response {
    let client_gone = hangup::client_gone(req);
    match app.runs.run_sync(task, input, client_gone).await {
        Ok(r) => respond(
            StatusCode::OK,
            &Envelope::of(r.ok, r.data.clone(), r.msg.clone()),
        ),
        Err(refused) => refusal::answer(&refused),
    }
}

/// Starts a session and answers with its id at once.
fn async_task(
    app: &Arc<App>,
    task: Arc<crate::table::Task>,
    input: app::Input,
    req: &Request,
) -> Response {
    match app
        .runs
        .start_async(task, input, req.header("idempotency-key"))
    {
        Ok(id) => respond(StatusCode::OK, &Envelope::ok(id.to_string())),
        Err(refused) => refusal::answer(&refused),
    }
}
