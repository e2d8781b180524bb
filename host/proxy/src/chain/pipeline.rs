//! Streams a body through the body and trailer phases of a chain's filters.
//!
//! Data meets the filters in order (request: first to last; response: last to first). Each
//! filter sees the data it holds in [`Exchange::body`]: a filter that lets a chunk through
//! passes it (as edited) to the next; one that buffers keeps it and sees it again, followed by
//! the next chunk, so its last call holds the whole body. Envoy behaves the same way, which is
//! what proxy-wasm filters are written against.
//!
//! [`FilteredBody`] is the stream the client or the upstream reads. The work for each source
//! frame is an async step (a filter may pause, and the pause is awaited there), run by the
//! reader's polls: there is no task per request.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use rustygate_filter_api::{BodyBuffer, BodyVerdict, Direction, FilterError, Verdict};

use super::{BodyStop, ChainRun, Phase, Reply};
use crate::body::BoxError;
use crate::pool::UpstreamBody;

/// The body stream was cut short by a filter; the reason is in [`ChainRun::body_stop`].
#[derive(Debug, thiserror::Error)]
#[error("a filter ended the body stream")]
pub struct BodyAborted;

/// What a settled body looks like (see [`FilteredBody::settle`]).
pub(crate) enum Settled {
    /// The whole body has gone through the filters: it is this many bytes.
    Complete { len: u64 },
    /// Data is still to come; the head can go now.
    Streaming,
    /// A filter ended the stream ([`ChainRun::body_stop`] says how).
    Aborted,
}

enum Item {
    Data(Bytes, bool),
    Trailers,
}

struct Stage {
    filter: usize,
    /// What the filter holds (it buffered, or it paused).
    held: BodyBuffer,
    /// The filter stopped iteration and has not let data through since.
    stopped: bool,
}

/// Progress the reader can see while a step is pending.
#[derive(Default)]
struct Status {
    /// The step is waiting for the source, not for a filter.
    awaiting_source: Cell<bool>,
    /// Bytes held across all filters.
    held: Cell<usize>,
}

struct Pump {
    source: UpstreamBody,
    chain: Rc<ChainRun>,
    direction: Direction,
    stages: Vec<Stage>,
    /// How long a paused filter may hold the body (the route timeout).
    pause_limit: Duration,
    /// Most bytes one filter may hold.
    max_held: usize,
    out: VecDeque<Frame<Bytes>>,
    finished: bool,
    aborted: bool,
    status: Rc<Status>,
}

