//! Signals in scenario files: a name (`SIGTERM`, `TERM`) or a number, validated at load time.

use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};

const NAMES: [(&str, u32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// A Linux signal number (1..=64).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub u32);

impl Signal {
    /// Parses `SIGTERM`, `TERM`, `sigterm` or `15`.
    pub fn parse(s: &str) -> Result<Signal, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<u32>() {
            return Signal::from_number(n);
        }
        let up = t.to_ascii_uppercase();
        let bare = up.strip_prefix("SIG").unwrap_or(&up);
        NAMES
            .iter()
            .find(|(n, _)| *n == bare)
            .map(|(_, v)| Signal(*v))
            .ok_or_else(|| {
                format!("unknown signal `{s}`; expected a name like SIGTERM or a number 1-64")
            })
    }

    fn from_number(n: u32) -> Result<Signal, String> {
        if (1..=64).contains(&n) {
            Ok(Signal(n))
        } else {
            Err(format!("signal number {n} out of range; expected 1-64"))
        }
    }

    /// The `SIGxxx` name, or the number for real-time signals.
    pub fn name(self) -> String {
        NAMES
            .iter()
            .find(|(_, v)| *v == self.0)
            .map(|(n, _)| format!("SIG{n}"))
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Signal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name like SIGTERM or a number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Signal, E> {
                Signal::parse(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Signal, E> {
                Signal::from_number(u32::try_from(v).unwrap_or(u32::MAX)).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Signal, E> {
                Signal::from_number(u32::try_from(v).unwrap_or(u32::MAX)).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Signal {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Signal".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A signal name (SIGTERM, TERM) or number (1-64).",
            "anyOf": [
                {"type": "string", "pattern": "^(?i)(SIG)?[A-Z0-9]+$"},
                {"type": "integer", "minimum": 1, "maximum": 64}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(Signal::parse("SIGTERM"), Ok(Signal(15)));
        assert_eq!(Signal::parse("kill"), Ok(Signal(9)));
        assert_eq!(Signal::parse("2"), Ok(Signal(2)));
        assert!(Signal::parse("SIGNOPE").unwrap_err().contains("SIGNOPE"));
        assert!(Signal::parse("99").is_err());
        assert_eq!(Signal(15).name(), "SIGTERM");
    }
}
