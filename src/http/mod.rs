//! The HTTP vocabulary every layer shares, in a leaf module that imports nothing else of the
//! crate: the `{code, data, msg}` envelope with the one mapping of errors to answers
//! ([`envelope`]), and the route declarations with their access levels and the route-template
//! matcher ([`routes`]).
//!
//! It is a leaf so that the API (which declares routes), the authentication and metrics
//! middleware (which look routes up) and anything else can use it without importing each other.

pub mod envelope;
pub mod routes;

pub use envelope::{error_response, refuse, respond, Envelope, ErrorEnvelope};
pub use routes::{Access, Doc, Route, RouteSet};
