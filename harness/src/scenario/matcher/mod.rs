//! Matchers of the scenario format: response-field matchers (`expect`), error-code expectations
//! (`expect-error`), event matchers and output matchers, with their checking logic and `${var}`
//! expansion.

use std::fmt;
use std::time::SystemTime;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, value::MapAccessDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

mod events;
mod expect_error;
mod output;

pub use events::{match_events, EventMatch, EventMatchFull};
pub use expect_error::{ErrorCode, ExpectError};
pub use output::OutputMatch;

/// Expands `${name}` references with `lookup`; an unknown name is an error naming it.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unterminated `${{` in `{s}`"));
        };
        let name = &after[..end];
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("undefined variable `${{{name}}}` in `{s}`")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub(crate) fn regex_checked<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    if let Some(r) = &s {
        regex::Regex::new(r).map_err(|e| de::Error::custom(format!("invalid regex `{r}`: {e}")))?;
    }
    Ok(s)
}

/// Operators of a map-form matcher; every operator given must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MatchOps {
    /// Equal to this value (`${var}` expanded).
    #[serde(default)]
    pub equals: Option<Value>,
    /// Not equal to this value.
    #[serde(default)]
    pub ne: Option<Value>,
    /// Greater than (numbers).
    #[serde(default)]
    pub gt: Option<Value>,
    /// Greater than or equal.
    #[serde(default)]
    pub ge: Option<Value>,
    /// Less than.
    #[serde(default)]
    pub lt: Option<Value>,
    /// Less than or equal.
    #[serde(default)]
    pub le: Option<Value>,
    /// Equal to one of these values.
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    /// A string containing this text, or a list containing this element.
    #[serde(default)]
    pub contains: Option<Value>,
    /// The negation of `contains`.
    #[serde(default)]
    pub not_contains: Option<Value>,
    /// A string matching this regex.
    #[serde(default, deserialize_with = "regex_checked")]
    pub matches: Option<String>,
    /// A list (or string) of this length.
    #[serde(default)]
    pub len: Option<usize>,
    /// A timestamp not before this one (RFC 3339 or `${var}` holding one).
    #[serde(default)]
    pub not_before: Option<String>,
    /// A timestamp not after this one.
    #[serde(default)]
    pub not_after: Option<String>,
}

/// The keys of a map-form matcher ([`MatchOps`]); a map with none of them is a literal map.
pub const OPERATORS: [&str; 13] = [
    "equals",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
    "one-of",
    "contains",
    "not-contains",
    "matches",
    "len",
    "not-before",
    "not-after",
];

