//! A worker's deadlines for upstream attempts: one timer for all of them.
//!
//! Every request bounds its wait for a response head (the route's timeout, or a retry
//! policy's per-try timeout). With a tokio timer per attempt, each request registered an
//! entry in the runtime's timer wheel and took it out again, both under the time driver's
//! lock: ≈ 450 instructions a request, nearly all of it for a timer that never fires.
//!
//! Here a worker keeps its attempts' deadlines in lists, one per timeout length. Deadlines of
//! one length come in the order their attempts started, so an attempt joins the end of its
//! list and the earliest deadline of a list is its head. One timer task sleeps until the
//! earliest head; it is told about a new attempt only when that attempt's deadline comes
//! before the one it sleeps until (a list that was empty, or a shorter timeout), so under
//! steady traffic starting an attempt links a node and finishing it unlinks it. When the
//! timer wakes to find its head already finished, it sleeps again until the new head: with
//! one timeout length it wakes about once per timeout.
//!
//! Thread-local like the rest of a worker: no lock, no atomics. A node's waker is its
//! request's task's, so keeping it current rarely needs a clone.

use std::cell::RefCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

/// No node: the end of a list, or a timeout not yet registered.
const NIL: u32 = u32::MAX;

/// An attempt's deadline, linked into the list of its timeout length.
struct Node {
    deadline: Instant,
    prev: u32,
    /// The next node of its list; in a vacant node, the next vacant one.
    next: u32,
    /// Its list, or `NIL` once it fired (or while vacant).
    list: u32,
    waker: Option<Waker>,
}

/// The deadlines of attempts with one timeout length, earliest first.
struct List {
    span: Duration,
    head: u32,
    tail: u32,
}

#[derive(Default)]
struct Inner {
    nodes: Vec<Node>,
    /// The first vacant node.
    vacant: Option<u32>,
    lists: Vec<List>,
    /// What the timer task sleeps until; `None` while it has nothing to wait for.
    armed: Option<Instant>,
    /// The timer task, to wake when a deadline comes before `armed`.
    timer: Option<Waker>,
}

/// One worker's attempt deadlines and the timer that ends them.
#[derive(Default)]
pub(crate) struct Deadlines {
    inner: RefCell<Inner>,
}

/// A future ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Elapsed;

