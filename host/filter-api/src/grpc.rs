//! Outbound gRPC for filters (proxy-wasm `proxy_grpc_call` / `proxy_grpc_stream`): the
//! request a filter opens, and what the transport reports back. Message framing, HTTP/2 and
//! status mapping belong to the transport; the engine sees whole messages and gRPC statuses.

use std::time::Duration;

use bytes::Bytes;

/// gRPC status codes the transport produces itself (the upstream's own arrive as sent).
pub mod code {
    pub const OK: u32 = 0;
    pub const UNKNOWN: u32 = 2;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
    pub const UNAUTHENTICATED: u32 = 16;
}

/// A gRPC request a filter opens on a cluster.
#[derive(Debug, Clone)]
pub struct GrpcRequest {
    /// Fully qualified service name, e.g. `grpc.health.v1.Health`.
    pub service: String,
    pub method: String,
    /// `:authority`; the cluster's name when `None`, as Envoy sends.
    pub authority: Option<String>,
    /// Initial metadata (request headers).
    pub metadata: Vec<(Vec<u8>, Vec<u8>)>,
    /// The whole call's deadline, sent as `grpc-timeout` too.
    pub timeout: Option<Duration>,
}

/// What happens on an open call, in order: at most one `InitialMetadata`, any number of
/// `Message`s, at most one `TrailingMetadata`, then exactly one `Close`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrpcEvent {
    InitialMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    Message(Bytes),
    TrailingMetadata(Vec<(Vec<u8>, Vec<u8>)>),
    /// The call is over: the upstream's `grpc-status` and `grpc-message`, or the status the
    /// transport gives a call that failed (unreachable, timed out, reset, malformed).
    Close {
        status: u32,
        message: String,
    },
}

/// The sending side of an open call. Dropping it cancels the call.
pub trait GrpcOutbound {
    /// Sends one message (framed by the transport); `end_stream` half-closes after it.
    fn send(&self, message: Option<Bytes>, end_stream: bool);

    /// Ends the call now: the stream is reset and no further event is delivered.
    fn cancel(&self);
}

/// gRPC status for an HTTP status that is not 200, as gRPC specifies
/// (`doc/http-grpc-status-mapping.md`) and Envoy applies.
pub fn status_from_http(status: u16) -> u32 {
    match status {
        400 => code::INTERNAL,
        401 => code::UNAUTHENTICATED,
        403 => code::PERMISSION_DENIED,
        404 => code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => code::UNAVAILABLE,
        _ => code::UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_map_to_grpc_codes() {
        assert_eq!(status_from_http(404), code::UNIMPLEMENTED);
        assert_eq!(status_from_http(503), code::UNAVAILABLE);
        assert_eq!(status_from_http(401), code::UNAUTHENTICATED);
        assert_eq!(status_from_http(500), code::UNKNOWN);
    }
}
