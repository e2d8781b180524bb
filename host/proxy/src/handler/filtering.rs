//! The parts of a request's handling that involve its filters beyond the request header
//! phases: an upstream response through the response phases, bodies through the body
//! phases, local responses (whose bodies pass the response body phases too), and the answer
//! when a filter cut a body short.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response};
use http_body::Body as _;
use rustygate_core::ErrorKind;
use rustygate_filter_api::{Direction, LocalResponse, ResponseHead};

use super::Failure;
use super::completion::{Completion, record_failure};
use super::errors::error_response;
use super::switch::{Switch, tunnel_log};
use crate::body::{self, ResponseBody, Transfer};
use crate::chain::pipeline::{FilteredBody, Settled, Whole};
use crate::chain::{BodyStop, ChainFailure, ChainRun, Halt, Reply, ResponseOutcome};
use crate::pool::{PooledBody, UpstreamBody};
use crate::snapshot::Answer;
use crate::tunnel::TunnelChain;
use crate::worker::ConnCtx;

/// Clients learn which filter failed and how (trap, CPU deadline, memory), never the guest's
/// internals; the details are in the log.
pub(super) fn filter_failed(f: &ChainFailure) -> Failure {
    (
        ErrorKind::FilterFailed,
        format!("filter {} failed: {}", f.filter, f.error.reason()),
    )
}

/// What the handler returns when a filter reset the stream. Never sent: the handler sees
/// [`ChainRun::reset`] and resets the client's stream instead of answering.
pub(super) fn reset() -> Failure {
    (ErrorKind::Internal, "a filter reset the stream".into())
}

fn halted(h: Halt) -> Failure {
    match h {
        Halt::Fail(f) => filter_failed(&f),
        Halt::Reset => reset(),
    }
}

/// A filter's local response as sent to the client.
pub(super) fn local_response(
    local: LocalResponse,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let body = ResponseBody::full(local.body.clone());
    local_head(local, body, request_id)
}

/// What a route that does not forward answers a request to `scheme://authority` +
/// `path_and_query` with.
pub(super) fn answer_of(
    answer: &Answer,
    scheme: &str,
    authority: &str,
    path_and_query: &str,
) -> LocalResponse {
    match answer {
        Answer::Direct {
            status,
            headers,
            body,
        } => LocalResponse {
            status: *status,
            // Envoy drops a content type (and length) from a local reply without a body, on
            // routes with filters or without.
            headers: headers
                .iter()
                .filter(|(k, _)| {
                    !body.is_empty() || (k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH)
                })
                .cloned()
                .collect(),
            body: body.clone(),
            details: "direct_response".into(),
            grpc_status: None,
        },
        Answer::Redirect { status, rule } => {
            let location = rule.location(scheme, authority, path_and_query);
            LocalResponse {
                status: *status,
                // A Location that is not a valid header value (a request path never is one:
                // hyper parsed it) would be a route's own text; it is left out, not sent.
                headers: HeaderValue::try_from(location)
                    .map(|l| vec![(header::LOCATION, l)])
                    .unwrap_or_default(),
                body: Bytes::new(),
                // Envoy's words for both kinds of route answer.
                details: "direct_response".into(),
                grpc_status: None,
            }
        }
    }
}

