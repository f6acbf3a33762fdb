//! containerd 2.3's shim bootstrap messages (`containerd.runtime.bootstrap.v1`, from
//! api/runtime/bootstrap/v1/bootstrap.proto v2.3.4): [`BootstrapParams`] (what the daemon writes
//! on a shim's stdin for `start`) and [`BootstrapResult`] (what the shim answers on stdout),
//! hand-written on the `protobuf` crate from the published field numbers (no protoc, no build
//! script).
//!
//! Shared by the harness (the mock containerd writes params and reads results) and the reaper
//! (reads params, writes a result). Encoding follows Go's `proto.Marshal`: fields in field-number
//! order, proto3 defaults (empty string, zero enum) omitted, `optional socket_dir` written
//! whenever set, the repeated enum packed, map entries as `{1: key, 2: value}` messages (here in
//! key order, for reproducible bytes), unknown fields kept and written back last. Decoding fails
//! where Go's `proto.Unmarshal` does on these messages: a bad wire type, a truncated field, a
//! string that is not UTF-8; a known field number with another wire type is kept as unknown.

use std::collections::BTreeMap;

use protobuf::rt::WireType;
use protobuf::well_known_types::any::Any;
use protobuf::{
    CodedInputStream, CodedOutputStream, Enum, EnumOrUnknown, Message, MessageField, SpecialFields,
};

/// Field tags (field number << 3 | wire type) as they appear on the wire.
mod tag {
    /// A length-delimited field (wire type 2).
    pub const fn len(n: u32) -> u32 {
        n << 3 | 2
    }
    /// A varint field (wire type 0).
    pub const fn varint(n: u32) -> u32 {
        n << 3
    }
}

/// The shim's log level (`containerd.runtime.bootstrap.v1.LogLevel`): INFO is 0, more critical
/// levels positive, more verbose ones negative. An open enum: other values survive decoding as
/// [`EnumOrUnknown`] and a shim maps them to the nearest level ([`LogLevel::nearest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogLevel {
    /// `LOG_LEVEL_INFO = 0`.
    #[default]
    Info,
    /// `LOG_LEVEL_TRACE = -8`.
    Trace,
    /// `LOG_LEVEL_DEBUG = -4`.
    Debug,
    /// `LOG_LEVEL_WARN = 4`.
    Warn,
    /// `LOG_LEVEL_ERROR = 8`.
    Error,
    /// `LOG_LEVEL_FATAL = 10`.
    Fatal,
    /// `LOG_LEVEL_PANIC = 12`.
    Panic,
}

impl LogLevel {
    /// The known level closest to `v` (ties go to the more verbose one).
    pub fn nearest(v: i32) -> LogLevel {
        *Self::VALUES
            .iter()
            .min_by_key(|l| ((l.value() as i64 - v as i64).abs(), l.value()))
            .unwrap_or(&LogLevel::Info)
    }

    /// Whether this level asks for debug output (DEBUG or more verbose).
    pub fn is_debug(&self) -> bool {
        self.value() <= LogLevel::Debug.value()
    }
}

impl Enum for LogLevel {
    const NAME: &'static str = "LogLevel";

    fn value(&self) -> i32 {
        match self {
            LogLevel::Info => 0,
            LogLevel::Trace => -8,
            LogLevel::Debug => -4,
            LogLevel::Warn => 4,
            LogLevel::Error => 8,
            LogLevel::Fatal => 10,
            LogLevel::Panic => 12,
        }
    }

    fn from_i32(v: i32) -> Option<Self> {
        Self::VALUES.iter().copied().find(|l| l.value() == v)
    }

    fn from_str(s: &str) -> Option<Self> {
        Some(match s {
            "LOG_LEVEL_INFO" => LogLevel::Info,
            "LOG_LEVEL_TRACE" => LogLevel::Trace,
            "LOG_LEVEL_DEBUG" => LogLevel::Debug,
            "LOG_LEVEL_WARN" => LogLevel::Warn,
            "LOG_LEVEL_ERROR" => LogLevel::Error,
            "LOG_LEVEL_FATAL" => LogLevel::Fatal,
            "LOG_LEVEL_PANIC" => LogLevel::Panic,
            _ => return None,
        })
    }

