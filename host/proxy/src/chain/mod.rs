//! Runs a route's filter chain for one request: request phases in order, response phases in
//! reverse, local responses passing back through the filters before (and including) the one
//! that answered, and each filter's failure policy when it fails. Bodies and trailers go
//! through the filters in [`pipeline`].
//!
//! A `ChainRun` is shared (`Rc`) between the request's handler and its body streams, which may
//! run phases of the same request concurrently (the response can start while the request body
//! still streams). Each filter is borrowed only for the duration of one synchronous phase
//! call, never across an await.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use crate::worker::Worker;
use rustygate_filter_api::{
    BodyVerdict, Direction, Exchange, FailurePolicy, FilterError, FilterFactory, HttpFilter,
    LocalResponse, ResponseHead, Verdict,
};
use rustygate_telemetry::trace::RequestTrace;

pub(crate) mod pipeline;

/// A filter failure that fails the request (fail-closed).
#[derive(Debug)]
pub(crate) struct ChainFailure {
    pub filter: String,
    pub error: FilterError,
}

/// Why the response phases stopped without an answer of their own.
pub(crate) enum Halt {
    /// A fail-closed filter failed.
    Fail(ChainFailure),
    /// A filter reset the stream ([`ChainRun::reset`]).
    Reset,
}

/// A local response and the filters it still passes through (`[0, upto)`, in reverse).
pub(crate) struct Reply {
    pub local: LocalResponse,
    pub upto: usize,
}

/// What the request phases decided.
pub(crate) enum RequestOutcome {
    /// Send the (possibly changed) request upstream.
    Forward,
    /// Answer with this response instead; its header phases have run.
    Respond(Reply),
    Fail(ChainFailure),
    /// A filter reset the stream: nothing is forwarded or answered.
    Reset,
}

/// What the response phases decided.
pub(crate) enum ResponseOutcome {
    /// Send the (possibly changed) upstream response.
    Continue,
    /// Replace the upstream response with this one; its header phases have run.
    Respond(Reply),
    Fail(ChainFailure),
    /// A filter reset the stream: nothing is sent.
    Reset,
}

/// How a body phase ended the request early.
pub(crate) enum BodyStop {
    /// A filter answered from a body or trailers phase.
    Respond(Reply),
    Fail(ChainFailure),
    /// A filter held more body than the buffer limit allows.
    TooLarge {
        filter: String,
        limit: usize,
    },
    /// A filter reset the stream.
    Reset,
}

/// A filter callback group, as `rustygate_filter_duration_seconds` labels it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
    Log,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::RequestHeaders,
        Phase::RequestBody,
        Phase::ResponseHeaders,
        Phase::ResponseBody,
        Phase::Log,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Phase::RequestHeaders => "request_headers",
            Phase::RequestBody => "request_body",
            Phase::ResponseHeaders => "response_headers",
            Phase::ResponseBody => "response_body",
            Phase::Log => "log",
        }
    }

    /// The body phase (body chunks and trailers) of `direction`.
    pub fn body(direction: Direction) -> Phase {
        match direction {
            Direction::Request => Phase::RequestBody,
            Direction::Response => Phase::ResponseBody,
        }
    }
}

/// What a filter callback decided, as its trace span's `rustygate.action` says it.
pub(crate) trait Action {
    fn action(&self) -> &'static str;
}

impl Action for Result<Verdict, FilterError> {
    fn action(&self) -> &'static str {
        match self {
            Ok(Verdict::Continue) => "continue",
            Ok(Verdict::Pause) => "pause",
            Ok(Verdict::Respond(_)) => "respond",
            Ok(Verdict::Reset) => "reset",
            Err(_) => "fail",
        }
    }
}

