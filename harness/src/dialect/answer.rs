//! Reading a shim's `start` answer as each containerd version does: a bare address, the JSON
//! `BootstrapParams` (1.7, 2.0) or the protobuf `BootstrapResult` (2.3), and the protocol check.

use super::{Dialect, TaskApi};
use crate::error::AddressError;

/// The protocol check of `makeConnection` (core/runtime/v2/shim.go v2.1.9 and v2.3.4,
/// runtime/v2/shim.go v1.7.24), the same for a JSON and a protobuf answer: lower-cased,
/// `ttrpc` is dialed, `grpc` would be dialed by the daemon but the mock speaks ttrpc only, and
/// anything else (the empty protocol of a JSON answer without one too) is refused.
fn check_protocol(protocol: &str) -> Result<(), AddressError> {
    match protocol.to_lowercase().as_str() {
        "ttrpc" => Ok(()),
        "grpc" => Err(AddressError::UnsupportedProtocol {
            protocol: protocol.to_string(),
        }),
        _ => Err(AddressError::UnexpectedProtocol {
            protocol: protocol.to_string(),
        }),
    }
}

/// What a `start` answered, as the dialect read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartAnswer {
    /// Which of the three forms it had.
    pub format: AnswerFormat,
    /// The shim API version the daemon takes from it (2 or 3).
    pub version: u8,
    /// The protocol dialed (`ttrpc`).
    pub protocol: String,
    /// The address.
    pub address: String,
}

/// The form of a `start` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// A protobuf `BootstrapResult` (read by 2.3 only).
    Protobuf,
    /// The JSON bootstrap, version 2 or more.
    Json,
    /// An address alone.
    Bare,
}

impl AnswerFormat {
    /// `protobuf`, `json` or `bare`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnswerFormat::Protobuf => "protobuf",
            AnswerFormat::Json => "json",
            AnswerFormat::Bare => "bare",
        }
    }
}

/// Whether `b` is well-formed protobuf wire data as Go's `proto.Unmarshal` requires of unknown
/// fields too (protowire `ConsumeFieldValue`): valid tags (field number ≥ 1, wire types 0–5),
/// complete values, and every start-group closed by an end-group of the same number. The
/// rust-protobuf parser is more lenient with unknown groups, so text such as a legacy JSON
/// answer (`{` is a start-group tag) could otherwise decode as an empty `BootstrapResult`.
pub(super) fn go_wire_valid(b: &[u8]) -> bool {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    // Walks fields until the end (`group == None`) or the end-group of `group`.
    fn fields(b: &[u8], i: &mut usize, group: Option<u64>, depth: usize) -> bool {
        while *i < b.len() {
            let Some(tag) = varint(b, i) else {
                return false;
            };
            let (num, wire) = (tag >> 3, tag & 7);
            if num == 0 || num > (1 << 29) - 1 {
                return false;
            }
            let ok = match wire {
                0 => varint(b, i).is_some(),
                1 => {
                    *i += 8;
                    *i <= b.len()
                }
                2 => match varint(b, i) {
                    Some(n) if (n as usize) <= b.len() - *i => {
                        *i += n as usize;
                        true
                    }
                    _ => false,
                },
                3 => depth < 100 && fields(b, i, Some(num), depth + 1),
                4 => return group == Some(num),
                5 => {
                    *i += 4;
                    *i <= b.len()
                }
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        group.is_none()
    }
    fields(b, &mut 0, None, 0)
}

/// The fields of a JSON bootstrap reply (Go `client.BootstrapParams`).
struct Bootstrap {
    version: i64,
    address: String,
    protocol: String,
}

/// Parses `out` as Go's `json.Unmarshal` into BootstrapParams would: an object whose known fields
/// have the right types; anything else is `None`.
fn parse_bootstrap_json(out: &str) -> Option<Bootstrap> {
    let v: serde_json::Value = serde_json::from_str(out).ok()?;
    let obj = v.as_object()?;
    let field_str = |k: &str| -> Option<String> {
        match obj.get(k) {
            None | Some(serde_json::Value::Null) => Some(String::new()),
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => None,
        }
    };
    let version = match obj.get("version") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => v.as_i64()?,
    };
    Some(Bootstrap {
        version,
        address: field_str("address")?,
        protocol: field_str("protocol")?,
    })
}

/// Accepts an address containerd could dial: non-empty, one token, no control characters.
fn check_bare(addr: &str) -> Result<String, AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    if addr.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(AddressError::NotAnAddress {
            output: addr.to_string(),
        });
    }
    Ok(addr.to_string())
}

