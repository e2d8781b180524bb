//! Runs a route's filter chain for one request: request phases in order, response phases in
//! reverse, local responses passing back through the filters before (and including) the one
//! that answered, and each filter's failure policy when it fails.

use std::rc::Rc;
use std::time::Duration;

use crate::worker::Worker;
use rustygate_filter_api::{
    Exchange, FailurePolicy, FilterError, FilterFactory, HttpFilter, LocalResponse, ResponseHead,
    Verdict,
};

/// A filter failure that fails the request (fail-closed).
#[derive(Debug)]
pub(crate) struct ChainFailure {
    pub filter: String,
    pub error: FilterError,
}

/// What the request phases decided.
pub(crate) enum RequestOutcome {
    /// Send the (possibly changed) request upstream.
    Forward,
    /// Answer with this response instead; response phases have already run on it.
    Respond(LocalResponse),
    Fail(ChainFailure),
}

/// What the response phases decided.
pub(crate) enum ResponseOutcome {
    /// Send the (possibly changed) upstream response.
    Continue,
    /// Replace the upstream response with this one.
    Respond(LocalResponse),
    Fail(ChainFailure),
}

struct Slot {
    factory: Rc<dyn FilterFactory>,
    filter: Option<Box<dyn HttpFilter>>,
}

/// The filters of one request.
pub(crate) struct ChainRun {
    slots: Vec<Slot>,
    pub exchange: Rc<Exchange>,
    /// Counts failures (fail-open or not) in the worker's metrics.
    worker: Rc<Worker>,
}

impl ChainRun {
    pub fn new(
        chain: &[Rc<dyn FilterFactory>],
        exchange: Rc<Exchange>,
        worker: Rc<Worker>,
    ) -> Self {
        let slots = chain
            .iter()
            .map(|f| Slot {
                factory: f.clone(),
                filter: None,
            })
            .collect();
        Self {
            slots,
            exchange,
            worker,
        }
    }

