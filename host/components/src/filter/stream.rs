//! A worker's instances of a filter ([`Slot`]), the factory the chains hold, and one request's
//! `http-context` driven through the proxy's filter contract ([`Stream`]), calls included.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use rustygate_filter_api::{
    BodyVerdict, Direction, Exchange, FailurePolicy, FilterError, FilterFactory, HttpFilter,
    LocalFuture, LocalResponse, Upstreams, Verdict,
};
use wasmtime::Store;
use wasmtime::component::{Resource, ResourceAny};

use super::host::{REQUEST_BODY, RESPONSE_BODY, pairs};
use super::{Def, Instance, Started, State, bindings, gw};
use crate::REBUILD_EVERY;

/// One worker's instance of one (filter, configuration): the filter factory of the chains.
struct Slot {
    engine: wasmtime::Engine,
    def: Arc<Def>,
    /// `None` after a failure, until rebuilt.
    live: RefCell<Option<Instance>>,
    /// Counts instances, so a request's context is never used on a replacement.
    generation: std::cell::Cell<u64>,
    retry_at: std::cell::Cell<Option<Instant>>,
}

impl Slot {
    /// Makes sure an instance is live, rebuilding a failed one at most once a second.
    fn ensure(&self) -> Result<(), FilterError> {
        if self.live.borrow().is_some() {
            return Ok(());
        }
        if self.retry_at.get().is_some_and(|t| Instant::now() < t) {
            return Err(FilterError::Unavailable(
                "the filter's instance failed and is rebuilt at most once a second".into(),
            ));
        }
        self.retry_at.set(Some(Instant::now() + REBUILD_EVERY));
        let fresh = Instance::start(&self.engine, &self.def).map_err(|e| match e {
            Started::Refused(r) => FilterError::Unavailable(format!("configure failed: {r}")),
            Started::Failed(e) => e,
        })?;
        self.generation.set(self.generation.get() + 1);
        *self.live.borrow_mut() = Some(fresh);
        Ok(())
    }

    /// Runs `f` on the live instance of `generation`; a failure retires the instance (it
    /// cannot be entered again after a trap).
    fn run<R>(
        &self,
        generation: u64,
        exchange: Option<&Rc<Exchange>>,
        request_writable: bool,
        f: impl FnOnce(&bindings::HttpFilter, &mut Store<State>) -> wasmtime::Result<R>,
    ) -> Result<R, FilterError> {
        if generation != self.generation.get() {
            return Err(FilterError::Unavailable(
                "the filter's instance was replaced during this request".into(),
            ));
        }
        let mut live = self.live.borrow_mut();
        let instance = live.as_mut().ok_or_else(|| {
            FilterError::Unavailable("the filter's instance failed during this request".into())
        })?;
        let result = instance.call(self.def.cpu_limit, exchange, request_writable, f);
        if let Err(e) = &result {
            if let FilterError::Trap(detail) = e {
                tracing::error!(target: "filter", filter = %self.def.name, trap = %detail, "filter trapped");
            }
            *live = None;
            self.retry_at.set(None);
        }
        result
    }
}

/// The filter factory of the chains: a worker's [`Slot`], shared with its streams.
pub(super) struct Factory {
    slot: Rc<Slot>,
    upstreams: Rc<dyn Upstreams>,
}

impl Factory {
    /// A worker's factory for `def`; its instance is made on the first request.
    pub(super) fn new(
        engine: wasmtime::Engine,
        def: Arc<Def>,
        upstreams: Rc<dyn Upstreams>,
    ) -> Self {
        Self {
            slot: Rc::new(Slot {
                engine,
                def,
                live: RefCell::new(None),
                generation: std::cell::Cell::new(0),
                retry_at: std::cell::Cell::new(None),
            }),
            upstreams,
        }
    }
}

impl FilterFactory for Factory {
    fn name(&self) -> &str {
        &self.slot.def.name
    }

    fn failure_policy(&self) -> FailurePolicy {
        self.slot.def.policy
    }

    fn create(&self, _exchange: &Rc<Exchange>) -> Result<Box<dyn HttpFilter>, FilterError> {
        let slot = &self.slot;
        slot.ensure()?;
        let generation = slot.generation.get();
        let stream = slot.run(generation, None, false, |f, s| {
            f.rustygate_gateway_filter()
                .http_context()
                .call_constructor(s)
        })?;
        let phases = slot
            .live
            .borrow()
            .as_ref()
            .map_or(slot.def.phases, |i| i.phases);
        Ok(Box::new(Stream {
            slot: slot.clone(),
            generation,
            stream: Some(stream),
            phases,
            upstreams: self.upstreams.clone(),
            alive: Rc::new(std::cell::Cell::new(true)),
            waiting: None,
        }))
    }
}

