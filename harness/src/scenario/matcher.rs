//! Matchers of the scenario format: response-field matchers (`expect`), error-code expectations
//! (`expect-error`), event matchers and output matchers, with their checking logic and `${var}`
//! expansion.

use std::fmt;
use std::time::SystemTime;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, value::MapAccessDeserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

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

/// A matcher for captured output; every key given must hold.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OutputMatch {
    /// The whole output equals this text.
    #[serde(default)]
    pub equals: Option<String>,
    /// The output contains this text.
    #[serde(default)]
    pub contains: Option<String>,
    /// Extension: the output does not contain this text.
    #[serde(default)]
    pub not_contains: Option<String>,
    /// The output matches this regex.
    #[serde(default, deserialize_with = "regex_checked")]
    pub matches: Option<String>,
    /// Extension: the output is exactly this many bytes.
    #[serde(default)]
    pub length: Option<usize>,
}

impl OutputMatch {
    /// Checks bytes; the error says what was expected and shows the head and tail of what came.
    pub fn check(&self, got: &[u8], lookup: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        let text = String::from_utf8_lossy(got);
        let shown = || abbreviate(&text, 200);
        if let Some(w) = &self.equals {
            let w = expand(w, lookup)?;
            if text != w {
                return Err(format!("expected {w:?}, got {}", shown()));
            }
        }
        if let Some(w) = &self.contains {
            let w = expand(w, lookup)?;
            if !text.contains(&w) {
                return Err(format!("expected output containing {w:?}, got {}", shown()));
            }
        }
        if let Some(w) = &self.not_contains {
            let w = expand(w, lookup)?;
            if text.contains(&w) {
                return Err(format!("expected output without {w:?}, got {}", shown()));
            }
        }
        if let Some(r) = &self.matches {
            let re = regex::Regex::new(r).map_err(|e| format!("invalid regex `{r}`: {e}"))?;
            if !re.is_match(&text) {
                return Err(format!("expected output matching /{r}/, got {}", shown()));
            }
        }
        if let Some(n) = self.length {
            if got.len() != n {
                return Err(format!(
                    "expected {n} bytes, got {} bytes: {}",
                    got.len(),
                    shown()
                ));
            }
        }
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

#[cfg(test)]
mod tests {

    #[test]
    fn every_code_but_ok_is_a_name_scenarios_can_write() {
        for c in crate::wire::Code::ALL.into_iter().skip(1) {
            let e: ErrorCode = serde_yaml_ng::from_str(c.as_str()).unwrap();
            assert_eq!(e.code(), Some(c));
            assert_eq!(e.as_str(), c.as_str());
        }
        let any: ErrorCode = serde_yaml_ng::from_str("any").unwrap();
        assert_eq!((any.code(), any.as_str()), (None, "any"));
        assert!(serde_yaml_ng::from_str::<ErrorCode>("ok").is_err());
    }
    use super::*;
    use serde_json::json;

    fn vars(n: &str) -> Option<String> {
        (n == "init-pid").then(|| "42".to_string())
    }

    #[test]
    fn scalars_and_words() {
        let m = |y: &str| serde_yaml_ng::from_str::<Matcher>(y).unwrap();
        assert!(m("143").check(Some(&json!(143)), &vars).is_ok());
        assert!(m("143")
            .check(Some(&json!(0)), &vars)
            .unwrap_err()
            .contains("expected 143, got 0"));
        assert!(m("nonzero").check(Some(&json!(7)), &vars).is_ok());
        assert!(m("nonzero").check(Some(&json!(0)), &vars).is_err());
        assert!(m("nonzero").check(None, &vars).is_err());
        assert!(m("running").check(Some(&json!("running")), &vars).is_ok());
        assert!(m("${init-pid}").check(Some(&json!(42)), &vars).is_ok());
        assert!(m("${nope}")
            .check(Some(&json!(42)), &vars)
            .unwrap_err()
            .contains("nope"));
        assert!(m("{gt: 3, lt: 5}").check(Some(&json!(4)), &vars).is_ok());
        assert!(m("{one-of: [1, 2]}").check(Some(&json!(3)), &vars).is_err());
        assert!(m("{contains: '${init-pid}'}")
            .check(Some(&json!([1, 42])), &vars)
            .is_ok());
        assert!(m("{len: 0}").check(Some(&json!([])), &vars).is_ok());
        assert!(m("{not-before: '2020-01-01T00:00:00Z'}")
            .check(Some(&json!("2021-01-01T00:00:00Z")), &vars)
            .is_ok());
        assert!(m("{not-before: '2022-01-01T00:00:00Z'}")
            .check(Some(&json!("2021-01-01T00:00:00Z")), &vars)
            .is_err());
    }

    #[test]
    fn bad_operator_is_an_error() {
        // A typo next to a real operator is refused at load time, naming both.
        let e = serde_yaml_ng::from_str::<Matcher>("{gt: 1, lesser: 3}").unwrap_err();
        assert!(e.to_string().contains("`lesser`"), "{e}");
        assert!(e.to_string().contains("`gt`"), "{e}");
        // Alone it is a literal map, and the mismatch says how it was read.
        let e = serde_yaml_ng::from_str::<Matcher>("{greater: 3}")
            .unwrap()
            .check(Some(&json!(5)), &vars)
            .unwrap_err();
        assert!(
            e.contains(r#"expected the map {"greater":3} (a literal: none of its keys is an operator), got 5"#),
            "{e}"
        );
        // Operators are still checked for their values.
        assert!(serde_yaml_ng::from_str::<Matcher>("{len: many}").is_err());
        assert!(serde_yaml_ng::from_str::<Matcher>("{matches: '('}").is_err());
    }

    #[test]
    fn literal_lists() {
        let m = |y: &str| serde_yaml_ng::from_str::<Matcher>(y).unwrap();
        // `processes: []`: only an empty list matches.
        assert!(matches!(m("[]"), Matcher::Literal(_)));
        assert!(m("[]").check(Some(&json!([])), &vars).is_ok());
        assert_eq!(
            m("[]").check(Some(&json!([42])), &vars).unwrap_err(),
            "expected [], got [42]"
        );
        assert!(m("[]").check(None, &vars).is_err());
        assert!(m("[]").check(Some(&json!({})), &vars).is_err());
        // Numbers: the same elements in the same order, loosely (numbers vs strings).
        assert!(m("[1, 2, 3]").check(Some(&json!([1, 2, 3])), &vars).is_ok());
        assert!(m("[1, 2, 3]")
            .check(Some(&json!(["1", 2.0, "3"])), &vars)
            .is_ok());
        assert!(m("['1', '2']").check(Some(&json!([1, 2])), &vars).is_ok());
        assert_eq!(
            m("[1, 2, 3]")
                .check(Some(&json!([1, 3, 2])), &vars)
                .unwrap_err(),
            "expected [1,2,3], got [1,3,2]"
        );
        assert!(m("[1, 2, 3]").check(Some(&json!([1, 2])), &vars).is_err());
        assert!(m("[1, 2]").check(Some(&json!([1, 2, 3])), &vars).is_err());
        assert!(m("[1, 2]").check(Some(&json!("1, 2")), &vars).is_err());
        // Variables are expanded; the words are plain text inside a literal.
        assert!(m("['${init-pid}']")
            .check(Some(&json!([42])), &vars)
            .is_ok());
        assert!(m("['${nope}']")
            .check(Some(&json!([42])), &vars)
            .unwrap_err()
            .contains("nope"));
        assert!(m("[any]").check(Some(&json!([7])), &vars).is_err());
        assert!(m("[Running]")
            .check(Some(&json!(["running"])), &vars)
            .is_ok());
        // A list of maps.
        assert!(m("[{pid: 42, info: null}]")
            .check(Some(&json!([{"pid": 42, "info": null}])), &vars)
            .is_ok());
    }

    #[test]
    fn literal_maps() {
        let m = |y: &str| serde_yaml_ng::from_str::<Matcher>(y).unwrap();
        let io = json!({"stdin": "", "stdout": "/x/out", "terminal": false});
        let lit = m("{stdin: '', stdout: /x/out, terminal: false}");
        assert!(matches!(lit, Matcher::Literal(_)));
        assert!(lit.check(Some(&io), &vars).is_ok());
        // Key order does not matter; values compare loosely.
        assert!(m("{pid: '42', count: 1}")
            .check(Some(&json!({"count": 1, "pid": 42})), &vars)
            .is_ok());
        assert!(m("{pid: '${init-pid}'}")
            .check(Some(&json!({"pid": 42})), &vars)
            .is_ok());
        // A different value, a missing key, an extra key: mismatches.
        assert_eq!(
            m("{pid: 42}")
                .check(Some(&json!({"pid": 43})), &vars)
                .unwrap_err(),
            r#"expected {"pid":42}, got {"pid":43}"#
        );
        assert!(m("{pid: 42, x: 1}")
            .check(Some(&json!({"pid": 42})), &vars)
            .is_err());
        assert!(m("{pid: 42}")
            .check(Some(&json!({"pid": 42, "x": 1})), &vars)
            .is_err());
        assert!(m("{pid: 42}").check(None, &vars).is_err());
        // Nested.
        assert!(m("{a: {b: [1, '2']}}")
            .check(Some(&json!({"a": {"b": [1, 2]}})), &vars)
            .is_ok());
        assert!(m("{a: {b: [1, 2]}}")
            .check(Some(&json!({"a": {"b": [1]}})), &vars)
            .is_err());
        // `{}` keeps its old meaning (no operator: anything); the empty map is `equals: {}`.
        assert!(matches!(m("{}"), Matcher::Ops(_)));
        assert!(m("{}").check(Some(&json!(5)), &vars).is_ok());
        assert!(m("{equals: {}}").check(Some(&json!({})), &vars).is_ok());
        assert!(m("{equals: {}}")
            .check(Some(&json!({"a": 1})), &vars)
            .is_err());
        // `equals` with a map compares loosely too.
        assert!(m("{equals: {pid: '42'}}")
            .check(Some(&json!({"pid": 42})), &vars)
            .is_ok());
    }

    #[test]
    fn expect_error_forms() {
        let e: ExpectError = serde_yaml_ng::from_str("not-found").unwrap();
        assert!(e.accepts("not-found") && !e.accepts("unknown"));
        let e: ExpectError = serde_yaml_ng::from_str("[unknown, failed-precondition]").unwrap();
        assert!(e.accepts("unknown") && e.accepts("failed-precondition"));
        let e: ExpectError = serde_yaml_ng::from_str("any").unwrap();
        assert!(e.accepts("internal"));
        assert!(serde_yaml_ng::from_str::<ExpectError>("nope").is_err());
    }

    #[test]
    fn output_match() {
        let m: OutputMatch = serde_yaml_ng::from_str("{equals: \"hi\\n\", length: 3}").unwrap();
        assert!(m.check(b"hi\n", &vars).is_ok());
        assert!(m.check(b"ho\n", &vars).is_err());
        assert!(serde_yaml_ng::from_str::<OutputMatch>("{matches: '('}").is_err());
    }

    fn event_matches(y: &str) -> Vec<EventMatch> {
        serde_yaml_ng::from_str(y).unwrap()
    }

    fn delivered(topics: &[&str]) -> Vec<(String, Value)> {
        topics
            .iter()
            .map(|t| (t.to_string(), json!({"exit-status": 0})))
            .collect()
    }

    const NO_VARS: &dyn Fn(&str) -> Option<String> = &|_| None;

    #[test]
    fn subsequence_and_exact() {
        let want = event_matches("[/tasks/create, /tasks/start, /tasks/exit]");
        let seq = delivered(&[
            "/tasks/create",
            "/tasks/oom",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete",
        ]);
        assert_eq!(match_events(&seq, &want, false, NO_VARS), Ok(4));
        assert!(match_events(&seq, &want, true, NO_VARS)
            .unwrap_err()
            .contains("5 events instead of 3"));
        let early = delivered(&["/tasks/create", "/tasks/exit", "/tasks/start"]);
        let e = match_events(&early, &want, false, NO_VARS).unwrap_err();
        assert_eq!(e, "no /tasks/exit after /tasks/start");
        let e = match_events(&early, &want, true, NO_VARS).unwrap_err();
        assert_eq!(e, "event 2 is /tasks/exit, expected /tasks/start");
    }

    #[test]
    fn fields_are_checked() {
        let want = event_matches("[{topic: /tasks/exit, fields: {exit-status: 143}}]");
        let e = match_events(&delivered(&["/tasks/exit"]), &want, false, NO_VARS).unwrap_err();
        assert_eq!(e, "/tasks/exit came with exit-status: expected 143, got 0");
        assert!(match_events(&delivered(&[]), &want, false, NO_VARS)
            .unwrap_err()
            .contains("no /tasks/exit"));
    }
}