    /// Applies the failure policy: `Some` fails the request, `None` skips the filter.
    fn failed(&mut self, i: usize, error: FilterError) -> Option<ChainFailure> {
        let name = self.slots[i].factory.name().to_owned();
        self.worker.filter_failure(&name, error.reason());
        // A trap's guest backtrace was logged where it happened; here, the decision.
        let detail = match &error {
            FilterError::Unavailable(why) => why.as_str(),
            _ => "",
        };
        tracing::warn!(filter = %name, reason = error.reason(), detail, policy = ?self.slots[i].factory.failure_policy(), "filter failed");
        if let Some(mut f) = self.slots[i].filter.take() {
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

    /// Waits for a paused filter to continue or answer, at most `limit`.
    async fn resume(&mut self, i: usize, limit: Duration) -> Result<Verdict, FilterError> {
        let Some(filter) = self.slots[i].filter.as_mut() else {
            return Ok(Verdict::Continue);
        };
        match tokio::time::timeout(limit, filter.resumed()).await {
            Ok(v) => v,
            Err(_) => Err(FilterError::Unavailable(format!(
                "the filter held the request longer than the route timeout ({limit:?})"
            ))),
        }
    }

    /// Runs every filter's request phase. A paused filter is waited for (at most `limit`)
    /// before the next one runs.
    pub async fn request(&mut self, end_of_stream: bool, limit: Duration) -> RequestOutcome {
        for i in 0..self.slots.len() {
            let created = self.slots[i].factory.create(&self.exchange);
            let mut verdict = created.and_then(|mut f| {
                let v = f.on_request_headers(&self.exchange, end_of_stream);
                self.slots[i].filter = Some(f);
                v
            });
            if let Ok(Verdict::Pause) = verdict {
                verdict = self.resume(i, limit).await;
            }
            match verdict {
                Ok(Verdict::Pause) => unreachable!("resume never yields Pause"),
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Respond(local)) => {
                    return match self.respond_through(i + 1, local, limit).await {
                        Ok(local) => RequestOutcome::Respond(local),
                        Err(f) => RequestOutcome::Fail(f),
                    };
                }
                Err(e) => {
                    if let Some(f) = self.failed(i, e) {
                        return RequestOutcome::Fail(f);
                    }
                }
            }
        }
        RequestOutcome::Forward
    }

    /// Runs response phases of filters `[0, upto)` in reverse on `exchange.response`.
    async fn response_phases(
        &mut self,
        upto: usize,
        end_of_stream: bool,
        limit: Duration,
    ) -> Result<Option<LocalResponse>, ChainFailure> {
        let mut replaced = None;
        for i in (0..upto).rev() {
            let Some(filter) = self.slots[i].filter.as_mut() else {
                continue;
            };
            let mut verdict = filter.on_response_headers(&self.exchange, end_of_stream);
            if let Ok(Verdict::Pause) = verdict {
                verdict = self.resume(i, limit).await;
            }
            match verdict {
                Ok(Verdict::Continue) => {}
                Ok(Verdict::Pause) => unreachable!("resume never yields Pause"),
                Ok(Verdict::Respond(local)) => {
                    // Replaces the response for the filters still to run (earlier in the chain).
                    *self.exchange.response.borrow_mut() = Some(head_of(&local));
                    replaced = Some(local);
                }
                Err(e) => {
                    if let Some(f) = self.failed(i, e) {
                        return Err(f);
                    }
                }
            }
        }
        Ok(replaced)
    }

    /// A local response from filter `upto - 1`: it passes through that filter's response phase
    /// and those before it, which may change its headers.
    async fn respond_through(
        &mut self,
        upto: usize,
        local: LocalResponse,
        limit: Duration,
    ) -> Result<LocalResponse, ChainFailure> {
        *self.exchange.response.borrow_mut() = Some(head_of(&local));
        let eos = local.body.is_empty();
        let mut local = match self.response_phases(upto, eos, limit).await? {
            Some(replacement) => replacement,
            None => local,
        };
        if let Some(head) = self.exchange.response.borrow_mut().take() {
            local.status = head.status;
            local.headers = header_pairs(head.headers);
        }
        Ok(local)
    }

    /// Runs the response phases on the upstream response in `exchange.response`.
    pub async fn response(&mut self, end_of_stream: bool, limit: Duration) -> ResponseOutcome {
        match self
            .response_phases(self.slots.len(), end_of_stream, limit)
            .await
        {
            Ok(None) => ResponseOutcome::Continue,
            Ok(Some(mut local)) => {
                if let Some(head) = self.exchange.response.borrow_mut().take() {
                    local.status = head.status;
                    local.headers = header_pairs(head.headers);
                }
                ResponseOutcome::Respond(local)
            }
            Err(f) => ResponseOutcome::Fail(f),
        }
    }

    /// Ends every filter's part in the request.
    pub fn complete(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut f) = slot.filter.take() {
                f.complete();
            }
        }
    }
}

impl Drop for ChainRun {
    /// A request abandoned midway (the client went away while a filter held it) still ends
    /// every filter's part, so no stream context is left behind in a VM.
    fn drop(&mut self) {
        self.complete();
    }
}

fn head_of(local: &LocalResponse) -> ResponseHead {
    let mut headers = http::HeaderMap::with_capacity(local.headers.len());
    for (k, v) in &local.headers {
        headers.append(k.clone(), v.clone());
    }
    ResponseHead {
        status: local.status,
        headers,
    }
}

/// A header map as pairs; `HeaderMap::into_iter` names only the first value of each header.
fn header_pairs(map: http::HeaderMap) -> Vec<(http::HeaderName, http::HeaderValue)> {
    let mut out = Vec::with_capacity(map.len());
    let mut last: Option<http::HeaderName> = None;
    for (k, v) in map {
        if let Some(k) = k {
            last = Some(k);
        }
        if let Some(k) = &last {
            out.push((k.clone(), v));
        }
    }
    out
}