/// One request's `http-context` in the worker's instance.
struct Stream {
    slot: Rc<Slot>,
    generation: u64,
    /// The guest's `http-context` resource; taken when it is dropped.
    stream: Option<ResourceAny>,
    phases: gw::Phases,
    upstreams: Rc<dyn Upstreams>,
    /// Cleared when the request is over, so a call answered later does not enter the guest
    /// for a context that no longer exists.
    alive: Rc<std::cell::Cell<bool>>,
    /// The outcome of the call the request is held for.
    waiting: Option<tokio::sync::oneshot::Receiver<Result<Verdict, FilterError>>>,
}

fn local_response(lr: gw::LocalResponse) -> Result<LocalResponse, FilterError> {
    let status = StatusCode::from_u16(lr.status).map_err(|_| {
        FilterError::Trap(format!(
            "the local response's status {} is invalid",
            lr.status
        ))
    })?;
    let mut headers = Vec::with_capacity(lr.headers.len());
    for (name, value) in lr.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => {
                return Err(FilterError::Trap(format!(
                    "the local response's header {name:?} is invalid"
                )));
            }
        }
    }
    Ok(LocalResponse {
        status,
        headers,
        body: Bytes::from(lr.body),
        details: "component_local_response".into(),
        grpc_status: None,
    })
}

/// A header phase's answer, for the phases where `call` is not allowed.
fn verdict(action: gw::Action) -> Result<Verdict, FilterError> {
    Ok(match action {
        gw::Action::Continue => Verdict::Continue,
        gw::Action::Respond(lr) => Verdict::Respond(local_response(lr)?),
        gw::Action::Call(_) => {
            return Err(FilterError::Trap(
                "`call` is only allowed in the request phases".into(),
            ));
        }
    })
}

/// The HTTP request an `outbound-request` describes.
fn outbound(call: &gw::OutboundRequest) -> Result<http::Request<Bytes>, String> {
    let method = http::Method::from_bytes(call.method.as_bytes())
        .map_err(|_| format!("invalid method {:?}", call.method))?;
    if !call.path.starts_with('/') {
        return Err(format!(
            "invalid path {:?}: it must start with /",
            call.path
        ));
    }
    let authority = if call.authority.is_empty() {
        &call.cluster
    } else {
        &call.authority
    };
    let mut builder = http::Request::builder()
        .method(method)
        .uri(call.path.as_str())
        .header(http::header::HOST, authority.as_str());
    for (name, value) in &call.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        builder = builder.header(name, value);
    }
    builder
        .body(Bytes::from(call.body.clone()))
        .map_err(|e| e.to_string())
}

fn outbound_response(
    result: Result<http::Response<Bytes>, String>,
) -> Result<gw::OutboundResponse, String> {
    let (parts, body) = result?.into_parts();
    Ok(gw::OutboundResponse {
        status: parts.status.as_u16(),
        headers: pairs(&parts.headers),
        body: body.to_vec(),
    })
}

impl Stream {
    fn stream(&self) -> Result<ResourceAny, FilterError> {
        self.stream
            .ok_or_else(|| FilterError::Unavailable("the stream is over".into()))
    }

    /// Sends `call` on the worker's pools; when it is answered, hands the answer to the
    /// guest's `on-call-response` (which may call again) and resolves [`HttpFilter::resumed`]
    /// with its verdict. The guest is entered only after the phase returned, never during it.
    fn call(
        &mut self,
        exchange: &Rc<Exchange>,
        first: gw::OutboundRequest,
    ) -> Result<(), FilterError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiting = Some(rx);
        let (slot, generation, stream) = (self.slot.clone(), self.generation, self.stream()?);
        let (alive, exchange, upstreams) =
            (self.alive.clone(), exchange.clone(), self.upstreams.clone());
        let task = async move {
            let mut call = first;
            let verdict = loop {
                let result = match outbound(&call) {
                    Ok(request) => {
                        let timeout = (call.timeout_ms > 0)
                            .then(|| Duration::from_millis(u64::from(call.timeout_ms)));
                        upstreams.call(&call.cluster, request, timeout).await
                    }
                    Err(e) => Err(e),
                };
                if !alive.get() {
                    return;
                }
                let response = outbound_response(result);
                let action = slot.run(generation, Some(&exchange), true, |f, s| {
                    f.rustygate_gateway_filter()
                        .http_context()
                        .call_on_call_response(
                            s,
                            stream,
                            Resource::new_borrow(0),
                            response.as_ref().map_err(String::as_str),
                        )
                });
                match action {
                    Ok(gw::Action::Call(next)) => call = next,
                    Ok(other) => break verdict(other),
                    Err(e) => break Err(e),
                }
            };
            let _ = tx.send(verdict);
        };
        self.upstreams.spawn(Box::pin(task));
        Ok(())
    }
}