/// As in Envoy, a non-empty body without a content type is labelled `text/plain`; hyper sets
/// `content-length` from the body.
fn local_head(
    local: LocalResponse,
    body: ResponseBody,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let has_body = !local.body.is_empty();
    let mut resp = Response::new(body);
    *resp.status_mut() = local.status;
    let h = resp.headers_mut();
    for (k, v) in local.headers {
        h.append(k, v);
    }
    if has_body && !h.contains_key(header::CONTENT_TYPE) {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    h.remove(header::CONTENT_LENGTH);
    h.insert(
        rustygate_core::forwarding::X_REQUEST_ID.clone(),
        request_id.clone(),
    );
    resp
}

/// After the filters produced the whole body: a `content-length` still in the head is made
/// to match it (filters that edit bodies often leave the old one behind). Returns whether
/// the head declares a length.
fn fix_content_length(headers: &mut HeaderMap, len: u64) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (first, second) = (values.next(), values.next());
    let Some(first) = first else { return false };
    // Usually the body is unchanged: the value is kept rather than formatted again.
    let right = first.to_str().ok().and_then(|v| v.parse::<u64>().ok()) == Some(len);
    if second.is_some() || !right {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    true
}

/// A body as it came out of the filters' body phases.
pub(super) enum Filtered {
    /// Still streaming through them (or it never needed them).
    Stream(UpstreamBody),
    /// All of it, already through every filter; `sized` when its head declares its length.
    Whole { data: Bytes, sized: bool },
}

impl Filtered {
    /// As a request body for the upstream.
    pub fn into_upstream(self) -> UpstreamBody {
        match self {
            Filtered::Stream(body) => body,
            Filtered::Whole { data, .. } => body::in_memory(data),
        }
    }

    /// As a response body for the client.
    pub fn into_response(self) -> ResponseBody {
        match self {
            Filtered::Stream(body) => ResponseBody::filtered(body),
            Filtered::Whole { data, sized: true } => ResponseBody::full(data),
            Filtered::Whole { data, sized: false } => ResponseBody::full_unsized(data),
        }
    }
}

/// What filtering a request's bodies needs to know.
pub(super) struct Ctx<'a> {
    run: &'a Rc<ChainRun>,
    /// How long a paused filter may hold a body (the route timeout).
    pause_limit: Duration,
    /// Most bytes one filter may buffer.
    max_held: usize,
    request_id: &'a HeaderValue,
}

impl<'a> Ctx<'a> {
    pub fn new(
        run: &'a Rc<ChainRun>,
        pause_limit: Duration,
        max_held: usize,
        request_id: &'a HeaderValue,
    ) -> Self {
        Self {
            run,
            pause_limit,
            max_held,
            request_id,
        }
    }

    /// A local response decides the request's response code details (Envoy: the details
    /// the filter gave, or the route's `direct_response`).
    fn record(&self, local: &mut LocalResponse) {
        let details = std::mem::take(&mut local.details);
        self.run.exchange.progress.outcome.set_details(details);
    }

    fn filtered(&self, source: UpstreamBody, direction: Direction, upto: usize) -> FilteredBody {
        FilteredBody::new(
            source,
            self.run.clone(),
            direction,
            upto,
            self.pause_limit,
            self.max_held,
        )
    }

    /// Puts `body` through the chain's body phases in `direction`, and holds its head
    /// (`headers`) until the filters settled (see [`FilteredBody::settle`]). `Ok(Err(_))` is
    /// the answer to send instead, when a filter answered from a body phase.
    pub async fn body(
        &self,
        body: UpstreamBody,
        direction: Direction,
        headers: &mut HeaderMap,
        transfer: &Transfer,
    ) -> Result<Result<Filtered, Response<ResponseBody>>, Failure> {
        if !self.run.wants_body(direction, self.run.len()) {
            return Ok(Ok(Filtered::Stream(body)));
        }
        let filtered = self.filtered(body, direction, self.run.len());
        self.settle(filtered, direction, headers, transfer).await
    }

    /// As [`Ctx::body`], for a body that was whole before the filters saw it.
    pub async fn whole(
        &self,
        data: Bytes,
        direction: Direction,
        headers: &mut HeaderMap,
        transfer: &Transfer,
    ) -> Result<Result<Filtered, Response<ResponseBody>>, Failure> {
        let (run, upto) = (self.run, self.run.len());
        match FilteredBody::run_whole(data, run, direction, upto, self.pause_limit, self.max_held) {
            Whole::Done(data) => {
                let sized = fix_content_length(headers, data.len() as u64);
                Ok(Ok(Filtered::Whole { data, sized }))
            }
            Whole::Stream(filtered) => self.settle(*filtered, direction, headers, transfer).await,
            Whole::Aborted => self.stopped(direction, transfer).await.map(Err),
        }
    }

