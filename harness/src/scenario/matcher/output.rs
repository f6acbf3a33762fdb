//! Output matchers: what a container's stdout or stderr must (or must not) contain.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{abbreviate, expand, regex_checked};

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