    const VALUES: &'static [Self] = &[
        LogLevel::Info,
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Fatal,
        LogLevel::Panic,
    ];
}

/// A capability a shim instance announces (`containerd.runtime.bootstrap.v1.Capability`);
/// reserved for future negotiation, only `CAPABILITY_UNSPECIFIED = 0` exists in v2.3.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Capability {
    /// `CAPABILITY_UNSPECIFIED = 0`.
    #[default]
    Unspecified,
}

impl Enum for Capability {
    const NAME: &'static str = "Capability";

    fn value(&self) -> i32 {
        0
    }

    fn from_i32(v: i32) -> Option<Self> {
        (v == 0).then_some(Capability::Unspecified)
    }

    fn from_str(s: &str) -> Option<Self> {
        (s == "CAPABILITY_UNSPECIFIED").then_some(Capability::Unspecified)
    }

    const VALUES: &'static [Self] = &[Capability::Unspecified];
}

/// One configuration section of [`BootstrapParams`] (`Extension { google.protobuf.Any value = 1 }`);
/// the runtime options travel as one (api/runtime/bootstrap/v1/helpers.go `AddExtension` v2.3.4
/// puts an `Any` in as it is, without wrapping it again).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Extension {
    /// 1: the section, with its type URL.
    pub value: MessageField<Any>,
    /// Unknown fields and the cached size.
    pub special_fields: SpecialFields,
}

/// What containerd 2.3 writes on a shim's stdin for `start` (pkg/shim/util.go `Command` v2.3.4).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BootstrapParams {
    /// 1: the container or sandbox id (`-id`).
    pub instance_id: String,
    /// 2: the namespace (`-namespace`).
    pub namespace: String,
    /// 3: the daemon's log level.
    pub log_level: EnumOrUnknown<LogLevel>,
    /// 4: the daemon's version (Go `version.Version`).
    pub containerd_version: String,
    /// 5: the daemon's ttrpc address (events; `TTRPC_ADDRESS`).
    pub containerd_ttrpc_address: String,
    /// 6: the daemon's gRPC address (`-address`).
    pub containerd_grpc_address: String,
    /// 7: the daemon's own executable, for event publishing (`-publish-binary`).
    pub containerd_binary: String,
    /// 8: configuration sections (the runtime options among them).
    pub extensions: Vec<Extension>,
    /// 9 (`optional`): where the shim should put its socket; `None` → its default.
    pub socket_dir: Option<String>,
    /// Unknown fields and the cached size.
    pub special_fields: SpecialFields,
}

/// What a shim answers on stdout to a 2.3 daemon (core/runtime/v2/shim.go `parseStartResponse`
/// v2.3.4 tries this before the legacy JSON and the bare address).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BootstrapResult {
    /// 1: the shim API version: 2 (task v2) or 3 (task v3).
    pub version: i32,
    /// 2: where the shim listens.
    pub address: String,
    /// 3: `ttrpc` or `grpc`.
    pub protocol: String,
    /// 4 (packed): capabilities of this instance.
    pub capabilities: Vec<EnumOrUnknown<Capability>>,
    /// 5: additional metadata.
    pub metadata: BTreeMap<String, String>,
    /// Unknown fields and the cached size.
    pub special_fields: SpecialFields,
}

impl BootstrapParams {
    /// The runtime options: the first extension's `Any` (containerd puts them first and alone).
    pub fn runtime_options(&self) -> Option<&Any> {
        self.extensions.iter().find_map(|e| e.value.as_ref())
    }

