//! Looking at and stopping async sessions: `POST /async/query` and `POST /async/kill`.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::types::{ParseFromJSON, ToJSON};
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::body::LenientJson;
use crate::app::App;
use crate::http::{Access, Envelope, ErrorEnvelope, Route};
use crate::sessions::SessionInfo;
use crate::supervisor::KillError;

/// The routes of this file, with the access each needs.
pub const ROUTES: &[Route] = &[
    Route::new("POST", "/async/query", Access::Read).listed(1),
    Route::new("POST", "/async/kill", Access::Protected).listed(0),
];

/// Selects one session.
#[derive(Debug, Clone, Object)]
pub struct SessionRef {
    /// The id `POST /async/...` answered with.
    pub session_id: String,
}

/// The optional body of `/async/query`.
#[derive(Debug, Clone, Object)]
pub struct SessionQuery {
    /// The session to show; absent means every session.
    pub session_id: Option<String>,
}

/// Answers of `/async/query` (`T`: a list of sessions) and `/async/kill` (`T`: one session).
#[derive(ApiResponse)]
#[oai(bad_request_handler = "SessionAnswer::bad_body")]
pub enum SessionAnswer<T: ParseFromJSON + ToJSON> {
    /// `/async/query`: the session (a one-element list), or every session newest first.
    /// `/async/kill`: the session has been killed (or had already ended); its final state.
    #[oai(status = 200)]
    Ok(Json<Envelope<T>>),
    /// The body is not JSON or not what the operation reads, or the session id is not a UUID.
    #[oai(status = 400)]
    BadRequest(Json<ErrorEnvelope>),
    /// No such session (never existed, or cleaned after its retention).
    #[oai(status = 404)]
    NotFound(Json<ErrorEnvelope>),
    /// The session is not in memory and the result store cannot be read now.
    #[oai(status = 503)]
    Unavailable(Json<ErrorEnvelope>),
}

// A body that does not parse is answered by the operation's own documented 400 variant, so the
// document and the answer cannot drift apart (poem-openapi calls this instead of failing).
impl<T: ParseFromJSON + ToJSON> SessionAnswer<T> {
    fn bad_body(err: poem::Error) -> Self {
        Self::BadRequest(Json(ErrorEnvelope::new(err.to_string())))
    }
}

type QueryAnswer = SessionAnswer<Vec<SessionInfo>>;
type KillAnswer = SessionAnswer<SessionInfo>;

/// The session id a request names, or why it is not one.
pub fn parse_session_id(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|e| format!("session_id `{raw}` is not a UUID: {e}"))
}

/// The session API.
pub struct SessionsApi {
    /// The service.
    pub app: Arc<App>,
}

#[OpenApi]
impl SessionsApi {
    /// Shows one async session, or all of them.
    ///
    /// With a `session_id`, the session as a one-element list; with no body, `{}` or a null
    /// `session_id`, every session newest first. Finished sessions stay for the retention period.
    #[oai(path = "/async/query", method = "post")]
    async fn query(&self, body: LenientJson<Option<SessionQuery>>) -> QueryAnswer {
        let Some(raw) = body.0.and_then(|q| q.session_id) else {
            return QueryAnswer::Ok(Json(Envelope::ok(self.app.runs.sessions())));
        };
        let id = match parse_session_id(&raw) {
            Ok(id) => id,
            Err(e) => return QueryAnswer::BadRequest(Json(ErrorEnvelope::new(e))),
        };
        let session = self.app.runs.session(id);
        // A session seen as done has its log records in its file.
        self.app.logs.flushed().await;
        if let Some(s) = session {
            return QueryAnswer::Ok(Json(Envelope::ok(vec![s])));
        }
        // Not in memory: after a restart, past the retention, or on another replica.
        match self.app.store.get(id).await {
            Ok(Some(r)) => QueryAnswer::Ok(Json(Envelope::ok(vec![r.to_session()]))),
            Ok(None) => {
                QueryAnswer::NotFound(Json(ErrorEnvelope::new(format!("session {id} not found"))))
            }
            Err(e) => QueryAnswer::Unavailable(Json(ErrorEnvelope::new(e.to_string()))),
        }
    }

    /// Kills an async session.
    ///
    /// Kills the session's whole process group (SIGTERM, then SIGKILL after the grace period)
    /// and answers with its final state; the session stays queryable.
    #[oai(path = "/async/kill", method = "post")]
    async fn kill(&self, body: LenientJson<SessionRef>) -> KillAnswer {
        let id = match parse_session_id(&body.0.session_id) {
            Ok(id) => id,
            Err(e) => return KillAnswer::BadRequest(Json(ErrorEnvelope::new(e))),
        };
        let killed = self.app.runs.kill(id).await;
        let wait = self.app.runs.deadlines().stopped_within();
        match killed {
            Ok(s) => KillAnswer::Ok(Json(Envelope::ok(s))),
            // Not here: its owner (another replica) is asked through the result store.
            Err(e @ KillError::NotFound(_)) => match self.app.store.remote_kill(id, wait).await {
                Ok(Some(s)) => KillAnswer::Ok(Json(Envelope::ok(s))),
                Ok(None) => KillAnswer::NotFound(Json(ErrorEnvelope::new(e.to_string()))),
                Err(e) => KillAnswer::Unavailable(Json(ErrorEnvelope::new(e.to_string()))),
            },
        }
    }
}
