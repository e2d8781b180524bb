//! Streams a body through the body and trailer phases of a chain's filters.
//!
//! Data meets the filters in order (request: first to last; response: last to first). Each
//! filter sees the data it holds in [`Exchange::body`](rustygate_filter_api::Exchange::body): a filter that lets a chunk through
//! passes it (as edited) to the next; one that buffers keeps it and sees it again, followed by
//! the next chunk, so its last call holds the whole body. Envoy behaves the same way, which is
//! what proxy-wasm filters are written against.
//!
//! [`FilteredBody`] is the stream the client or the upstream reads, and the reader's polls do
//! the work: there is no task per request. A source frame goes through the filters within
//! the poll that read it; only when a filter stops on the last chunk or on the trailers (and
//! so must be waited for) does the rest become a future, polled until that filter resumes.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use rustygate_filter_api::{BodyBuffer, BodyVerdict, Direction, FilterError, InlineDeque, Verdict};

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

impl Stage {
    fn new(filter: usize) -> Self {
        Self {
            filter,
            held: BodyBuffer::default(),
            stopped: false,
        }
    }
}

/// The filters of `[0, upto)` in the order `direction`'s data meets them.
fn order(direction: Direction, upto: usize) -> impl Iterator<Item = usize> {
    let last = upto.saturating_sub(1);
    (0..upto).map(move |k| match direction {
        Direction::Request => k,
        Direction::Response => last - k,
    })
}

fn wants(chain: &ChainRun, direction: Direction, i: usize) -> bool {
    chain.with(i, |f| f.wants_body(direction)) == Some(true)
}

/// What became of a body that was whole before the filters saw it
/// ([`FilteredBody::run_whole`]).
pub(crate) enum Whole {
    /// Through every filter, and this is all of it (no trailers).
    Done(Bytes),
    /// A filter stopped on it (or added trailers): it goes on as a stream.
    Stream(Box<FilteredBody>),
    /// A filter ended it ([`ChainRun::body_stop`] says how).
    Aborted,
}

/// Items on their way through the stages (the stage each is for, and the item), in FIFO
/// order. The usual case (one item, no flushes) needs no queue at all.
type Feed = InlineDeque<(usize, Item)>;

/// Frames ready for the reader, in order: a body that comes as one frame (most small
/// responses) needs no queue.
type Frames = InlineDeque<Frame<Bytes>>;

/// Data bytes in `frames`.
fn data_len(frames: &Frames) -> u64 {
    frames
        .iter()
        .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
        .sum()
}

/// A filter stopped at stage `s` on the last chunk (`Data`) or on the trailers, and only it
/// can let the body go on: the feed waits for it.
enum Wait {
    Data { s: usize, eos: bool },
    Trailers { s: usize },
}

/// What one stage did with one chunk.
enum Passed {
    /// This goes on to the next stage.
    On(Item),
    /// The filter keeps the chunk (it buffers or stopped); more data will follow.
    Held,
    /// The filter stopped on the last chunk: wait for it.
    Wait,
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
    out: Frames,
    finished: bool,
    aborted: bool,
}

impl Pump {
    /// `limits`: how long a paused filter may hold the body, and most bytes one may hold.
    fn new(
        source: UpstreamBody,
        chain: Rc<ChainRun>,
        direction: Direction,
        stages: Vec<Stage>,
        (pause_limit, max_held): (Duration, usize),
    ) -> Self {
        Self {
            source,
            chain,
            direction,
            stages,
            pause_limit,
            max_held,
            out: Frames::default(),
            finished: false,
            aborted: false,
        }
    }