impl Pump {
    /// Reads one frame from the source and takes it through the filters.
    async fn step(mut self: Box<Self>) -> Box<Self> {
        self.status.awaiting_source.set(true);
        let frame = self.source.frame().await;
        self.status.awaiting_source.set(false);
        let item = match frame {
            None => Item::Data(Bytes::new(), true),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "body source failed");
                self.aborted = true;
                return self;
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let eos = self.source.is_end_stream();
                    Item::Data(data, eos)
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        *self.chain.exchange.trailers(self.direction).borrow_mut() = Some(trailers);
                        Item::Trailers
                    }
                    Err(_) => return self, // unknown frame kinds are dropped
                },
            },
        };
        if let Err(stop) = self.feed(item).await {
            *self.chain.body_stop.borrow_mut() = Some(stop);
            self.aborted = true;
        }
        let held = self.stages.iter().map(|s| s.held.len()).sum();
        self.status.held.set(held);
        self
    }

    /// Takes one source item through every stage, in order. Items wait in FIFO order per
    /// stage; the usual case (one item, no flushes) needs no queue at all.
    async fn feed(&mut self, item: Item) -> Result<(), BodyStop> {
        let mut next = Some((0usize, item));
        let mut queue: VecDeque<(usize, Item)> = VecDeque::new();
        let push = |next: &mut Option<(usize, Item)>, queue: &mut VecDeque<_>, entry| {
            if next.is_none() && queue.is_empty() {
                *next = Some(entry);
            } else {
                queue.push_back(entry);
            }
        };
        while let Some((s, item)) = next.take().or_else(|| queue.pop_front()) {
            if s == self.stages.len() {
                self.sink(item);
                continue;
            }
            let i = self.stages[s].filter;
            // A filter that stopped earlier may have been resumed since (by
            // `proxy_continue_stream` from a call response or a tick): what it held goes on.
            if self.stages[s].stopped
                && let Some(v) = self.chain.resumed_now(i, self.direction)
            {
                self.stages[s].stopped = false;
                self.after_resume(i, v)?;
                let flushed = self.stages[s].held.take().into_bytes();
                push(&mut next, &mut queue, (s + 1, Item::Data(flushed, false)));
            }
            match item {
                Item::Data(data, eos) => {
                    if let Some(out) = self.data(s, data, eos).await? {
                        push(&mut next, &mut queue, (s + 1, out));
                    }
                }
                Item::Trailers => {
                    let ex = self.chain.exchange.clone();
                    let phase = Phase::body(self.direction);
                    let verdict = self
                        .chain
                        .call(i, phase, |f| f.on_trailers(&ex, self.direction));
                    if let Some(mut v) = verdict {
                        if let Ok(Verdict::Pause) = v {
                            v = self.chain.resume(i, self.direction, self.pause_limit).await;
                        }
                        self.after_resume(i, v)?;
                    }
                    self.stages[s].stopped = false;
                    let flushed = self.stages[s].held.take().into_bytes();
                    push(&mut next, &mut queue, (s + 1, Item::Data(flushed, false)));
                    push(&mut next, &mut queue, (s + 1, Item::Trailers));
                }
            }
        }
        Ok(())
    }

    /// One chunk at one stage; returns what goes on to the next stage.
    async fn data(&mut self, s: usize, data: Bytes, eos: bool) -> Result<Option<Item>, BodyStop> {
        let i = self.stages[s].filter;
        self.stages[s].held.push(data);
        self.check_limit(s)?;
        let ex = self.chain.exchange.clone();
        let slot = ex.body(self.direction);
        *slot.borrow_mut() = self.stages[s].held.take();
        let verdict = self.chain.call(i, Phase::body(self.direction), |f| {
            f.on_body(&ex, self.direction, eos)
        });
        self.stages[s].held = slot.take();
        let stop = match verdict {
            None | Some(Ok(BodyVerdict::Continue)) => false,
            Some(Ok(BodyVerdict::Buffer)) => true,
            Some(Ok(BodyVerdict::StopNoBuffer)) => {
                self.stages[s].held = BodyBuffer::default();
                true
            }
            Some(Ok(BodyVerdict::Respond(local))) => {
                return Err(self.reply(i, local));
            }
            Some(Err(e)) => match self.chain.failed(i, e) {
                Some(f) => return Err(BodyStop::Fail(f)),
                None => false,
            },
        };
        if stop {
            self.check_limit(s)?;
            self.stages[s].stopped = true;
            if !eos {
                return Ok(None);
            }
            // The last chunk, held: only the filter can let it go now. It stays readable (and
            // editable) by the filter while it waits, from a call response say.
            *slot.borrow_mut() = self.stages[s].held.take();
            let v = self.chain.resume(i, self.direction, self.pause_limit).await;
            self.stages[s].held = slot.take();
            self.after_resume(i, v)?;
        }
        self.stages[s].stopped = false;
        let out = self.stages[s].held.take().into_bytes();
        Ok(Some(Item::Data(out, eos)))
    }

    /// What a resumed filter decided, as a stop or nothing.
    fn after_resume(&self, i: usize, v: Result<Verdict, FilterError>) -> Result<(), BodyStop> {
        match v {
            Ok(Verdict::Continue | Verdict::Pause) => Ok(()),
            Ok(Verdict::Respond(local)) => Err(self.reply(i, local)),
            Err(e) => match self.chain.failed(i, e) {
                Some(f) => Err(BodyStop::Fail(f)),
                None => Ok(()),
            },
        }
    }

    fn reply(&self, i: usize, local: rustygate_filter_api::LocalResponse) -> BodyStop {
        BodyStop::Respond(Reply { local, upto: i + 1 })
    }

    fn check_limit(&self, s: usize) -> Result<(), BodyStop> {
        if self.stages[s].held.len() > self.max_held {
            return Err(BodyStop::TooLarge {
                filter: self.chain.name(self.stages[s].filter).to_owned(),
                limit: self.max_held,
            });
        }
        Ok(())
    }

    /// Past the last filter: frames for the reader.
    fn sink(&mut self, item: Item) {
        let trailers = |pump: &Self| -> Option<HeaderMap> {
            pump.chain
                .exchange
                .trailers(pump.direction)
                .borrow_mut()
                .take()
        };
        match item {
            Item::Data(data, eos) => {
                if !data.is_empty() {
                    self.out.push_back(Frame::data(data));
                }
                if eos {
                    // A filter may have added trailers at the end of a body that had none.
                    if let Some(t) = trailers(self) {
                        self.out.push_back(Frame::trailers(t));
                    }
                    self.finished = true;
                }
            }
            Item::Trailers => {
                if let Some(t) = trailers(self) {
                    self.out.push_back(Frame::trailers(t));
                }
                self.finished = true;
            }
        }
    }
}

