//! The store's state as a type ([`StoreState`]) and as `GET /-/store` answers it
//! ([`StoreStatus`]). The state is written in the answer as the same strings as ever
//! (`connected`, `spooling`, `off`), with the same plain-string schema in the OpenAPI document.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::Object;
use serde_json::Value;

/// Where the store's records stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Records go straight to the backend.
    Connected,
    /// The remote backend is unreachable: records wait in the local spool.
    Spooling,
    /// `--no-result-store`: no record is written anywhere.
    Off,
}

impl StoreState {
    /// The state as `/-/store` and `/readyz` write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Spooling => "spooling",
            Self::Off => "off",
        }
    }

    /// Whether the service may take traffic in this state. Spooling is ready: records wait on
    /// local disk and none is lost. Off is ready: the operator chose to keep no records.
    pub fn is_ready(self) -> bool {
        match self {
            Self::Connected | Self::Spooling | Self::Off => true,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Connected, Self::Spooling, Self::Off]
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

impl std::fmt::Display for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// In the OpenAPI document the state is a plain string, as it was before it had a type.
impl Type for StoreState {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new("string")))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToJSON for StoreState {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.as_str().into()))
    }
}

impl ParseFromJSON for StoreState {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) => Self::parse(&s).ok_or_else(|| {
                ParseError::custom(format!(
                    "`{s}` is not a store state (connected, spooling or off)"
                ))
            }),
            other => Err(ParseError::expected_type(other.unwrap_or_default())),
        }
    }
}

/// The store's state, as `GET /-/store` shows it.
#[derive(Debug, Clone, Object)]
pub struct StoreStatus {
    /// `embedded`, `mongodb`, or `off` (`--no-result-store`).
    pub backend: String,
    /// Where records go: the file, or the MongoDB URI with the password as `***`; empty when off.
    pub location: String,
    /// `connected`, `spooling` (MongoDB unreachable; records wait in the spool), or `off`.
    pub state: StoreState,
    /// Records waiting in the queue for the writer.
    pub queue_depth: u64,
    /// Records waiting in the spool for MongoDB.
    pub spool_size: u64,
    /// The last write error, if the last write failed.
    #[oai(nullable)]
    pub last_error: Option<String>,
    /// This process's instance id (owner of its records).
    pub instance: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_and_write_as_the_strings_of_the_api() {
        for state in [StoreState::Connected, StoreState::Spooling, StoreState::Off] {
            let json = state.to_json();
            assert_eq!(json, Some(Value::String(state.to_string())));
            assert_eq!(StoreState::parse_from_json(json).ok(), Some(state));
            assert!(state.is_ready());
        }
        assert!(StoreState::parse_from_json(Some(Value::String("up".into()))).is_err());
        assert!(StoreState::parse_from_json(Some(Value::Bool(true))).is_err());
    }
}