impl HttpFilter for Stream {
    fn on_request_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError> {
        if !self.phases.contains(gw::Phases::REQUEST_HEADERS) {
            return Ok(Verdict::Continue);
        }
        let stream = self.stream()?;
        let action = self
            .slot
            .run(self.generation, Some(exchange), true, |f, s| {
                f.rustygate_gateway_filter()
                    .http_context()
                    .call_on_request_headers(s, stream, Resource::new_borrow(0), end_of_stream)
            })?;
        match action {
            gw::Action::Call(call) => {
                self.call(exchange, call)?;
                Ok(Verdict::Pause)
            }
            other => verdict(other),
        }
    }

    fn on_response_headers(
        &mut self,
        exchange: &Rc<Exchange>,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterError> {
        if !self.phases.contains(gw::Phases::RESPONSE_HEADERS) {
            return Ok(Verdict::Continue);
        }
        let stream = self.stream()?;
        let action = self
            .slot
            .run(self.generation, Some(exchange), false, |f, s| {
                f.rustygate_gateway_filter()
                    .http_context()
                    .call_on_response_headers(
                        s,
                        stream,
                        Resource::new_borrow(0),
                        Resource::new_borrow(0),
                        end_of_stream,
                    )
            })?;
        verdict(action)
    }

    fn on_body(
        &mut self,
        exchange: &Rc<Exchange>,
        direction: Direction,
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterError> {
        if !self.wants_body(direction) {
            return Ok(BodyVerdict::Continue);
        }
        let stream = self.stream()?;
        let action = match direction {
            Direction::Request => {
                self.slot
                    .run(self.generation, Some(exchange), true, |f, s| {
                        f.rustygate_gateway_filter()
                            .http_context()
                            .call_on_request_body(
                                s,
                                stream,
                                Resource::new_borrow(0),
                                Resource::new_borrow(REQUEST_BODY),
                                end_of_stream,
                            )
                    })?
            }
            Direction::Response => {
                self.slot
                    .run(self.generation, Some(exchange), false, |f, s| {
                        f.rustygate_gateway_filter()
                            .http_context()
                            .call_on_response_body(
                                s,
                                stream,
                                Resource::new_borrow(0),
                                Resource::new_borrow(0),
                                Resource::new_borrow(RESPONSE_BODY),
                                end_of_stream,
                            )
                    })?
            }
        };
        Ok(match action {
            gw::BodyAction::Continue => BodyVerdict::Continue,
            // Nothing follows the last chunk: holding it would hold the request forever.
            gw::BodyAction::Buffer if end_of_stream => BodyVerdict::Continue,
            gw::BodyAction::Buffer => BodyVerdict::Buffer,
            gw::BodyAction::Respond(lr) => BodyVerdict::Respond(local_response(lr)?),
        })
    }

    fn wants_body(&self, direction: Direction) -> bool {
        self.phases.contains(match direction {
            Direction::Request => gw::Phases::REQUEST_BODY,
            Direction::Response => gw::Phases::RESPONSE_BODY,
        })
    }

    /// Components have no end-of-stream phase and get the response only as a handle during
    /// a phase: only a response body phase comes after the head was handed on.
    fn reads_response_late(&self) -> bool {
        self.phases.contains(gw::Phases::RESPONSE_BODY)
    }

    /// A request held for a `call` goes on with the filter's answer to the response; nothing
    /// else pauses (a buffered body goes on with the next chunk's call).
    fn resumed(
        &mut self,
        direction: Direction,
    ) -> LocalFuture<'static, Result<Verdict, FilterError>> {
        match (direction, self.waiting.take()) {
            (Direction::Request, Some(answer)) => Box::pin(async move {
                answer.await.unwrap_or_else(|_| {
                    Err(FilterError::Unavailable(
                        "the filter's call was abandoned".into(),
                    ))
                })
            }),
            _ => Box::pin(std::future::pending()),
        }
    }

    fn complete(&mut self) {
        self.alive.set(false);
        let Some(stream) = self.stream.take() else {
            return;
        };
        // The guest's destructor runs now; an instance replaced since has no such stream.
        let _ = self
            .slot
            .run(self.generation, None, false, |_, s| stream.resource_drop(s));
    }
}