    /// Appends `any` as an extension (helpers.go `AddExtension` v2.3.4 with an `Any`).
    pub fn add_extension(&mut self, any: Any) {
        self.extensions.push(Extension {
            value: MessageField::some(any),
            ..Default::default()
        });
    }

    /// The log level, unknown values mapped to the nearest known one.
    pub fn level(&self) -> LogLevel {
        match self.log_level.enum_value() {
            Ok(l) => l,
            Err(v) => LogLevel::nearest(v),
        }
    }
}

/// The size of a length-delimited field holding `len` bytes.
fn len_field_size(field: u32, len: u64) -> u64 {
    protobuf::rt::tag_size(field) + protobuf::rt::compute_raw_varint64_size(len) + len
}

/// Writes a nested message as a length-delimited field (sizes computed just before).
fn write_nested<M: Message>(os: &mut CodedOutputStream, field: u32, m: &M) -> protobuf::Result<()> {
    let size = m.compute_size();
    os.write_tag(field, WireType::LengthDelimited)?;
    os.write_raw_varint32(size as u32)?;
    m.write_to_with_cached_sizes(os)
}

/// Reads one length-delimited message into `m` (merging, as protobuf does for a repeated key).
fn merge_nested<M: Message>(is: &mut CodedInputStream, m: &mut M) -> protobuf::Result<()> {
    let len = is.read_raw_varint64()?;
    let old = is.push_limit(len)?;
    m.merge_from(is)?;
    is.pop_limit(old);
    Ok(())
}

impl Message for Extension {
    const NAME: &'static str = "Extension";

    fn is_initialized(&self) -> bool {
        true
    }

    fn merge_from(&mut self, is: &mut CodedInputStream) -> protobuf::Result<()> {
        while let Some(t) = is.read_raw_tag_or_eof()? {
            match t {
                t if t == tag::len(1) => {
                    merge_nested(is, self.value.mut_or_insert_default())?;
                }
                t => protobuf::rt::read_unknown_or_skip_group(
                    t,
                    is,
                    self.special_fields.mut_unknown_fields(),
                )?,
            }
        }
        Ok(())
    }

    fn compute_size(&self) -> u64 {
        let mut n = 0;
        if let Some(v) = self.value.as_ref() {
            n += len_field_size(1, v.compute_size());
        }
        n += protobuf::rt::unknown_fields_size(self.special_fields.unknown_fields());
        self.special_fields.cached_size().set(n as u32);
        n
    }

    fn write_to_with_cached_sizes(&self, os: &mut CodedOutputStream) -> protobuf::Result<()> {
        if let Some(v) = self.value.as_ref() {
            write_nested(os, 1, v)?;
        }
        os.write_unknown_fields(self.special_fields.unknown_fields())
    }

    fn special_fields(&self) -> &SpecialFields {
        &self.special_fields
    }

    fn mut_special_fields(&mut self) -> &mut SpecialFields {
        &mut self.special_fields
    }

    fn new() -> Self {
        Self::default()
    }

    fn default_instance() -> &'static Self {
        static INSTANCE: Extension = Extension {
            value: MessageField::none(),
            special_fields: SpecialFields::new(),
        };
        &INSTANCE
    }
}

impl Message for BootstrapParams {
    const NAME: &'static str = "BootstrapParams";

    fn is_initialized(&self) -> bool {
        true
    }

    fn merge_from(&mut self, is: &mut CodedInputStream) -> protobuf::Result<()> {
        while let Some(t) = is.read_raw_tag_or_eof()? {
            match t {
                t if t == tag::len(1) => self.instance_id = is.read_string()?,
                t if t == tag::len(2) => self.namespace = is.read_string()?,
                t if t == tag::varint(3) => self.log_level = is.read_enum_or_unknown()?,
                t if t == tag::len(4) => self.containerd_version = is.read_string()?,
                t if t == tag::len(5) => self.containerd_ttrpc_address = is.read_string()?,
                t if t == tag::len(6) => self.containerd_grpc_address = is.read_string()?,
                t if t == tag::len(7) => self.containerd_binary = is.read_string()?,
                t if t == tag::len(8) => {
                    let mut e = Extension::default();
                    merge_nested(is, &mut e)?;
                    self.extensions.push(e);
                }
                t if t == tag::len(9) => self.socket_dir = Some(is.read_string()?),
                t => protobuf::rt::read_unknown_or_skip_group(
                    t,
                    is,
                    self.special_fields.mut_unknown_fields(),
                )?,
            }
        }
        Ok(())
    }