enum State {
    Idle(Box<Pump>),
    Busy(Pin<Box<dyn Future<Output = Box<Pump>>>>),
    Done { aborted: bool },
}

/// A body on its way through a chain's body phases.
pub(crate) struct FilteredBody {
    state: State,
    out: VecDeque<Frame<Bytes>>,
    status: Rc<Status>,
}

impl FilteredBody {
    /// Streams `source` through filters `[0, upto)` of `chain` in `direction`'s order. Only
    /// filters with body phases in that direction take part.
    pub fn new(
        source: UpstreamBody,
        chain: Rc<ChainRun>,
        direction: Direction,
        upto: usize,
        pause_limit: Duration,
        max_held: usize,
    ) -> Self {
        let wants = |i: &usize| chain.with(*i, |f| f.wants_body(direction)) == Some(true);
        let order: Vec<usize> = match direction {
            Direction::Request => (0..upto).filter(wants).collect(),
            Direction::Response => (0..upto).rev().filter(wants).collect(),
        };
        let status = Rc::new(Status::default());
        let pump = Pump {
            source,
            chain,
            direction,
            stages: order
                .into_iter()
                .map(|filter| Stage {
                    filter,
                    held: BodyBuffer::default(),
                    stopped: false,
                })
                .collect(),
            pause_limit,
            max_held,
            out: VecDeque::new(),
            finished: false,
            aborted: false,
            status: status.clone(),
        };
        Self {
            state: State::Idle(Box::new(pump)),
            out: VecDeque::new(),
            status,
        }
    }

    /// Moves the pump on until it produced output or is waiting for the source. `Ready` when
    /// it made progress (output, end, or abort).
    fn advance(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            match std::mem::replace(&mut self.state, State::Done { aborted: false }) {
                State::Done { aborted } => {
                    self.state = State::Done { aborted };
                    return Poll::Ready(());
                }
                State::Idle(pump) => {
                    if pump.finished || pump.aborted {
                        self.state = State::Done {
                            aborted: pump.aborted,
                        };
                        return Poll::Ready(());
                    }
                    self.state = State::Busy(Box::pin(pump.step()));
                }
                State::Busy(mut step) => match step.as_mut().poll(cx) {
                    Poll::Pending => {
                        self.state = State::Busy(step);
                        return Poll::Pending;
                    }
                    Poll::Ready(mut pump) => {
                        let produced = !pump.out.is_empty();
                        // Usually nothing is waiting here: trading the queues keeps their
                        // allocations in use instead of growing a new one per request.
                        if self.out.is_empty() {
                            std::mem::swap(&mut self.out, &mut pump.out);
                        } else {
                            self.out.extend(pump.out.drain(..));
                        }
                        self.state = State::Idle(pump);
                        if produced {
                            return Poll::Ready(());
                        }
                    }
                },
            }
        }
    }

    fn finished(&self) -> bool {
        match &self.state {
            State::Done { .. } => true,
            State::Idle(p) => p.finished,
            State::Busy(_) => false,
        }
    }

    fn aborted(&self) -> bool {
        match &self.state {
            State::Done { aborted } => *aborted,
            State::Idle(p) => p.aborted,
            State::Busy(_) => false,
        }
    }

    /// Runs the filters until the head can go: until the body is complete, or data is
    /// flowing, or the only thing awaited is the source with no filter holding data. A filter
    /// that buffers the whole body thus holds the head back with it, so the head can carry the
    /// body's final length; a streaming body is not delayed.
    pub async fn settle(&mut self) -> Settled {
        std::future::poll_fn(|cx| {
            loop {
                if self.aborted() {
                    return Poll::Ready(Settled::Aborted);
                }
                if self.finished() {
                    let len = self
                        .out
                        .iter()
                        .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                        .sum();
                    return Poll::Ready(Settled::Complete { len });
                }
                if !self.out.is_empty() {
                    return Poll::Ready(Settled::Streaming);
                }
                if self.advance(cx).is_pending() {
                    let filters_busy =
                        !self.status.awaiting_source.get() || self.status.held.get() > 0;
                    if filters_busy {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Settled::Streaming);
                }
            }
        })
        .await
    }
}

impl Body for FilteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(f) = self.out.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if self.aborted() {
                return Poll::Ready(Some(Err(Box::new(BodyAborted))));
            }
            if self.finished() {
                return Poll::Ready(None);
            }
            if self.advance(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.out.is_empty() && self.finished() && !self.aborted()
    }

    fn size_hint(&self) -> SizeHint {
        if self.finished() && !self.aborted() {
            let len = self
                .out
                .iter()
                .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                .sum();
            return SizeHint::with_exact(len);
        }
        SizeHint::default()
    }
}
