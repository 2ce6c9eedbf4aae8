//! A JSON request body that does not insist on a `Content-Type`.
//!
//! Celery workers and on-call engineers post with `curl -d '{...}'`, which sends
//! `application/x-www-form-urlencoded`, or with no body at all. poem-openapi's `Json` would refuse
//! both, so this payload reads the bytes whatever the content type says, treats an empty body as
//! JSON `null`, and still documents itself as `application/json`.

use poem::{Request, RequestBody, Result};
use poem_openapi::error::ParseRequestPayloadError;
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::ParseFromJSON;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde_json::Value;

/// A JSON body parsed into `T`, whatever the request's content type.
pub struct LenientJson<T>(pub T);

impl<'a, T: ParseFromJSON + Send> ApiExtractor<'a> for LenientJson<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: T::IS_REQUIRED,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<()>,
    ) -> Result<Self> {
        let bytes = <Vec<u8> as poem::FromRequest>::from_request(request, body).await?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| ParseRequestPayloadError {
                reason: format!("the body is not valid JSON: {e}"),
            })?
        };
        let parsed = T::parse_from_json(Some(value)).map_err(|e| ParseRequestPayloadError {
            reason: e.into_message(),
        })?;
        Ok(Self(parsed))
    }
}
