//! Event matchers: a topic with optional field matchers, and [`match_events`], which judges the
//! events a step expects (in order or not) against those received, for the mock and for the
//! differential mode.

use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, value::MapAccessDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::Matcher;

/// An expected event: a topic, or `{topic, fields}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EventMatchFull {
    /// The topic, e.g. `/tasks/exit`.
    pub topic: String,
    /// Event fields that must match (kebab-case protobuf names).
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, Matcher>,
}

/// An expected event: a topic string or `{topic, fields}`.
#[derive(Debug, Clone)]
pub struct EventMatch(pub EventMatchFull);

fn check_topic<E: de::Error>(t: &str) -> Result<(), E> {
    if t.starts_with('/') && t.len() > 1 && !t.ends_with('/') {
        Ok(())
    } else {
        Err(E::custom(format!(
            "invalid topic `{t}`; expected a path like /tasks/exit"
        )))
    }
}

impl<'de> Deserialize<'de> for EventMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EventMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a topic like /tasks/exit or {topic, fields}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventMatch, E> {
                check_topic::<E>(v)?;
                Ok(EventMatch(EventMatchFull {
                    topic: v.to_string(),
                    fields: Default::default(),
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EventMatch, A::Error> {
                let full = EventMatchFull::deserialize(MapAccessDeserializer::new(map))?;
                check_topic::<A::Error>(&full.topic)?;
                Ok(EventMatch(full))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for EventMatch {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EventMatch".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let full = g.subschema_for::<EventMatchFull>();
        json_schema!({
            "description": "A topic (`/tasks/exit`) or {topic, fields}.",
            "anyOf": [{"type": "string", "pattern": "^/"}, full]
        })
    }
}

/// Matches expected events against what was delivered, `(topic, fields)` in order: as an ordered
/// subsequence, or with `exact` as the exact sequence. Returns the index after the last matched
/// event, or why not (`no /tasks/exit after /tasks/start`, `/tasks/exit came with exit-status:
/// expected 143, got 0`). The mock's engine and the differential mode both judge with it.
pub fn match_events(
    got: &[(String, Value)],
    expect: &[EventMatch],
    exact: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<usize, String> {
    let fields_ok = |m: &EventMatch, f: &Value| -> Result<(), String> {
        for (k, mm) in &m.0.fields {
            // `io.stdout` reaches into nested fields.
            let at = f.pointer(&format!("/{}", k.replace('.', "/")));
            mm.check(at, lookup).map_err(|e| format!("{k}: {e}"))?;
        }
        Ok(())
    };
    if exact {
        if got.len() != expect.len() {
            return Err(format!("{} events instead of {}", got.len(), expect.len()));
        }
        for (i, (m, (t, f))) in expect.iter().zip(got).enumerate() {
            if &m.0.topic != t {
                return Err(format!("event {} is {t}, expected {}", i + 1, m.0.topic));
            }
            fields_ok(m, f).map_err(|e| format!("{t}: {e}"))?;
        }
        return Ok(got.len());
    }
    let mut j = 0;
    let mut last: Option<&str> = None;
    for m in expect {
        let mut note = None;
        loop {
            let Some((t, f)) = got.get(j) else {
                let after = last.map(|l| format!(" after {l}")).unwrap_or_default();
                return Err(match note {
                    Some(n) => format!("{} came with {n}", m.0.topic),
                    None => format!("no {}{after}", m.0.topic),
                });
            };
            j += 1;
            if t == &m.0.topic {
                match fields_ok(m, f) {
                    Ok(()) => {
                        last = Some(t.as_str());
                        break;
                    }
                    Err(e) => note = Some(e),
                }
            }
        }
    }
    Ok(j)
}