impl Action for Result<BodyVerdict, FilterError> {
    fn action(&self) -> &'static str {
        match self {
            Ok(BodyVerdict::Continue) => "continue",
            Ok(BodyVerdict::Buffer) => "buffer",
            Ok(BodyVerdict::StopNoBuffer) => "stop",
            Ok(BodyVerdict::Respond(_)) => "respond",
            Ok(BodyVerdict::Reset) => "reset",
            Err(_) => "fail",
        }
    }
}

/// `rustygate_filter_duration_seconds` handles of one filter, by [`Phase`]; built once per
/// configuration generation and worker (each the worker's own shard of the series), so a
/// callback's timing costs at most two clock reads and a record without locked instructions.
pub(crate) type PhaseTimers = [rustygate_telemetry::LocalDurations; 5];

/// The timers of each filter of a chain.
pub(crate) fn timers(
    chain: &[Rc<dyn FilterFactory>],
    metrics: &rustygate_telemetry::Metrics,
) -> Rc<[PhaseTimers]> {
    chain
        .iter()
        .map(|f| Phase::ALL.map(|p| metrics.filter_duration(f.name(), p.label())))
        .collect()
}

struct Slot {
    factory: Rc<dyn FilterFactory>,
    filter: RefCell<Option<Box<dyn HttpFilter>>>,
}

/// The filters of one request.
pub(crate) struct ChainRun {
    /// Inline for the usual chain lengths: one allocation fewer per request.
    slots: smallvec::SmallVec<[Slot; 4]>,
    timers: Rc<[PhaseTimers]>,
    pub exchange: Rc<Exchange>,
    /// Counts failures (fail-open or not) in the worker's metrics.
    worker: Rc<Worker>,
    /// Set when a body stream was cut short by a filter, for the handler to answer with.
    pub body_stop: RefCell<Option<BodyStop>>,
    /// The request's trace, when tracing is on.
    trace: Option<Rc<RequestTrace>>,
    /// Set when a filter reset the stream. Whatever path the request was on when it
    /// happened, the handler then sends nothing and has the client's stream reset.
    pub reset: Cell<bool>,
}