    fn compute_size(&self) -> u64 {
        use protobuf::rt::{int32_size, string_size};
        let mut n = 0;
        for (f, s) in [(1, &self.instance_id), (2, &self.namespace)] {
            if !s.is_empty() {
                n += string_size(f, s);
            }
        }
        if self.log_level.value() != 0 {
            n += int32_size(3, self.log_level.value());
        }
        for (f, s) in [
            (4, &self.containerd_version),
            (5, &self.containerd_ttrpc_address),
            (6, &self.containerd_grpc_address),
            (7, &self.containerd_binary),
        ] {
            if !s.is_empty() {
                n += string_size(f, s);
            }
        }
        for e in &self.extensions {
            n += len_field_size(8, e.compute_size());
        }
        if let Some(d) = &self.socket_dir {
            n += string_size(9, d);
        }
        n += protobuf::rt::unknown_fields_size(self.special_fields.unknown_fields());
        self.special_fields.cached_size().set(n as u32);
        n
    }

    fn write_to_with_cached_sizes(&self, os: &mut CodedOutputStream) -> protobuf::Result<()> {
        for (f, s) in [(1, &self.instance_id), (2, &self.namespace)] {
            if !s.is_empty() {
                os.write_string(f, s)?;
            }
        }
        if self.log_level.value() != 0 {
            os.write_int32(3, self.log_level.value())?;
        }
        for (f, s) in [
            (4, &self.containerd_version),
            (5, &self.containerd_ttrpc_address),
            (6, &self.containerd_grpc_address),
            (7, &self.containerd_binary),
        ] {
            if !s.is_empty() {
                os.write_string(f, s)?;
            }
        }
        for e in &self.extensions {
            write_nested(os, 8, e)?;
        }
        if let Some(d) = &self.socket_dir {
            os.write_string(9, d)?;
        }
        os.write_unknown_fields(self.special_fields.unknown_fields())
    }

    fn special_fields(&self) -> &SpecialFields {
        &self.special_fields
    }

    fn mut_special_fields(&mut self) -> &mut SpecialFields {
        &mut self.special_fields
    }

    fn new() -> Self {
        Self::default()
    }

    fn default_instance() -> &'static Self {
        static INSTANCE: BootstrapParams = BootstrapParams {
            instance_id: String::new(),
            namespace: String::new(),
            log_level: EnumOrUnknown::from_i32(0),
            containerd_version: String::new(),
            containerd_ttrpc_address: String::new(),
            containerd_grpc_address: String::new(),
            containerd_binary: String::new(),
            extensions: Vec::new(),
            socket_dir: None,
            special_fields: SpecialFields::new(),
        };
        &INSTANCE
    }
}

/// The size of one `metadata` map entry's body (`{1: key, 2: value}`, defaults omitted).
fn entry_size(k: &str, v: &str) -> u64 {
    let mut n = 0;
    if !k.is_empty() {
        n += protobuf::rt::string_size(1, k);
    }
    if !v.is_empty() {
        n += protobuf::rt::string_size(2, v);
    }
    n
}

impl Message for BootstrapResult {
    const NAME: &'static str = "BootstrapResult";

    fn is_initialized(&self) -> bool {
        true
    }