impl Deadlines {
    /// Runs `fut` until it completes or `span` after `start` has passed, whichever comes
    /// first. Like tokio's `timeout`, `fut` is polled once even when no time is left.
    ///
    /// `span` names the list the deadline joins, so it should be one of a few lengths (the
    /// configured timeouts), with `start` whenever that length began: a deadline that is
    /// what is left of a longer one is that longer one's `start` and `span`, not a new
    /// length. (Any length works; each distinct one waiting at a time takes a list.)
    pub(crate) fn timeout<F: Future + Unpin>(
        &self,
        start: Instant,
        span: Duration,
        fut: F,
    ) -> Timeout<'_, F> {
        Timeout {
            fut,
            deadlines: self,
            deadline: start + span,
            span,
            node: NIL,
        }
    }

    /// How many deadlines are waiting.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        let inner = self.inner.borrow();
        inner.nodes.iter().filter(|n| n.list != NIL).count()
    }

    fn insert(&self, deadline: Instant, span: Duration, waker: Waker) -> u32 {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let list = match inner.lists.iter().position(|l| l.span == span) {
            Some(i) => i,
            // A length no list has: an empty list takes it (the lengths in use change with
            // reloads), else a new one. Lists are as many as lengths waiting at once.
            None => match inner.lists.iter().position(|l| l.head == NIL) {
                Some(i) => {
                    inner.lists[i].span = span;
                    i
                }
                None => {
                    inner.lists.push(List {
                        span,
                        head: NIL,
                        tail: NIL,
                    });
                    inner.lists.len() - 1
                }
            },
        };
        let node = Node {
            deadline,
            prev: NIL,
            next: NIL,
            list: list as u32,
            waker: Some(waker),
        };
        let key = match inner.vacant {
            Some(k) => {
                inner.vacant = match inner.nodes[k as usize].next {
                    NIL => None,
                    n => Some(n),
                };
                inner.nodes[k as usize] = node;
                k
            }
            None => {
                inner.nodes.push(node);
                (inner.nodes.len() - 1) as u32
            }
        };
        // After the last node that is not later: almost always the tail itself, since a
        // worker starts its attempts in clock order.
        let mut after = inner.lists[list].tail;
        while after != NIL && inner.nodes[after as usize].deadline > deadline {
            after = inner.nodes[after as usize].prev;
        }
        let before = match after {
            NIL => std::mem::replace(&mut inner.lists[list].head, key),
            a => std::mem::replace(&mut inner.nodes[a as usize].next, key),
        };
        match before {
            NIL => inner.lists[list].tail = key,
            b => inner.nodes[b as usize].prev = key,
        }
        let n = &mut inner.nodes[key as usize];
        n.prev = after;
        n.next = before;
        if inner.armed.is_none_or(|a| deadline < a) {
            inner.armed = Some(deadline);
            if let Some(t) = &inner.timer {
                t.wake_by_ref();
            }
        }
        key
    }

    /// Takes `key` out of its list (if it has not fired) and frees it.
    fn remove(&self, key: u32) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        if inner.nodes[key as usize].list != NIL {
            inner.unlink(key);
        }
        let vacant = inner.vacant.unwrap_or(NIL);
        let n = &mut inner.nodes[key as usize];
        n.waker = None;
        n.list = NIL;
        n.next = vacant;
        inner.vacant = Some(key);
    }

    /// Whether `key` has fired; if not, it wakes `waker` when it does.
    fn poll_fired(&self, key: u32, waker: &Waker) -> bool {
        let mut inner = self.inner.borrow_mut();
        let n = &mut inner.nodes[key as usize];
        if n.list == NIL {
            return true;
        }
        if !n.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            n.waker = Some(waker.clone());
        }
        false
    }

    /// Fires every deadline up to `now`; returns the earliest one left.
    fn fire(&self, now: Instant, woken: &mut Vec<Waker>) -> Option<Instant> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let mut next: Option<Instant> = None;
        for l in 0..inner.lists.len() {
            loop {
                let head = inner.lists[l].head;
                if head == NIL {
                    break;
                }
                let deadline = inner.nodes[head as usize].deadline;
                if deadline > now {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    break;
                }
                inner.unlink(head);
                let n = &mut inner.nodes[head as usize];
                n.list = NIL;
                woken.extend(n.waker.take());
            }
        }
        inner.armed = next;
        next
    }

    /// The timer: a worker task that ends deadlines as they come. Runs until the worker's
    /// task set is dropped.
    pub(crate) async fn run(self: Rc<Self>) {
        // Reset before its first poll, so where it starts does not matter.
        let mut sleep = pin!(tokio::time::sleep_until(Instant::now()));
        let mut woken = Vec::new();
        std::future::poll_fn(|cx| {
            loop {
                let next = self.fire(Instant::now(), &mut woken);
                for w in woken.drain(..) {
                    w.wake();
                }
                let mut inner = self.inner.borrow_mut();
                if !inner
                    .timer
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    inner.timer = Some(cx.waker().clone());
                }
                drop(inner);
                let Some(at) = next else {
                    return Poll::<()>::Pending;
                };
                sleep.as_mut().reset(at);
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        })
        .await
    }
}

impl Inner {
    fn unlink(&mut self, key: u32) {
        let Node {
            prev, next, list, ..
        } = self.nodes[key as usize];
        let list = &mut self.lists[list as usize];
        match prev {
            NIL => list.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => list.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }
}

/// A future with a deadline; see [`Deadlines::timeout`].
pub(crate) struct Timeout<'a, F> {
    fut: F,
    deadlines: &'a Deadlines,
    deadline: Instant,
    span: Duration,
    node: u32,
}

impl<F: Future + Unpin> Future for Timeout<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Poll::Ready(v) = Pin::new(&mut this.fut).poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if this.node == NIL {
            if this.span.is_zero() {
                return Poll::Ready(Err(Elapsed));
            }
            this.node = this
                .deadlines
                .insert(this.deadline, this.span, cx.waker().clone());
            return Poll::Pending;
        }
        if this.deadlines.poll_fired(this.node, cx.waker()) {
            return Poll::Ready(Err(Elapsed));
        }
        Poll::Pending
    }
}