impl Dialect {
    /// Reads the raw output of `start` as [`Dialect::parse_start_bytes`] does and says what it
    /// was: the answer a scenario's `start-answer` step checks.
    pub fn read_start_answer(&self, raw: &[u8]) -> Result<StartAnswer, AddressError> {
        let (address, api) = self.parse_start_bytes(raw)?;
        let text = String::from_utf8_lossy(raw);
        let format = if *self == Dialect::V2_3
            && go_wire_valid(raw)
            && <bootstrap::BootstrapResult as protobuf::Message>::parse_from_bytes(raw).is_ok()
        {
            AnswerFormat::Protobuf
        } else if parse_bootstrap_json(text.trim()).is_some_and(|b| b.version >= 2) {
            AnswerFormat::Json
        } else {
            AnswerFormat::Bare
        };
        Ok(StartAnswer {
            format,
            version: if api == TaskApi::V3 { 3 } else { 2 },
            protocol: "ttrpc".into(),
            address,
        })
    }

    /// Reads the raw combined output of `start` as this containerd version does. 2.3
    /// (core/runtime/v2/shim.go `parseStartResponse` v2.3.4): the untrimmed bytes as a protobuf
    /// `BootstrapResult` first; if they do not decode, the trimmed text as the legacy JSON
    /// (version 2 or more; above 3 refused), else as a bare ttrpc address. The other dialects
    /// read the lossily decoded, trimmed text ([`Dialect::parse_start_output`]).
    pub fn parse_start_bytes(&self, raw: &[u8]) -> Result<(String, TaskApi), AddressError> {
        let text = String::from_utf8_lossy(raw).trim().to_string();
        if *self != Dialect::V2_3 {
            return self.parse_start_output(&text);
        }
        if text.is_empty() {
            // containerd decodes an empty answer as an empty BootstrapResult and refuses its
            // protocol ""; this says what happened.
            return Err(AddressError::Empty);
        }
        let decoded = if go_wire_valid(raw) {
            <bootstrap::BootstrapResult as protobuf::Message>::parse_from_bytes(raw)
        } else {
            Err(protobuf::Error::from(std::io::Error::other(
                "not well-formed protobuf wire data (as Go's proto.Unmarshal reads it)",
            )))
        };
        let pb_err = match decoded {
            Ok(r) => {
                // makeConnection: the protocol; then NewTaskClient: the version.
                check_protocol(&r.protocol)?;
                let address = check_bare(&r.address)?;
                return match r.version {
                    2 => Ok((address, TaskApi::V2)),
                    3 => Ok((address, TaskApi::V3)),
                    version => Err(AddressError::UnsupportedTaskClient { version }),
                };
            }
            Err(e) => e.to_string(),
        };
        let json_err = match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => format!("not JSON: {e}"),
            Ok(_) => match parse_bootstrap_json(&text) {
                None => "JSON, but not a bootstrap object".to_string(),
                Some(b) if b.version < 2 => {
                    format!(
                        "version {} < 2, so the whole output is the address",
                        b.version
                    )
                }
                Some(_) => return self.parse_start_output(&text),
            },
        };
        check_bare(&text)
            .map(|a| (a, TaskApi::V2))
            .map_err(|e| match e {
                AddressError::NotAnAddress { output } => AddressError::Unreadable {
                    protobuf: pb_err,
                    json: json_err,
                    output,
                },
                other => other,
            })
    }

    /// Reads the combined, trimmed output of `start` as this containerd version does
    /// [src v1.7.0 runtime/v2/shim.go parseStartResponse; v2.0.0 core/runtime/v2/shim.go].
    pub fn parse_start_output(
        &self,
        combined_trimmed: &str,
    ) -> Result<(String, TaskApi), AddressError> {
        let out = combined_trimmed;
        if out.is_empty() {
            return Err(AddressError::Empty);
        }
        let json = parse_bootstrap_json(out);
        match self {
            Dialect::V1_6 => {
                if json.is_some() {
                    return Err(AddressError::JsonOn16 {
                        output: out.to_string(),
                    });
                }
                Ok((check_bare(out)?, TaskApi::V2))
            }
            Dialect::V1_7 | Dialect::V2_0 | Dialect::V2_3 => {
                let max = if *self == Dialect::V1_7 { 2 } else { 3 };
                match json {
                    // Go: unmarshal error or version < 2 → the whole output is a ttrpc address.
                    Some(b) if b.version >= 2 => {
                        if b.version > max {
                            return Err(AddressError::UnsupportedVersion { version: b.version });
                        }
                        check_protocol(&b.protocol)?;
                        let api = if b.version == 3 {
                            TaskApi::V3
                        } else {
                            TaskApi::V2
                        };
                        Ok((check_bare(&b.address)?, api))
                    }
                    _ => Ok((check_bare(out)?, TaskApi::V2)),
                }
            }
        }
    }
}