impl ChainRun {
    pub fn new(
        chain: &[Rc<dyn FilterFactory>],
        timers: Rc<[PhaseTimers]>,
        exchange: Rc<Exchange>,
        worker: Rc<Worker>,
        trace: Option<Rc<RequestTrace>>,
    ) -> Rc<Self> {
        let slots = chain
            .iter()
            .map(|f| Slot {
                factory: f.clone(),
                filter: RefCell::new(None),
            })
            .collect();
        Rc::new(Self {
            slots,
            timers,
            exchange,
            worker,
            body_stop: RefCell::new(None),
            trace,
            reset: Cell::new(false),
        })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Runs `f` on filter `i` if it is still part of the request.
    fn with<T>(&self, i: usize, f: impl FnOnce(&mut Box<dyn HttpFilter>) -> T) -> Option<T> {
        let mut slot = self.slots[i].filter.borrow_mut();
        let filter = slot.as_mut()?;
        Some(match &self.trace {
            None => f(filter),
            Some(t) => self.worker.trace_scope.within(t, || f(filter)),
        })
    }

    /// A reading of the callback clock (see [`ChainRun::record`]).
    fn now(&self) -> u64 {
        self.worker.shared.clock.raw()
    }

    /// [`ChainRun::with`] for a callback, timed into the filter's `phase` histogram.
    fn call<T: Action>(
        &self,
        i: usize,
        phase: Phase,
        f: impl FnOnce(&mut Box<dyn HttpFilter>) -> T,
    ) -> Option<T> {
        self.call_from(i, phase, self.now(), f).0
    }

    /// [`ChainRun::call`] timed from `start`, a reading taken when the previous callback of a
    /// loop ended; also returns the reading that ended this one.
    fn call_from<T: Action>(
        &self,
        i: usize,
        phase: Phase,
        start: u64,
        f: impl FnOnce(&mut Box<dyn HttpFilter>) -> T,
    ) -> (Option<T>, u64) {
        let out = self.with(i, f);
        let Some(o) = &out else {
            return (out, start);
        };
        let end = self.now();
        self.record(i, phase, start, end, o.action());
        (out, end)
    }

    /// Times a callback (from two [`ChainRun::now`] readings) and, when the request is
    /// traced, records it as a span. Body chunks are timed but not traced: a streamed body
    /// would make one span per chunk. Loops over the chain's filters pass one reading as the
    /// end of a callback and the start of the next, when nothing else ran in between.
    fn record(&self, i: usize, phase: Phase, start: u64, end: u64, action: &'static str) {
        let elapsed = self.worker.shared.clock.delta(start, end);
        self.timers[i][phase as usize].record(elapsed);
        if let Some(t) = &self.trace
            && !matches!(phase, Phase::RequestBody | Phase::ResponseBody)
        {
            let end = std::time::SystemTime::now();
            t.filter_callback(self.name(i), phase.label(), action, end - elapsed, end);
        }
    }

    /// Where the next filter's callback starts: at `end` of this one if it let the request go
    /// on (nothing else runs in between), else at a new reading, after this one's outcome
    /// was dealt with (a wait, a failure logged).
    fn next_start(&self, verdict: &Result<Verdict, FilterError>, end: u64) -> u64 {
        match verdict {
            Ok(Verdict::Continue) => end,
            _ => self.now(),
        }
    }

    /// Whether any filter may read the response head after it was handed on
    /// ([`HttpFilter::reads_response_late`]).
    pub fn reads_response_late(&self) -> bool {
        (0..self.len()).any(|i| self.with(i, |f| f.reads_response_late()) == Some(true))
    }

    /// Whether any of filters `[0, upto)` has body phases in `direction`.
    pub fn wants_body(&self, direction: Direction, upto: usize) -> bool {
        (0..upto).any(|i| self.with(i, |f| f.wants_body(direction)) == Some(true))
    }

    /// Applies the failure policy: `Some` fails the request, `None` skips the filter.
    pub fn failed(&self, i: usize, error: FilterError) -> Option<ChainFailure> {
        let name = self.slots[i].factory.name().to_owned();
        self.worker.filter_failure(&name, error.reason());
        // A trap's guest backtrace was logged where it happened; here, the decision.
        let detail = match &error {
            FilterError::Unavailable(why) => why.as_str(),
            _ => "",
        };
        tracing::warn!(filter = %name, reason = error.reason(), detail, policy = ?self.slots[i].factory.failure_policy(), "filter failed");
        let taken = self.slots[i].filter.borrow_mut().take();
        if let Some(mut f) = taken {
            f.complete();
        }
        match self.slots[i].factory.failure_policy() {
            FailurePolicy::FailOpen => None,
            FailurePolicy::FailClosed => Some(ChainFailure {
                filter: name,
                error,
            }),
        }
    }

    pub fn name(&self, i: usize) -> &str {
        self.slots[i].factory.name()
    }

    /// Waits for a paused filter to continue or answer, at most `limit`.
    pub async fn resume(
        &self,
        i: usize,
        direction: Direction,
        limit: Duration,
    ) -> Result<Verdict, FilterError> {
        let Some(waiting) = self.with(i, |f| f.resumed(direction)) else {
            return Ok(Verdict::Continue);
        };
        match tokio::time::timeout(limit, waiting).await {
            Ok(v) => v,
            Err(_) => Err(FilterError::Unavailable(format!(
                "the filter held the request longer than the route timeout ({limit:?})"
            ))),
        }
    }

    /// Whether a filter that stopped earlier has been resumed since (without waiting).
    pub fn resumed_now(
        &self,
        i: usize,
        direction: Direction,
    ) -> Option<Result<Verdict, FilterError>> {
        let waiting = self.with(i, |f| f.resumed(direction))?;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut waiting = waiting;
        match waiting.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    /// Runs a phase call on filter `i`, waits if it paused, and sorts the result.
    async fn phase(
        &self,
        i: usize,
        direction: Direction,
        verdict: Option<Result<Verdict, FilterError>>,
        limit: Duration,
    ) -> Step {
        let mut verdict = match verdict {
            Some(v) => v,
            None => return Step::Next,
        };
        if let Ok(Verdict::Pause) = verdict {
            verdict = self.resume(i, direction, limit).await;
        }
        match verdict {
            Ok(Verdict::Continue) => Step::Next,
            Ok(Verdict::Pause) => unreachable!("resume never yields Pause"),
            Ok(Verdict::Respond(local)) => Step::Respond(local),
            Ok(Verdict::Reset) => {
                self.reset.set(true);
                Step::Reset
            }
            Err(e) => match self.failed(i, e) {
                Some(f) => Step::Fail(f),
                None => Step::Next,
            },
        }
    }

    /// Runs every filter's request phase. A paused filter is waited for (at most `limit`)
    /// before the next one runs.
    pub async fn request(&self, end_of_stream: bool, limit: Duration) -> RequestOutcome {
        let mut start = self.now();
        for i in 0..self.slots.len() {
            let first = || match self.slots[i].factory.create(&self.exchange) {
                Ok(mut f) => {
                    let v = f.on_request_headers(&self.exchange, end_of_stream);
                    *self.slots[i].filter.borrow_mut() = Some(f);
                    v
                }
                Err(e) => Err(e),
            };
            let verdict = match &self.trace {
                None => first(),
                Some(t) => self.worker.trace_scope.within(t, first),
            };
            let end = self.now();
            self.record(i, Phase::RequestHeaders, start, end, verdict.action());
            start = self.next_start(&verdict, end);
            if let Ok(Verdict::Continue) = verdict {
                continue; // the usual case, without making the phase's future
            }
            match self
                .phase(i, Direction::Request, Some(verdict), limit)
                .await
            {
                Step::Next => {}
                Step::Respond(local) => {
                    return match self.respond_through(i + 1, local, limit).await {
                        Ok(reply) => RequestOutcome::Respond(reply),
                        Err(Halt::Fail(f)) => RequestOutcome::Fail(f),
                        Err(Halt::Reset) => RequestOutcome::Reset,
                    };
                }
                Step::Fail(f) => return RequestOutcome::Fail(f),
                Step::Reset => return RequestOutcome::Reset,
            }
        }
        RequestOutcome::Forward
    }

    /// Runs response phases of filters `[0, upto)` in reverse on `exchange.response`. Returns
    /// the replacement response (and the filters it still has to reach) if one answered.
    async fn response_phases(
        &self,
        upto: usize,
        end_of_stream: bool,
        limit: Duration,
    ) -> Result<Option<Reply>, Halt> {
        let mut replaced = None;
        let mut start = self.now();
        for i in (0..upto).rev() {
            let verdict = self.with(i, |f| f.on_response_headers(&self.exchange, end_of_stream));
            if let Some(v) = &verdict {
                let end = self.now();
                self.record(i, Phase::ResponseHeaders, start, end, v.action());
                start = self.next_start(v, end);
            }
            if let None | Some(Ok(Verdict::Continue)) = verdict {
                continue; // the usual case, without making the phase's future
            }
            match self.phase(i, Direction::Response, verdict, limit).await {
                Step::Next => {}
                Step::Respond(mut local) => {
                    let grpc = self.grpc_request();
                    if grpc {
                        local.into_grpc();
                    }
                    // Replaces the response for the filters still to run (earlier in the chain).
                    *self.exchange.response.borrow_mut() = Some(head_of(&local, grpc));
                    replaced = Some(Reply { local, upto: i + 1 });
                }
                Step::Fail(f) => return Err(Halt::Fail(f)),
                Step::Reset => return Err(Halt::Reset),
            }
        }
        Ok(replaced)
    }

    /// A local response from filter `upto - 1`: it passes through that filter's response phase
    /// and those before it, which may change its headers.
    pub async fn respond_through(
        &self,
        upto: usize,
        mut local: LocalResponse,
        limit: Duration,
    ) -> Result<Reply, Halt> {
        let grpc = self.grpc_request();
        if grpc {
            local.into_grpc();
        }
        *self.exchange.response.borrow_mut() = Some(head_of(&local, grpc));
        let eos = local.body.is_empty();
        let mut reply = match self.response_phases(upto, eos, limit).await? {
            Some(replacement) => replacement,
            None => Reply { local, upto },
        };
        self.take_head_into(&mut reply.local);
        Ok(reply)
    }

    /// Runs the response phases on the upstream response in `exchange.response`.
    pub async fn response(&self, end_of_stream: bool, limit: Duration) -> ResponseOutcome {
        match self
            .response_phases(self.slots.len(), end_of_stream, limit)
            .await
        {
            Ok(None) => ResponseOutcome::Continue,
            Ok(Some(mut reply)) => {
                self.take_head_into(&mut reply.local);
                ResponseOutcome::Respond(reply)
            }
            Err(Halt::Fail(f)) => ResponseOutcome::Fail(f),
            Err(Halt::Reset) => ResponseOutcome::Reset,
        }
    }

    /// Whether the request is a gRPC request: its local replies then take gRPC's form, as
    /// Envoy gives them ([`LocalResponse::into_grpc`]).
    pub fn grpc_request(&self) -> bool {
        rustygate_filter_api::is_grpc_request(&self.exchange.request.borrow().headers)
    }

    /// The response head as the filters left it, into `local`.
    fn take_head_into(&self, local: &mut LocalResponse) {
        if let Some(head) = self.exchange.response.borrow().as_ref() {
            local.status = head.status;
            local.headers = header_pairs(&head.headers);
        }
    }

    /// Ends every filter's part in the request.
    pub fn complete(&self) {
        let mut start = None;
        for (i, slot) in self.slots.iter().enumerate() {
            let taken = slot.filter.borrow_mut().take();
            if let Some(mut f) = taken {
                let from = *start.get_or_insert_with(|| self.now());
                match &self.trace {
                    None => f.complete(),
                    Some(t) => self.worker.trace_scope.within(t, || f.complete()),
                }
                // Dropping the filter (its context goes) is part of its cost.
                drop(f);
                let end = self.now();
                self.record(i, Phase::Log, from, end, "done");
                start = Some(end);
            }
        }
    }
}

enum Step {
    Next,
    Respond(LocalResponse),
    Fail(ChainFailure),
    Reset,
}

impl Drop for ChainRun {
    /// A request abandoned midway (the client went away while a filter held it) still ends
    /// every filter's part, so no stream context is left behind in a VM.
    fn drop(&mut self) {
        self.complete();
    }
}

/// The head a local response shows the response phases. As Envoy's local replies: the
/// filter's headers, then `content-length` and (unless the filter gave one) a `text/plain`
/// `content-type` for a body; with no body, neither (a filter that reads the head sees what
/// Envoy would show it, and a later phase may still add them back). A reply in gRPC's form
/// ([`LocalResponse::into_grpc`]) is shown as it is.
fn head_of(local: &LocalResponse, grpc: bool) -> ResponseHead {
    use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
    let mut headers = http::HeaderMap::with_capacity(local.headers.len() + 2);
    for (k, v) in &local.headers {
        headers.append(k.clone(), v.clone());
    }
    if grpc {
        // Already without a body, a length or any type but gRPC's.
    } else if local.body.is_empty() {
        headers.remove(CONTENT_LENGTH);
        headers.remove(CONTENT_TYPE);
    } else {
        headers.insert(CONTENT_LENGTH, http::HeaderValue::from(local.body.len()));
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        }
    }
    ResponseHead {
        status: local.status,
        headers,
    }
}

/// A header map as pairs.
fn header_pairs(map: &http::HeaderMap) -> Vec<(http::HeaderName, http::HeaderValue)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