    async fn settle(
        &self,
        mut filtered: FilteredBody,
        direction: Direction,
        headers: &mut HeaderMap,
        transfer: &Transfer,
    ) -> Result<Result<Filtered, Response<ResponseBody>>, Failure> {
        match filtered.settle().await {
            Settled::Aborted => return self.stopped(direction, transfer).await.map(Err),
            Settled::Complete { len } => {
                let sized = fix_content_length(headers, len);
                if let Some(data) = filtered.whole() {
                    // A head without a length (a filter removed it, or there was none) keeps
                    // going without one.
                    return Ok(Ok(Filtered::Whole { data, sized }));
                }
            }
            Settled::Streaming => {}
        }
        Ok(Ok(Filtered::Stream(Box::pin(filtered))))
    }

    /// An upstream response (its head already in the gateway's form) through the filters'
    /// response phases: the headers, then the body unless it has ended. The client's
    /// connection and the request's record are for a protocol switch.
    pub async fn upstream_response(
        &self,
        mut parts: http::response::Parts,
        mut body: PooledBody,
        switch: Option<Switch>,
        (conn, done): (&ConnCtx, &mut Completion),
        transfer: &Transfer,
    ) -> Result<Response<ResponseBody>, Failure> {
        let run = self.run;
        *run.exchange.response.borrow_mut() = Some(ResponseHead {
            status: parts.status,
            headers: std::mem::take(&mut parts.headers),
        });
        let body_ended = body.is_end_stream();
        // A switch's 101 does not end the stream: the tunnel's bytes follow (Envoy).
        match run
            .response(body_ended && switch.is_none(), self.pause_limit)
            .await
        {
            ResponseOutcome::Continue => {
                // The client gets the map itself (with room for a corrected length). Filters
                // that may still read it (`on_log`, a body phase) keep a copy; the status
                // stays for all. Decided before the head is borrowed: deciding asks the filters.
                let keep = run.reads_response_late();
                let mut head = run.exchange.response.borrow_mut();
                let head = head.as_mut().expect("set above");
                parts.status = head.status;
                let headers = std::mem::take(&mut head.headers);
                if keep {
                    head.headers = headers.clone();
                }
                parts.headers = headers;
            }
            // The upstream body is dropped unread, which closes that connection.
            ResponseOutcome::Respond(reply) => return Ok(self.reply(reply).await),
            ResponseOutcome::Fail(f) => return Err(filter_failed(&f)),
            ResponseOutcome::Reset => return Err(reset()),
        }
        if body_ended {
            if let Some(switch) = switch {
                let log = tunnel_log(done, conn, self.request_id);
                let chain = TunnelChain {
                    run: run.clone(),
                    pause_limit: self.pause_limit,
                    max_held: self.max_held,
                };
                switch.open(conn, parts.status, log, done, Some(chain));
            }
            return Ok(Response::from_parts(parts, ResponseBody::upstream(body)));
        }
        let (headers, response) = (&mut parts.headers, Direction::Response);
        let filtered = match body.take_whole() {
            // Most small responses: the filters take it in a plain loop.
            Some(data) if run.wants_body(response, run.len()) => {
                self.whole(data, response, headers, transfer).await?
            }
            Some(data) => Ok(Filtered::Whole { data, sized: true }),
            None => {
                self.body(Box::pin(body), response, headers, transfer)
                    .await?
            }
        };
        match filtered {
            Ok(filtered) => Ok(Response::from_parts(parts, filtered.into_response())),
            Err(answer) => Ok(answer),
        }
    }

    /// A local response whose header phases have run: its body still goes through the
    /// response body phases of the filters it passes (`[0, reply.upto)`), as in Envoy.
    pub async fn reply(&self, reply: Reply) -> Response<ResponseBody> {
        let Reply { mut local, upto } = reply;
        self.record(&mut local);
        if local.body.is_empty() || !self.run.wants_body(Direction::Response, upto) {
            return local_response(local, self.request_id);
        }
        let source = body::in_memory(local.body.clone());
        let mut filtered = self.filtered(source, Direction::Response, upto);
        match filtered.settle().await {
            // A filter answered the local response's body in turn: that answer goes out as is.
            Settled::Aborted => match self.run.body_stop.take() {
                Some(BodyStop::Respond(mut again)) => {
                    self.record(&mut again.local);
                    local_response(again.local, self.request_id)
                }
                Some(BodyStop::Fail(f)) => {
                    let (kind, detail) = filter_failed(&f);
                    record_failure(&self.run.exchange.progress.outcome, kind);
                    error_response(kind, &detail, self.request_id, self.run.grpc_request())
                }
                Some(BodyStop::Reset) => {
                    let (kind, detail) = reset();
                    error_response(kind, &detail, self.request_id, self.run.grpc_request())
                }
                _ => error_response(
                    ErrorKind::Internal,
                    "a filter buffered more of a local response than the limit allows",
                    self.request_id,
                    self.run.grpc_request(),
                ),
            },
            Settled::Complete { .. } | Settled::Streaming => local_head(
                local,
                ResponseBody::filtered(Box::pin(filtered)),
                self.request_id,
            ),
        }
    }