    fn merge_from(&mut self, is: &mut CodedInputStream) -> protobuf::Result<()> {
        while let Some(t) = is.read_raw_tag_or_eof()? {
            match t {
                t if t == tag::varint(1) => self.version = is.read_int32()?,
                t if t == tag::len(2) => self.address = is.read_string()?,
                t if t == tag::len(3) => self.protocol = is.read_string()?,
                t if t == tag::len(4) => {
                    protobuf::rt::read_repeated_packed_enum_or_unknown_into(
                        is,
                        &mut self.capabilities,
                    )?;
                }
                t if t == tag::varint(4) => self.capabilities.push(is.read_enum_or_unknown()?),
                t if t == tag::len(5) => {
                    let len = is.read_raw_varint64()?;
                    let old = is.push_limit(len)?;
                    let (mut k, mut v) = (String::new(), String::new());
                    while let Some(et) = is.read_raw_tag_or_eof()? {
                        match et {
                            et if et == tag::len(1) => k = is.read_string()?,
                            et if et == tag::len(2) => v = is.read_string()?,
                            et => protobuf::rt::skip_field_for_tag(et, is)?,
                        }
                    }
                    is.pop_limit(old);
                    self.metadata.insert(k, v);
                }
                t => protobuf::rt::read_unknown_or_skip_group(
                    t,
                    is,
                    self.special_fields.mut_unknown_fields(),
                )?,
            }
        }
        Ok(())
    }

    fn compute_size(&self) -> u64 {
        use protobuf::rt::{compute_raw_varint64_size, int32_size, string_size};
        let mut n = 0;
        if self.version != 0 {
            n += int32_size(1, self.version);
        }
        for (f, s) in [(2, &self.address), (3, &self.protocol)] {
            if !s.is_empty() {
                n += string_size(f, s);
            }
        }
        if !self.capabilities.is_empty() {
            let body: u64 = self
                .capabilities
                .iter()
                .map(|c| compute_raw_varint64_size(c.value() as i64 as u64))
                .sum();
            n += len_field_size(4, body);
        }
        for (k, v) in &self.metadata {
            n += len_field_size(5, entry_size(k, v));
        }
        n += protobuf::rt::unknown_fields_size(self.special_fields.unknown_fields());
        self.special_fields.cached_size().set(n as u32);
        n
    }

    fn write_to_with_cached_sizes(&self, os: &mut CodedOutputStream) -> protobuf::Result<()> {
        if self.version != 0 {
            os.write_int32(1, self.version)?;
        }
        for (f, s) in [(2, &self.address), (3, &self.protocol)] {
            if !s.is_empty() {
                os.write_string(f, s)?;
            }
        }
        if !self.capabilities.is_empty() {
            let body: u64 = self
                .capabilities
                .iter()
                .map(|c| protobuf::rt::compute_raw_varint64_size(c.value() as i64 as u64))
                .sum();
            os.write_tag(4, WireType::LengthDelimited)?;
            os.write_raw_varint32(body as u32)?;
            for c in &self.capabilities {
                os.write_int32_no_tag(c.value())?;
            }
        }
        for (k, v) in &self.metadata {
            os.write_tag(5, WireType::LengthDelimited)?;
            os.write_raw_varint32(entry_size(k, v) as u32)?;
            if !k.is_empty() {
                os.write_string(1, k)?;
            }
            if !v.is_empty() {
                os.write_string(2, v)?;
            }
        }
        os.write_unknown_fields(self.special_fields.unknown_fields())
    }

    fn special_fields(&self) -> &SpecialFields {
        &self.special_fields
    }

    fn mut_special_fields(&mut self) -> &mut SpecialFields {
        &mut self.special_fields
    }

    fn new() -> Self {
        Self::default()
    }

    fn default_instance() -> &'static Self {
        static INSTANCE: BootstrapResult = BootstrapResult {
            version: 0,
            address: String::new(),
            protocol: String::new(),
            capabilities: Vec::new(),
            metadata: BTreeMap::new(),
            special_fields: SpecialFields::new(),
        };
        &INSTANCE
    }
}

#[cfg(test)]
mod tests;
