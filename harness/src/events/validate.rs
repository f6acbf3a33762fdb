//! Envelope checks exactly as containerd's event exchange makes them (`identifiers.Validate`,
//! `validateTopic`, `validateEnvelope`); failures are InvalidArgument with containerd's wording.

use containerd_shim_protos::shim::event::Envelope;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z) in Unix seconds.
pub const GO_ZERO_TIME_UNIX: i64 = -62_135_596_800;

/// containerd `identifiers.Validate`: 1..=76 chars, alphanumerics joined by single `.`, `_`, `-`.
pub fn validate_identifier(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("identifier must not be empty: invalid argument".into());
    }
    if s.len() > 76 {
        return Err(format!(
            "identifier {s:?} greater than maximum length (76 characters): invalid argument"
        ));
    }
    let mut prev_sep = true;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(format!(
                "identifier {s:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"
            ));
        }
    }
    if prev_sep {
        return Err(format!(
            "identifier {s:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"
        ));
    }
    Ok(())
}

/// containerd exchange `validateTopic`.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("must not be empty: invalid argument".into());
    }
    if !topic.starts_with('/') {
        return Err("must start with '/': invalid argument".into());
    }
    if topic.len() == 1 {
        return Err("must have at least one component: invalid argument".into());
    }
    for c in topic[1..].split('/') {
        validate_identifier(c).map_err(|e| format!("failed validation on component {c:?}: {e}"))?;
    }
    Ok(())
}

/// containerd exchange `validateEnvelope`: namespace, topic, non-zero timestamp.
pub fn validate_envelope(env: &Envelope) -> Result<(), String> {
    validate_identifier(&env.namespace)
        .map_err(|e| format!("event envelope has invalid namespace: {e}"))?;
    validate_topic(&env.topic).map_err(|e| format!("envelope topic {:?}: {e}", env.topic))?;
    // Go's `time.Time.IsZero`: an absent timestamp, or one that decodes to year 1 (an explicit
    // Unix epoch is a real time to containerd and is accepted).
    let zero = env
        .timestamp
        .as_ref()
        .map(|t| t.seconds == GO_ZERO_TIME_UNIX && t.nanos == 0)
        .unwrap_or(true);
    if zero {
        return Err("timestamp must be set on forwarded event: invalid argument".into());
    }
    Ok(())
}
