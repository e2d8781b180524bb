//! How a listener makes request paths canonical before routing and filters see them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How request paths are made canonical before routes match and filters run; the upstream
/// is sent the canonical path. A gateway that routes (and authenticates) by path must read
/// a path as the upstream will: `/public/../admin` would otherwise match a `/public` route
/// and reach `/admin` on any server that resolves dot segments. Envoy's `normalize_path`,
/// `merge_slashes` and `path_with_escaped_slashes_action`, its first two on by default here
/// (Envoy recommends them at the edge; its own default is off).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PathNormalization {
    /// RFC 3986 §6 normalization: percent-escapes of unreserved characters decoded (so
    /// `%2e%2e` is `..`), backslashes read as slashes, and `.` and `..` segments resolved.
    pub normalize: bool,
    /// Runs of slashes become one, before dot segments are resolved (as nginx, Go's
    /// `path.Clean` and Node's `path.normalize` read them).
    pub merge_slashes: bool,
    /// What happens to an escaped slash (`%2F`) or backslash (`%5C`) in a path.
    pub escaped_slashes: EscapedSlashes,
}

impl Default for PathNormalization {
    fn default() -> Self {
        Self {
            normalize: true,
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
        }
    }
}

/// Envoy's `path_with_escaped_slashes_action`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Left as they are: data within a segment, as RFC 3986 reads them (and APIs that put
    /// ids with slashes in one segment rely on).
    #[default]
    Keep,
    /// The request is refused with 400.
    Reject,
    /// Decoded to `/` and `\` before the rest of the normalization, and forwarded so: for
    /// upstreams that decode them into separators.
    Unescape,
}