/// A response- or event-field matcher: a scalar (`143`, `running`, `nonzero`, `zero`,
/// `present`, `absent`, `any`, `${var}`), a map of operators, or a literal list or map.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// A scalar: equality, or one of the words `nonzero`, `zero`, `present`, `absent`, `any`.
    Scalar(Value),
    /// Operators.
    Ops(Box<MatchOps>),
    /// A literal list (`[]`, `[1, 2]`) or a map none of whose keys is an operator
    /// (`{pid: 42}`): equal as a value, element by element and key by key, with the loose rules
    /// of scalars (`"42"` equals `42`, strings ignore case, `${var}` expanded; the words are
    /// plain text here).
    Literal(Box<Value>),
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Matcher;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a value (`143`, `running`, `nonzero`), a map of operators (`{gt: 0}`), or a literal list or map (`[]`, `{pid: 42}`)",
                )
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Matcher, E> {
                Ok(Matcher::Scalar(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Matcher, E> {
                Ok(Matcher::Scalar(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Matcher, E> {
                Ok(Matcher::Scalar(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Matcher, E> {
                Ok(Matcher::Scalar(Value::from(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Matcher, E> {
                Ok(Matcher::Scalar(Value::String(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Matcher, E> {
                Ok(Matcher::Scalar(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Matcher, A::Error> {
                let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Matcher::Literal(Box::new(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Matcher, A::Error> {
                let v = Value::deserialize(MapAccessDeserializer::new(map))?;
                let Value::Object(o) = &v else {
                    return Err(de::Error::custom("expected a map"));
                };
                let (ops, other): (Vec<&String>, Vec<&String>) =
                    o.keys().partition(|k| OPERATORS.contains(&k.as_str()));
                match (ops.is_empty(), other.is_empty()) {
                    // `{}` stays what it always was: no operator, so anything matches.
                    (_, true) => MatchOps::deserialize(v)
                        .map(|m| Matcher::Ops(Box::new(m)))
                        .map_err(de::Error::custom),
                    (true, false) => Ok(Matcher::Literal(Box::new(v))),
                    (false, false) => Err(de::Error::custom(format!(
                        "operators ({}) and other keys ({}) in one map: a map of operators takes only {}; a literal map takes no operator (compare a map holding one with `equals: {{..}}`)",
                        join(&ops),
                        join(&other),
                        OPERATORS.join(", ")
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

fn join(keys: &[&String]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl JsonSchema for Matcher {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Matcher".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let ops = g.subschema_for::<MatchOps>();
        json_schema!({
            "description": "A value, one of the words nonzero|zero|present|absent|any, `${var}`, a map of operators, or a literal list or map (no key an operator) compared as a value with the same loose rules (numbers equal their decimal strings, strings ignore case, `${var}` expanded).",
            "anyOf": [
                {"type": ["string", "number", "boolean", "null"]},
                ops,
                {"type": "array", "description": "A literal list: same length, each element equal (loosely)."},
                {
                    "type": "object",
                    "description": "A literal map (none of its keys is an operator): the same keys, each value equal (loosely).",
                    "not": {"anyOf": [
                        {"required": ["equals"]}, {"required": ["ne"]}, {"required": ["gt"]},
                        {"required": ["ge"]}, {"required": ["lt"]}, {"required": ["le"]},
                        {"required": ["one-of"]}, {"required": ["contains"]},
                        {"required": ["not-contains"]}, {"required": ["matches"]},
                        {"required": ["len"]}, {"required": ["not-before"]},
                        {"required": ["not-after"]}
                    ]}
                }
            ]
        })
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        other => other.to_string(),
    }
}

/// Expands `${var}` in every string of a value.
fn expand_value(v: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(expand(s, lookup)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| expand_value(x, lookup))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), expand_value(x, lookup)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Loose equality: numbers compare numerically, a number equals its decimal string, strings
/// compare case-insensitively (status names); lists element by element, maps key by key (the
/// same keys).
pub fn loose_eq(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
            b.trim().parse::<f64>().ok() == a.as_f64()
        }
        (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| loose_eq(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, x)| b.get(k).is_some_and(|y| loose_eq(x, y)))
        }
        (a, b) => a == b,
    }
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Parses an RFC 3339 timestamp.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim()).ok()
}

impl Matcher {
    /// Checks `actual` (None = the field is absent); the error says expected vs got.
    pub fn check(
        &self,
        actual: Option<&Value>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let null = Value::Null;
        let got = actual.unwrap_or(&null);
        match self {
            Matcher::Scalar(Value::String(word)) => match word.as_str() {
                "any" => Ok(()),
                "nonzero" if is_zero(got) => Err(format!("expected nonzero, got {}", show(got))),
                "zero" if !is_zero(got) => Err(format!("expected zero, got {}", show(got))),
                "present" if got.is_null() => Err("expected present, got nothing".into()),
                "absent" if !got.is_null() => Err(format!("expected absent, got {}", show(got))),
                "nonzero" | "zero" | "present" | "absent" => Ok(()),
                _ => {
                    let want = Value::String(expand(word, lookup)?);
                    if loose_eq(got, &want) {
                        Ok(())
                    } else {
                        Err(format!("expected {}, got {}", show(&want), show(got)))
                    }
                }
            },
            Matcher::Scalar(want) => {
                if loose_eq(got, want) {
                    Ok(())
                } else {
                    Err(format!("expected {}, got {}", show(want), show(got)))
                }
            }
            Matcher::Ops(ops) => ops.check(got, lookup),
            Matcher::Literal(want) => {
                let want = expand_value(want, lookup)?;
                if loose_eq(got, &want) {
                    Ok(())
                } else if want.is_object() && !got.is_object() {
                    Err(format!(
                        "expected the map {} (a literal: none of its keys is an operator), got {}",
                        show(&want),
                        show(got)
                    ))
                } else {
                    Err(format!("expected {}, got {}", show(&want), show(got)))
                }
            }
        }
    }
}

impl MatchOps {
    fn check(&self, got: &Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        let ex = |v: &Value| expand_value(v, lookup);
        if let Some(w) = &self.equals {
            let w = ex(w)?;
            if !loose_eq(got, &w) {
                return Err(format!("expected {}, got {}", show(&w), show(got)));
            }
        }
        if let Some(w) = &self.ne {
            let w = ex(w)?;
            if loose_eq(got, &w) {
                return Err(format!("expected anything but {}, got it", show(&w)));
            }
        }
        let cmp = |w: &Option<Value>, name: &str, ok: fn(f64, f64) -> bool| -> Result<(), String> {
            if let Some(w) = w {
                let w = ex(w)?;
                match (num(got), num(&w)) {
                    (Some(a), Some(b)) if ok(a, b) => {}
                    _ => return Err(format!("expected {name} {}, got {}", show(&w), show(got))),
                }
            }
            Ok(())
        };
        cmp(&self.gt, ">", |a, b| a > b)?;
        cmp(&self.ge, ">=", |a, b| a >= b)?;
        cmp(&self.lt, "<", |a, b| a < b)?;
        cmp(&self.le, "<=", |a, b| a <= b)?;
        if let Some(list) = &self.one_of {
            let list = list.iter().map(ex).collect::<Result<Vec<_>, _>>()?;
            if !list.iter().any(|w| loose_eq(got, w)) {
                return Err(format!(
                    "expected one of {}, got {}",
                    Value::Array(list),
                    show(got)
                ));
            }
        }
        let contains = |w: &Value| -> Result<bool, String> {
            let w = ex(w)?;
            Ok(match (got, &w) {
                (Value::String(s), Value::String(t)) => s.contains(t.as_str()),
                (Value::Array(a), w) => a.iter().any(|x| loose_eq(x, w)),
                _ => false,
            })
        };
        if let Some(w) = &self.contains {
            if !contains(w)? {
                return Err(format!(
                    "expected something containing {}, got {}",
                    show(w),
                    show(got)
                ));
            }
        }
        if let Some(w) = &self.not_contains {
            if contains(w)? {
                return Err(format!(
                    "expected nothing containing {}, got {}",
                    show(w),
                    show(got)
                ));
            }
        }
        if let Some(r) = &self.matches {
            let re = regex::Regex::new(r).map_err(|e| format!("invalid regex `{r}`: {e}"))?;
            match got {
                Value::String(s) if re.is_match(s) => {}
                _ => return Err(format!("expected a match of /{r}/, got {}", show(got))),
            }
        }
        if let Some(n) = self.len {
            let l = match got {
                Value::Array(a) => Some(a.len()),
                Value::String(s) => Some(s.len()),
                _ => None,
            };
            if l != Some(n) {
                return Err(format!("expected length {n}, got {}", show(got)));
            }
        }
        let time_cmp = |w: &Option<String>, before: bool| -> Result<(), String> {
            if let Some(w) = w {
                let w = expand(w, lookup)?;
                let bound =
                    parse_time(&w).ok_or_else(|| format!("`{w}` is not an RFC 3339 time"))?;
                let t = got.as_str().and_then(parse_time);
                match t {
                    Some(t) if before && t >= bound => {}
                    Some(t) if !before && t <= bound => {}
                    _ => {
                        let rel = if before { "not before" } else { "not after" };
                        return Err(format!("expected a time {rel} {w}, got {}", show(got)));
                    }
                }
            }
            Ok(())
        };
        time_cmp(&self.not_before, true)?;
        time_cmp(&self.not_after, false)?;
        Ok(())
    }
}

/// `"abc…(1234 bytes)…xyz"` for long texts, the quoted text otherwise.
pub fn abbreviate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return format!("{s:?}");
    }
    let mut head = max / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - max / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{:?}…({} bytes)…{:?}", &s[..head], s.len(), &s[tail..])
}

#[cfg(test)]
mod tests;