impl<F> Drop for Timeout<'_, F> {
    fn drop(&mut self) {
        if self.node != NIL {
            self.deadlines.remove(self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::pending;

    /// Runs `test` on a worker-like thread: a current-thread runtime, a task set, and the
    /// deadlines' timer as one of its tasks.
    fn on_worker<F: Future<Output = ()>>(test: impl FnOnce(Rc<Deadlines>) -> F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let deadlines = Rc::new(Deadlines::default());
            tokio::task::spawn_local(deadlines.clone().run());
            test(deadlines).await;
        });
    }

    #[test]
    fn a_future_that_outlasts_its_span_ends_when_the_span_is_over() {
        on_worker(|d| async move {
            let start = Instant::now();
            let r = d
                .timeout(start, Duration::from_millis(40), pending::<()>())
                .await;
            assert_eq!(r, Err(Elapsed));
            assert!(start.elapsed() >= Duration::from_millis(40));
            assert_eq!(d.waiting(), 0);
        });
    }

    #[test]
    fn a_future_that_completes_in_time_gives_its_output_and_leaves_no_deadline() {
        on_worker(|d| async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let _ = tx.send(7);
            });
            let r = d.timeout(Instant::now(), Duration::from_secs(10), rx).await;
            assert_eq!(r, Ok(Ok(7)));
            assert_eq!(d.waiting(), 0);
        });
    }

    #[test]
    fn a_short_timeout_ends_first_though_a_long_one_started_before_it() {
        on_worker(|d| async move {
            let long = tokio::task::spawn_local({
                let d = d.clone();
                async move {
                    d.timeout(Instant::now(), Duration::from_secs(30), pending::<()>())
                        .await
                }
            });
            tokio::task::yield_now().await;
            assert_eq!(d.waiting(), 1);
            let start = Instant::now();
            let short = d
                .timeout(start, Duration::from_millis(30), pending::<()>())
                .await;
            assert_eq!(short, Err(Elapsed));
            assert!(start.elapsed() < Duration::from_secs(10));
            assert_eq!(d.waiting(), 1, "the long timeout still waits");
            long.abort();
            let _ = long.await;
            assert_eq!(
                d.waiting(),
                0,
                "an abandoned timeout takes its deadline with it"
            );
        });
    }

    #[test]
    fn deadlines_of_one_length_end_in_deadline_order_whatever_order_they_came_in() {
        on_worker(|d| async move {
            let now = Instant::now();
            let span = Duration::from_millis(200);
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            // Started (by their clocks) 0, 150 and 100 ms ago, linked in that order.
            for (name, ago) in [("a", 0), ("c", 150), ("b", 100)] {
                let (d, order) = (d.clone(), order.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    let start = now - Duration::from_millis(ago);
                    let r = d.timeout(start, span, pending::<()>()).await;
                    order.borrow_mut().push(name);
                    r
                }));
                tokio::task::yield_now().await;
            }
            for t in tasks {
                assert_eq!(t.await.unwrap(), Err(Elapsed));
            }
            assert_eq!(*order.borrow(), ["c", "b", "a"]);
            assert_eq!(d.waiting(), 0);
        });
    }

    #[test]
    fn no_time_left_still_polls_the_future_once() {
        on_worker(|d| async move {
            let now = Instant::now();
            let ready = Box::pin(async { 1 });
            assert_eq!(d.timeout(now, Duration::ZERO, ready).await, Ok(1));
            let r = d.timeout(now, Duration::ZERO, pending::<()>()).await;
            assert_eq!(r, Err(Elapsed));
            assert_eq!(d.waiting(), 0);
        });
    }

    #[test]
    fn a_list_left_empty_takes_the_next_new_length() {
        on_worker(|d| async move {
            for ms in 1..=20 {
                let r = d.timeout(Instant::now(), Duration::from_millis(ms), pending::<()>());
                assert_eq!(r.await, Err(Elapsed));
            }
            assert_eq!(d.inner.borrow().lists.len(), 1);
        });
    }

    #[test]
    fn freed_nodes_are_reused() {
        on_worker(|d| async move {
            for i in 0..100 {
                let soon = Box::pin(async move {
                    tokio::task::yield_now().await;
                    i
                });
                let r = d.timeout(Instant::now(), Duration::from_secs(5), soon);
                assert_eq!(r.await, Ok(i));
            }
            assert_eq!(d.inner.borrow().nodes.len(), 1);
        });
    }
}
