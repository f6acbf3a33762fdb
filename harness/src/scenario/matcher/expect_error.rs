//! `expect-error`: the error code (or codes, or `any`) an RPC step must fail with.

use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A gRPC/ttrpc status code name, or `any` (`None`): the names are [`crate::wire::Code`]'s,
/// but `ok`, which is no error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub Option<crate::wire::Code>);

impl ErrorCode {
    /// `any`.
    pub const ANY: ErrorCode = ErrorCode(None);

    /// The code this names (`None` for `any`).
    pub fn code(self) -> Option<crate::wire::Code> {
        self.0
    }

    /// The kebab-case name (as `harness::client::RpcError::code_name` gives).
    pub fn as_str(self) -> &'static str {
        self.0.map_or("any", crate::wire::Code::as_str)
    }

    /// Every name a scenario may write: `any` and the codes but `ok`.
    pub fn names() -> &'static [&'static str] {
        static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
        NAMES.get_or_init(|| {
            std::iter::once("any")
                .chain(crate::wire::Code::ALL[1..].iter().map(|c| c.as_str()))
                .collect()
        })
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if name == "any" {
            return Ok(ErrorCode::ANY);
        }
        crate::wire::Code::ALL[1..]
            .iter()
            .find(|c| c.as_str() == name)
            .map(|c| ErrorCode(Some(*c)))
            .ok_or_else(|| de::Error::unknown_variant(&name, ErrorCode::names()))
    }
}

impl JsonSchema for ErrorCode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorCode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A gRPC/ttrpc status code name, or `any`.",
            "type": "string",
            "enum": ErrorCode::names(),
        })
    }
}

/// `expect-error`: one code name, a list of acceptable ones, or `any`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectError(pub Vec<ErrorCode>);

impl ExpectError {
    /// Whether an error with this code name satisfies the expectation.
    pub fn accepts(&self, code_name: &str) -> bool {
        self.0
            .iter()
            .any(|c| *c == ErrorCode::ANY || c.as_str() == code_name)
    }

    /// `not-found` or `[not-found, unknown]` for messages.
    pub fn describe(&self) -> String {
        let names: Vec<_> = self.0.iter().map(|c| c.as_str()).collect();
        if names.len() == 1 {
            names[0].to_string()
        } else {
            format!("one of [{}]", names.join(", "))
        }
    }
}

impl<'de> Deserialize<'de> for ExpectError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ExpectError;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an error code name (`not-found`), a list of them, or `any`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpectError, E> {
                let c = ErrorCode::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(ExpectError(vec![c]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ExpectError, A::Error> {
                let mut v = Vec::new();
                while let Some(c) = seq.next_element::<ErrorCode>()? {
                    v.push(c);
                }
                if v.is_empty() {
                    return Err(de::Error::custom("expect-error: empty list of codes"));
                }
                Ok(ExpectError(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ExpectError {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ExpectError".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let code = g.subschema_for::<ErrorCode>();
        json_schema!({
            "description": "An error code name, a list of acceptable codes, or `any`.",
            "anyOf": [code, {"type": "array", "items": code, "minItems": 1}]
        })
    }
}
