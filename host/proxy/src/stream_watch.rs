//! The stream idle timeout for an HTTP/2 client that stops reading one stream. Its window for
//! that stream stays shut, so hyper waits for capacity and stops polling the response body,
//! whose own idle timer then never runs, while the connection goes on serving other streams
//! (so [`crate::write_stall`], which watches the socket, never fires either). Left alone, such
//! a stream would hold its upstream connection and circuit-breaker slot until the client went
//! away.
//!
//! hyper runs each HTTP/2 stream as a task of its own, through the executor it was given:
//! [`StreamExec`] wraps each one in [`Watched`], which ends the task, and with it the stream
//! (`RST_STREAM`, as Envoy resets it), once the response body has moved nothing for the stream
//! idle timeout without waiting on the upstream. The handler learns which stream it runs in
//! from [`Current`] while the task polls it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::body::Transfer;

/// The stream whose task is being polled now, on this listener and worker: set by
/// [`Watched`] around each poll, read by the handler. HTTP/1 connections never set it.
#[derive(Default)]
pub(crate) struct Current(Cell<Option<Rc<Watch>>>);

impl Current {
    /// The stream being served now, if it is an HTTP/2 stream.
    pub(crate) fn get(&self) -> Option<Rc<Watch>> {
        let watch = self.0.take();
        self.0.set(watch.clone());
        watch
    }
}

/// One HTTP/2 stream's response body, once the handler has one that streams.
#[derive(Default)]
pub(crate) struct Watch {
    body: RefCell<Option<(Rc<Transfer>, Duration)>>,
}

impl Watch {
    /// Watches the response body whose movements `transfer` counts, against `limit` (zero:
    /// never).
    pub(crate) fn response(&self, transfer: Rc<Transfer>, limit: Duration) {
        if !limit.is_zero() {
            *self.body.borrow_mut() = Some((transfer, limit));
        }
    }
}

/// hyper's executor for the HTTP/2 streams of a listener's connections on one worker.
#[derive(Clone)]
pub(crate) struct StreamExec {
    current: Rc<Current>,
}

impl StreamExec {
    pub(crate) fn new(current: Rc<Current>) -> Self {
        Self { current }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(Watched {
            stream: Box::pin(fut),
            watch: Rc::default(),
            current: self.current.clone(),
            timer: None,
            frames: 0,
        });
    }
}

/// A stream's task, ended when its response stalls on the client.
struct Watched<F> {
    stream: Pin<Box<F>>,
    watch: Rc<Watch>,
    current: Rc<Current>,
    /// Made the first time the stream waits with a body to watch: most streams end first.
    timer: Option<Pin<Box<Sleep>>>,
    /// Body frames moved when the timer was last set.
    frames: u64,
}

impl<F: Future> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        this.current.0.set(Some(this.watch.clone()));
        let polled = this.stream.as_mut().poll(cx);
        this.current.0.set(None);
        if polled.is_ready() {
            return Poll::Ready(());
        }
        let body = this.watch.body.borrow();
        let Some((transfer, limit)) = body.as_ref() else {
            return Poll::Pending;
        };
        // Checked when the timer fires, not at each poll: a stall is seen between one and
        // two limits after the last movement, and a streaming body costs no clock reading.
        let timer = match &mut this.timer {
            Some(t) => t,
            None => {
                this.frames = transfer.frames.get();
                this.timer.insert(Box::pin(tokio::time::sleep(*limit)))
            }
        };
        while timer.as_mut().poll(cx).is_ready() {
            let frames = transfer.frames.get();
            // A body waiting on the upstream has its own idle timer; only one that hyper has
            // stopped polling (the client's window is shut) is this one's to end.
            if frames == this.frames && !transfer.awaiting.get() {
                transfer.reader_stalled.set(true);
                return Poll::Ready(());
            }
            this.frames = frames;
            timer.as_mut().reset(Instant::now() + *limit);
        }
        Poll::Pending
    }
}