    /// What a source frame means for the stages; `None` when there is nothing to feed (the
    /// source failed, which aborts, or an unknown frame kind, which is dropped).
    fn item(&mut self, frame: Option<Result<Frame<Bytes>, BoxError>>) -> Option<Item> {
        match frame {
            None => Some(Item::Data(Bytes::new(), true)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "body source failed");
                self.aborted = true;
                None
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => Some(Item::Data(data, self.source.is_end_stream())),
                Err(frame) => {
                    let trailers = frame.into_trailers().ok()?;
                    *self.chain.exchange.trailers(self.direction).borrow_mut() = Some(trailers);
                    Some(Item::Trailers)
                }
            },
        }
    }

    /// Takes the feed through every stage, in order, until it is empty or a filter has to
    /// be waited for. No await here: a body whose filters all let it through (the usual
    /// case) is filtered within the reader's poll.
    fn run(&mut self, feed: &mut Feed) -> Result<Option<Wait>, BodyStop> {
        while let Some((s, item)) = feed.pop_front() {
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
                feed.push_back((s + 1, Item::Data(flushed, false)));
            }
            match item {
                Item::Data(data, eos) => match self.data(s, data, eos)? {
                    Passed::On(out) => feed.push_back((s + 1, out)),
                    Passed::Held => {}
                    Passed::Wait => return Ok(Some(Wait::Data { s, eos })),
                },
                Item::Trailers => {
                    let ex = self.chain.exchange.clone();
                    let phase = Phase::body(self.direction);
                    let verdict = self
                        .chain
                        .call(i, phase, |f| f.on_trailers(&ex, self.direction));
                    match verdict {
                        Some(Ok(Verdict::Pause)) => return Ok(Some(Wait::Trailers { s })),
                        Some(v) => self.after_resume(i, v)?,
                        None => {}
                    }
                    self.trailers_on(s, feed);
                }
            }
        }
        Ok(None)
    }

    /// Waits for the filter that stopped, then feeds on what it let go.
    async fn wait(&mut self, wait: Wait, feed: &mut Feed) -> Result<(), BodyStop> {
        match wait {
            Wait::Data { s, eos } => {
                let i = self.stages[s].filter;
                // The last chunk stays readable (and editable) by the filter while it waits,
                // from a call response say.
                let slot = self.chain.exchange.body(self.direction);
                *slot.borrow_mut() = self.stages[s].held.take();
                let v = self.chain.resume(i, self.direction, self.pause_limit).await;
                self.stages[s].held = slot.take();
                self.after_resume(i, v)?;
                self.stages[s].stopped = false;
                let out = self.stages[s].held.take().into_bytes();
                feed.push_back((s + 1, Item::Data(out, eos)));
            }
            Wait::Trailers { s } => {
                let i = self.stages[s].filter;
                let v = self.chain.resume(i, self.direction, self.pause_limit).await;
                self.after_resume(i, v)?;
                self.trailers_on(s, feed);
            }
        }
        Ok(())
    }

    /// The rest of a feed that has to wait for a filter: the pump comes back when every item
    /// is through (or the stream was stopped).
    async fn finish(mut self, mut feed: Feed, mut wait: Wait) -> Self {
        loop {
            let next = match self.wait(wait, &mut feed).await {
                Ok(()) => self.run(&mut feed),
                Err(stop) => Err(stop),
            };
            match next {
                Ok(Some(w)) => wait = w,
                Ok(None) => return self,
                Err(stop) => {
                    self.stop(stop);
                    return self;
                }
            }
        }
    }

    fn stop(&mut self, stop: BodyStop) {
        *self.chain.body_stop.borrow_mut() = Some(stop);
        self.aborted = true;
    }

    /// Bytes held across all stages.
    fn held(&self) -> usize {
        self.stages.iter().map(|s| s.held.len()).sum()
    }

    /// Trailers reached stage `s` and its filter let them go: what it held goes first.
    fn trailers_on(&mut self, s: usize, feed: &mut Feed) {
        self.stages[s].stopped = false;
        let flushed = self.stages[s].held.take().into_bytes();
        feed.push_back((s + 1, Item::Data(flushed, false)));
        feed.push_back((s + 1, Item::Trailers));
    }

    /// One chunk at one stage.
    fn data(&mut self, s: usize, data: Bytes, eos: bool) -> Result<Passed, BodyStop> {
        let stage = &mut self.stages[s];
        stage.held.push(data);
        stage.stopped = offer(
            &self.chain,
            self.direction,
            stage.filter,
            (&mut stage.held, eos),
            self.max_held,
            &mut None,
        )?;
        if stage.stopped {
            return Ok(if eos { Passed::Wait } else { Passed::Held });
        }
        Ok(Passed::On(Item::Data(stage.held.take_bytes(), eos)))
    }

    /// What a resumed filter decided, as a stop or nothing.
    fn after_resume(&self, i: usize, v: Result<Verdict, FilterError>) -> Result<(), BodyStop> {
        match v {
            Ok(Verdict::Continue | Verdict::Pause) => Ok(()),
            Ok(Verdict::Respond(local)) => Err(reply(i, local)),
            Ok(Verdict::Reset) => Err(reset(&self.chain)),
            Err(e) => match self.chain.failed(i, e) {
                Some(f) => Err(BodyStop::Fail(f)),
                None => Ok(()),
            },
        }
    }

    /// Past the last filter: frames for the reader.
    fn sink(&mut self, item: Item) {
        let trailers = |pump: &Self| trailers_of(&pump.chain, pump.direction);
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

/// Offers what filter `i` holds (`held`, its data so far) to its body phase. `Ok(true)`
/// when the filter stopped: it keeps `held` (emptied if it would not buffer it). `clock`:
/// the callback clock's reading when the previous filter of a loop let the body go on,
/// which then times the start of this one (one reading per filter instead of two); left
/// with this one's end when it did too.
fn offer(
    chain: &ChainRun,
    direction: Direction,
    i: usize,
    (held, eos): (&mut BodyBuffer, bool),
    max_held: usize,
    clock: &mut Option<u64>,
) -> Result<bool, BodyStop> {
    let start = clock.take();
    check_limit(chain, i, held, max_held)?;
    let ex = &chain.exchange;
    let slot = ex.body(direction);
    // The filter reads and edits what it holds in the exchange's slot: swapped in and
    // out, nothing is built or dropped on the way.
    {
        let mut shown = slot.borrow_mut();
        if !shown.is_empty() {
            // Left by a pump dropped while its filter was paused on its last chunk.
            *shown = BodyBuffer::default();
        }
        std::mem::swap(&mut *shown, held);
    }
    let start = start.unwrap_or_else(|| chain.now());
    let (verdict, end) = chain.call_from(i, Phase::body(direction), start, |f| {
        f.on_body(ex, direction, eos)
    });
    std::mem::swap(&mut *slot.borrow_mut(), held);
    let stop = match verdict {
        None | Some(Ok(BodyVerdict::Continue)) => {
            *clock = Some(end);
            false
        }
        Some(Ok(BodyVerdict::Buffer)) => true,
        Some(Ok(BodyVerdict::StopNoBuffer)) => {
            *held = BodyBuffer::default();
            true
        }
        Some(Ok(BodyVerdict::Respond(local))) => return Err(reply(i, local)),
        Some(Ok(BodyVerdict::Reset)) => return Err(reset(chain)),
        Some(Err(e)) => match chain.failed(i, e) {
            Some(f) => return Err(BodyStop::Fail(f)),
            None => false,
        },
    };
    if stop {
        check_limit(chain, i, held, max_held)?;
    }
    Ok(stop)
}

/// The trailers the body ends with, if any. Copied, not taken: later phases and `on_log`
/// still read them (`response.trailers`).
fn trailers_of(chain: &ChainRun, direction: Direction) -> Option<HeaderMap> {
    chain.exchange.trailers(direction).borrow().clone()
}

fn check_limit(
    chain: &ChainRun,
    i: usize,
    held: &BodyBuffer,
    max_held: usize,
) -> Result<(), BodyStop> {
    if held.len() > max_held {
        return Err(BodyStop::TooLarge {
            filter: chain.name(i).to_owned(),
            limit: max_held,
        });
    }
    Ok(())
}

fn reply(i: usize, local: rustygate_filter_api::LocalResponse) -> BodyStop {
    BodyStop::Respond(Reply { local, upto: i + 1 })
}

fn reset(chain: &ChainRun) -> BodyStop {
    chain.reset.set(true);
    BodyStop::Reset
}

enum State {
    /// Between source frames (or waiting for the next one).
    Idle(Pump),
    /// A filter stopped and is being waited for.
    Busy(Pin<Box<dyn Future<Output = Pump>>>),
    Done {
        aborted: bool,
    },
}

/// A body on its way through a chain's body phases.
pub(crate) struct FilteredBody {
    state: State,
    out: Frames,
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
        let stages = order(direction, upto)
            .filter(|i| wants(&chain, direction, *i))
            .map(Stage::new)
            .collect();
        let pump = Pump::new(source, chain, direction, stages, (pause_limit, max_held));
        Self {
            state: State::Idle(pump),
            out: Frames::default(),
        }
    }

    /// Takes a body that is already whole (it came with its head, as most small upstream
    /// responses do) through filters `[0, upto)` in a plain loop: no stream, no queue, no
    /// pump unless a filter stops on it, and then the pump starts from that filter.
    pub fn run_whole(
        data: Bytes,
        chain: &Rc<ChainRun>,
        direction: Direction,
        upto: usize,
        pause_limit: Duration,
        max_held: usize,
    ) -> Whole {
        let mut held = BodyBuffer::default();
        held.push(data);
        let mut filters = order(direction, upto);
        let mut clock = None;
        while let Some(i) = filters.next() {
            if !wants(chain, direction, i) {
                continue;
            }
            match offer(chain, direction, i, (&mut held, true), max_held, &mut clock) {
                Ok(false) => {}
                Ok(true) => {
                    // Only this filter can let the body go on: wait for it as the pump
                    // does, then on through the filters after it.
                    let mut stages = vec![Stage::new(i)];
                    stages[0].held = held;
                    stages[0].stopped = true;
                    stages.extend(
                        filters
                            .filter(|i| wants(chain, direction, *i))
                            .map(Stage::new),
                    );
                    let source = crate::body::in_memory(Bytes::new());
                    let limits = (pause_limit, max_held);
                    let pump = Pump::new(source, chain.clone(), direction, stages, limits);
                    let wait = Wait::Data { s: 0, eos: true };
                    return Whole::Stream(Box::new(Self {
                        state: State::Busy(Box::pin(pump.finish(Feed::default(), wait))),
                        out: Frames::default(),
                    }));
                }
                Err(stop) => {
                    *chain.body_stop.borrow_mut() = Some(stop);
                    return Whole::Aborted;
                }
            }
        }
        let data = held.take_bytes();
        // A filter may have added trailers at the end of a body that had none.
        let Some(trailers) = trailers_of(chain, direction) else {
            return Whole::Done(data);
        };
        let mut out = Frames::default();
        if !data.is_empty() {
            out.push_back(Frame::data(data));
        }
        out.push_back(Frame::trailers(trailers));
        Whole::Stream(Box::new(Self {
            state: State::Done { aborted: false },
            out,
        }))
    }

    /// Moves the pump on until it produced output or is waiting: `Idle` for the source,
    /// `Busy` for a filter. `Ready` when it made progress (output, end, or abort).
    fn advance(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // The pump stays in place between source frames (it is large): it moves only
            // into and out of the future that waits for a filter.
            match &mut self.state {
                State::Done { .. } => return Poll::Ready(()),
                State::Idle(pump) => {
                    if pump.finished || pump.aborted {
                        self.state = State::Done {
                            aborted: pump.aborted,
                        };
                        return Poll::Ready(());
                    }
                    let frame = match pump.source.as_mut().poll_frame(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(frame) => frame,
                    };
                    if let Some(item) = pump.item(frame) {
                        let mut feed = Feed::default();
                        feed.push_back((0, item));
                        match pump.run(&mut feed) {
                            Ok(None) => {}
                            Ok(Some(wait)) => {
                                let State::Idle(pump) = std::mem::replace(
                                    &mut self.state,
                                    State::Done { aborted: false },
                                ) else {
                                    unreachable!("matched above")
                                };
                                self.state = State::Busy(Box::pin(pump.finish(feed, wait)));
                                continue;
                            }
                            Err(stop) => pump.stop(stop),
                        }
                    }
                    let produced = !pump.out.is_empty();
                    self.out.append(&mut pump.out);
                    if produced {
                        return Poll::Ready(());
                    }
                }
                State::Busy(waiting) => match waiting.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(mut pump) => {
                        let produced = !pump.out.is_empty();
                        self.out.append(&mut pump.out);
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

    /// The body, when the filters are done with all of it and it is at most one data frame
    /// (no trailers): what most small responses are. Sent as a plain in-memory body, the
    /// pipeline and its source are dropped here instead of being polled to their end.
    pub fn whole(&mut self) -> Option<Bytes> {
        if !self.finished() || self.aborted() || self.out.len() > 1 {
            return None;
        }
        match self.out.pop_front() {
            None => Some(Bytes::new()),
            Some(frame) => match frame.into_data() {
                Ok(data) => Some(data),
                Err(frame) => {
                    self.out.push_front(frame);
                    None
                }
            },
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
                    let len = data_len(&self.out);
                    return Poll::Ready(Settled::Complete { len });
                }
                if !self.out.is_empty() {
                    return Poll::Ready(Settled::Streaming);
                }
                if self.advance(cx).is_pending() {
                    let filters_busy = match &self.state {
                        State::Idle(pump) => pump.held() > 0,
                        _ => true,
                    };
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
            return SizeHint::with_exact(data_len(&self.out));
        }
        SizeHint::default()
    }
}
