//! What can go wrong with a proxied request, and how each failure is shown to the client.
//! The mapping to status codes lives here and only here.

use std::fmt::Write;

/// Who caused a failure; decides log levels and which metric counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something we refuse.
    Downstream,
    /// The upstream failed or was too slow.
    Upstream,
    /// The gateway itself (configuration, limits, internal errors).
    Internal,
}

/// The failures a client can see, each with one status code and one stable machine code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// No route matched the request.
    #[error("no route matched the request")]
    NoRoute,
    /// The request was malformed (e.g. conflicting framing headers).
    #[error("bad request")]
    BadRequest,
    /// The request body exceeded the configured limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request head exceeded the listener's size or field-count limit.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The request is framed in a way the gateway does not implement: a transfer coding other
    /// than `chunked` alone (Envoy's 501 for the same request).
    #[error("not implemented")]
    NotImplemented,
    /// Nothing moved on the stream, the client's request body included, for the stream
    /// idle timeout before a response began (Envoy's 408 "stream timeout").
    #[error("request timed out: the stream was idle")]
    RequestTimeout,
    /// The upstream could not be connected to (refused, unreachable, connect timeout).
    #[error("could not connect to upstream")]
    UpstreamConnect,
    /// The upstream closed or reset the connection before a complete response head.
    #[error("upstream reset the connection")]
    UpstreamReset,
    /// The upstream did not answer within the route timeout.
    #[error("upstream did not respond in time")]
    UpstreamTimeout,
    /// The upstream sent an invalid response.
    #[error("upstream sent an invalid response")]
    UpstreamProtocol,
    /// A filter failed (trap, CPU deadline, memory limit) and its policy is fail-closed.
    #[error("a filter failed")]
    FilterFailed,
    /// The gateway is shedding load (connection or request limits).
    #[error("gateway overloaded")]
    Overloaded,
    /// No endpoint of the cluster is in rotation.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// A cluster's circuit breaker is open: too many connections, pending or active requests.
    #[error("upstream cluster overloaded")]
    UpstreamOverflow,
    /// The client asked to switch to a protocol its route does not allow (`Upgrade`, `CONNECT`).
    #[error("protocol upgrade not allowed")]
    UpgradeRefused,
    /// A bug or unexpected internal state.
    #[error("internal gateway error")]
    Internal,
}

impl ErrorKind {
    /// HTTP status shown to the client.
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ErrorKind::NoRoute => S::NOT_FOUND,
            ErrorKind::BadRequest => S::BAD_REQUEST,
            ErrorKind::BodyTooLarge => S::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => S::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::RequestTimeout => S::REQUEST_TIMEOUT,
            ErrorKind::NotImplemented => S::NOT_IMPLEMENTED,
            // As Envoy answers an upgrade its configuration does not allow.
            ErrorKind::UpgradeRefused => S::FORBIDDEN,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamReset | ErrorKind::UpstreamProtocol => {
                S::BAD_GATEWAY
            }
            ErrorKind::UpstreamTimeout => S::GATEWAY_TIMEOUT,
            ErrorKind::Overloaded
            | ErrorKind::FilterFailed
            | ErrorKind::UpstreamOverflow
            | ErrorKind::NoHealthyUpstream => S::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code, used in JSON bodies and as the `reason` metric label.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no_route",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::BodyTooLarge => "body_too_large",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::UpgradeRefused => "upgrade_refused",
            ErrorKind::UpstreamConnect => "connect_failure",
            ErrorKind::UpstreamReset => "reset",
            ErrorKind::UpstreamTimeout => "timeout",
            ErrorKind::UpstreamProtocol => "protocol_error",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::UpstreamOverflow => "upstream_overflow",
            ErrorKind::NoHealthyUpstream => "no_healthy_upstream",
            ErrorKind::FilterFailed => "filter_failed",
            ErrorKind::Internal => "internal",
        }
    }

    /// Who is at fault.
    pub fn fault(self) -> Fault {
        match self {
            ErrorKind::NoRoute
            | ErrorKind::BadRequest
            | ErrorKind::BodyTooLarge
            | ErrorKind::HeadersTooLarge
            | ErrorKind::RequestTimeout
            | ErrorKind::NotImplemented
            | ErrorKind::UpgradeRefused => Fault::Downstream,
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamReset
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamProtocol
            | ErrorKind::UpstreamOverflow
            | ErrorKind::NoHealthyUpstream => Fault::Upstream,
            ErrorKind::Overloaded | ErrorKind::Internal | ErrorKind::FilterFailed => {
                Fault::Internal
            }
        }
    }

    /// Whether sending the same request again (to another endpoint) is safe: true only when
    /// the upstream provably never saw the request.
    pub fn retry_safe(self) -> bool {
        matches!(self, ErrorKind::UpstreamConnect)
    }

    /// What went wrong, in words: the kind's own, then the detail. The JSON body's `message`,
    /// and a gRPC client's `grpc-message`.
    pub fn message(self, detail: Option<&str>) -> String {
        match detail {
            Some(d) => format!("{self}: {d}"),
            None => self.to_string(),
        }
    }

    /// The JSON body clients receive:
    /// `{"status":502,"error":"connect_failure","message":"…","request_id":"…"}`.
    pub fn json_body(self, detail: Option<&str>, request_id: &str) -> String {
        let mut s = String::with_capacity(128);
        let _ = write!(
            s,
            "{{\"status\":{},\"error\":\"{}\",\"message\":",
            self.status().as_u16(),
            self.code()
        );
        json_string(&mut s, &self.message(detail));
        s.push_str(",\"request_id\":");
        json_string(&mut s, request_id);
        s.push('}');
        s
    }
}

/// Appends `v` as a JSON string literal.
pub fn json_string(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_the_documented_table() {
        assert_eq!(ErrorKind::NoRoute.status(), 404);
        assert_eq!(ErrorKind::BadRequest.status(), 400);
        assert_eq!(ErrorKind::BodyTooLarge.status(), 413);
        assert_eq!(ErrorKind::HeadersTooLarge.status(), 431);
        assert_eq!(ErrorKind::RequestTimeout.status(), 408);
        assert_eq!(ErrorKind::NotImplemented.status(), 501);
        assert_eq!(ErrorKind::UpstreamConnect.status(), 502);
        assert_eq!(ErrorKind::UpstreamReset.status(), 502);
        assert_eq!(ErrorKind::UpstreamTimeout.status(), 504);
        assert_eq!(ErrorKind::Overloaded.status(), 503);
        assert_eq!(ErrorKind::UpstreamOverflow.status(), 503);
    }

    #[test]
    fn json_body_escapes_detail() {
        let body = ErrorKind::NoRoute.json_body(Some("GET /a\"b"), "id-1");
        assert_eq!(
            body,
            r#"{"status":404,"error":"no_route","message":"no route matched the request: GET /a\"b","request_id":"id-1"}"#
        );
    }
}