    /// An error the gateway generated after the request phases (upstream unreachable, timed
    /// out, reset), through every filter's response phases like any local response.
    pub async fn gateway_error(
        &self,
        (kind, detail): Failure,
    ) -> Result<Response<ResponseBody>, Failure> {
        // A gRPC client gets the message as `grpc-message` (`respond_through` makes the
        // trailers-only form), not the JSON.
        let grpc = self.run.grpc_request();
        let body = if grpc {
            kind.message(Some(&detail))
        } else {
            kind.json_body(Some(&detail), self.request_id.to_str().unwrap_or_default())
        };
        let outcome = &self.run.exchange.progress.outcome;
        record_failure(outcome, kind);
        let local = LocalResponse {
            status: kind.status(),
            headers: vec![(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: body.into(),
            // The filters see (and `reply` records again) Envoy's details for the failure.
            details: outcome.details().to_owned(),
            grpc_status: None,
        };
        self.answer(local).await
    }

    /// The route's own answer (or the gateway's), after the request phases: through every
    /// filter's response phases, as Envoy's router answers a `direct_response` or redirect.
    pub async fn answer(&self, local: LocalResponse) -> Result<Response<ResponseBody>, Failure> {
        match self
            .run
            .respond_through(self.run.len(), local, self.pause_limit)
            .await
        {
            Ok(reply) => Ok(self.reply(reply).await),
            Err(h) => Err(halted(h)),
        }
    }

    /// The answer for a body stream that a filter (or the source) cut short.
    pub async fn stopped(
        &self,
        direction: Direction,
        transfer: &Transfer,
    ) -> Result<Response<ResponseBody>, Failure> {
        let stop = self.run.body_stop.take();
        match (stop, direction) {
            (Some(BodyStop::Respond(reply)), Direction::Request) => {
                // As from the request headers phase: back through the response phases.
                match self
                    .run
                    .respond_through(reply.upto, reply.local, self.pause_limit)
                    .await
                {
                    Ok(reply) => Ok(self.reply(reply).await),
                    Err(h) => Err(halted(h)),
                }
            }
            (Some(BodyStop::Respond(mut reply)), Direction::Response) => {
                self.record(&mut reply.local);
                if self.run.grpc_request() {
                    reply.local.into_grpc();
                }
                Ok(local_response(reply.local, self.request_id))
            }
            (Some(BodyStop::Fail(f)), _) => Err(filter_failed(&f)),
            (Some(BodyStop::Reset), _) => Err(reset()),
            (Some(BodyStop::TooLarge { filter, limit }), Direction::Request) => Err((
                ErrorKind::BodyTooLarge,
                format!("filter {filter} buffered more than {limit} bytes of the request body"),
            )),
            (Some(BodyStop::TooLarge { filter, limit }), Direction::Response) => Err((
                ErrorKind::Internal,
                format!("filter {filter} buffered more than {limit} bytes of the response body"),
            )),
            (None, Direction::Request) if transfer.too_large.get() => Err((
                ErrorKind::BodyTooLarge,
                "the request body exceeds the route's limit".into(),
            )),
            (None, Direction::Request) if transfer.client_stalled.get() => Err((
                ErrorKind::RequestTimeout,
                "the request body stopped for the stream idle timeout".into(),
            )),
            (None, Direction::Request) => Err((
                ErrorKind::BadRequest,
                "the request body could not be read".into(),
            )),
            (None, Direction::Response) => Err((
                ErrorKind::UpstreamReset,
                "the upstream response body failed".into(),
            )),
        }
    }
}
