//! The gateway's own error responses, in the form the client reads: JSON, or gRPC's
//! trailers-only form for a gRPC request.

use http::Response;
use http::header::{self, HeaderValue};
use rustygate_core::ErrorKind;
use rustygate_core::forwarding::X_REQUEST_ID;
use rustygate_filter_api::LocalResponse;

use super::filtering;
use crate::body::ResponseBody;

/// The error response for `kind`: JSON, or for a gRPC request the trailers-only form Envoy
/// answers gRPC clients with (`grpc-status` mapped from the HTTP status, the message as
/// `grpc-message`), which gRPC libraries read where a JSON body would be "unexpected content
/// type".
pub(crate) fn error_response(
    kind: ErrorKind,
    detail: &str,
    request_id: &HeaderValue,
    grpc: bool,
) -> Response<ResponseBody> {
    if grpc {
        let mut local = LocalResponse {
            status: kind.status(),
            headers: Vec::new(),
            body: kind.message(Some(detail)).into(),
            details: String::new(),
            grpc_status: None,
        };
        local.into_grpc();
        return filtering::local_response(local, request_id);
    }
    let body = kind.json_body(Some(detail), request_id.to_str().unwrap_or_default());
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = kind.status();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(X_REQUEST_ID.clone(), request_id.clone());
    resp
}
