//! A worker: one OS thread running a single-threaded tokio runtime. Each worker accepts on its
//! own `SO_REUSEPORT` socket per listener and serves those connections start to end, so a
//! request never changes thread. Everything a worker owns (connection pool, balancer state,
//! metric handles, its WASM VMs) sits behind `Rc`/`RefCell` with no locks.

use rustc_hash::FxHashMap as HashMap;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioTimer;
use hyper_util::server::conn::auto;
use metrics::Counter;
use rustygate_config::ListenerLimits;
use rustygate_core::balance::SmoothWrr;
use rustygate_core::resilience;
use rustygate_filter_api::{ChainBuilder, FilterFactory};
use rustygate_telemetry::{LocalDurations, Metrics};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::chain::PhaseTimers;
use crate::connection::{Drain, serve};
use crate::deadlines::Deadlines;
use crate::loop_clock::LoopClock;
use crate::pool::Pool;
use crate::snapshot::Snapshot;
use crate::strategy::{PickInfo, Strategy};
use crate::stream_watch::{Current, StreamExec};
use crate::trace_scope::TraceScope;
use crate::write_stall::SocketState;
use crate::{Phase, Shared};
use rustygate_filter_api::PickOutcome;

/// A listener as workers see it.
pub(crate) struct ListenerCtx {
    pub name: Arc<str>,
    pub limits: ListenerLimits,
    /// Open connections on this listener across all workers.
    pub connections: AtomicUsize,
    /// Set when the listener terminates TLS; a reload renews it (new handshakes use the new
    /// certificate, open connections keep theirs).
    pub tls: Option<parking_lot::RwLock<tokio_rustls::TlsAcceptor>>,
    /// `https` with TLS, else `http`: what `X-Forwarded-Proto` and filters are told.
    pub scheme: &'static str,
    /// What a request's `x-forwarded-client-cert` becomes.
    pub forward_client_cert: rustygate_config::ForwardClientCert,
    pub client_cert_details: Box<[rustygate_config::ClientCertDetail]>,
    /// How request paths are made canonical before routing.
    pub paths: rustygate_config::PathNormalization,
    /// Let a request with both a length and a transfer coding through (see `head_scan`).
    pub allow_chunked_length: bool,
    /// Offer HTTP/2 clients RFC 8441's extended CONNECT (see `handler::switch`).
    pub http2_extended_connect: bool,
    /// Connections start with a PROXY protocol header (see [`crate::proxy_header`]).
    pub proxy_protocol: bool,
    /// Whether they all must.
    pub proxy_header: crate::proxy_header::Expect,
}

/// Per-connection state shared by the connection task and its requests.
pub(crate) struct ConnCtx {
    pub listener: Arc<ListenerCtx>,
    pub peer: SocketAddr,
    /// Our end of the connection.
    pub local: SocketAddr,
    /// Unique in the process, from 1 (`connection.id` for filters).
    pub id: u64,
    /// `peer`'s IP as a header value, for `X-Forwarded-For`.
    pub peer_value: http::HeaderValue,
    /// Set once a TLS handshake has settled (TLS listeners only).
    pub tls: std::cell::OnceCell<Arc<rustygate_filter_api::ConnectionTls>>,
    pub last_active: Cell<Instant>,
    /// Set by a request whose upstream switched protocols: run by the connection's task once
    /// hyper has handed the socket over, so the connection stays counted (and drained).
    pub tunnel: RefCell<Option<crate::tunnel::Tunnel>>,
    /// The HTTP/2 stream being served now (see [`crate::stream_watch`]).
    pub stream: Rc<Current>,
    /// How the client's socket ended, if it did, and how long its pending request head has
    /// been arriving ([`crate::write_stall::WriteStall`], [`crate::head_clock`]).
    pub socket: Arc<SocketState>,
}

impl ConnCtx {
    /// The request's own clock readings serve here: no read of the clock for the idle timer.
    pub fn request_started(&self, at: Instant) {
        self.socket.head.request_started();
        self.last_active.set(at);
    }

    pub fn request_finished(&self, at: Instant) {
        self.socket.head.request_finished();
        self.socket.request_answered();
        self.last_active.set(at);
    }

    /// The tunnel this connection becomes after its `101 Switching Protocols` response.
    pub fn set_tunnel(&self, tunnel: crate::tunnel::Tunnel) {
        self.socket
            .heads_over
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Bytes that came after the request, held until now, go on into the tunnel.
        self.socket.request_answered();
        *self.tunnel.borrow_mut() = Some(tunnel);
    }
}

/// A route's filters on this worker.
pub(crate) type Chain = Rc<[Rc<dyn FilterFactory>]>;

/// One configuration generation as this worker runs it: the routing snapshot, the filter
/// chains built from it on this thread, and the per-generation state that is indexed by its
/// routes and clusters. A request holds its generation from start to end, so a reload never
/// changes the filters or routes a request started with; the generation (and with it the
/// filter VMs) is dropped when its last request ends.
pub(crate) struct Active {
    pub snapshot: Arc<Snapshot>,
    /// Filter chains by route index.
    chains: Vec<Chain>,
    /// Their callback timers, by route index.
    timers: Vec<Rc<[PhaseTimers]>>,
    no_filters: Chain,
    balancers: RefCell<Vec<SmoothWrr>>,
    /// `rustygate_upstream_duration_seconds` by cluster index.
    pub upstream_timers: Vec<LocalDurations>,
    /// Balancer components by cluster index; `None` where the native balancer picks.
    strategies: Vec<Option<RefCell<Strategy>>>,
    requests: RefCell<HashMap<(u32, u16), Counter>>,
    durations: RefCell<HashMap<u32, LocalDurations>>,
    /// Route and cluster names by index, this worker's copies: a filtered request holds them
    /// without an atomic reference count (an `Arc` clone costs one, and its drop another).
    route_names: Vec<Rc<str>>,
    cluster_names: Vec<Rc<str>>,
}

impl Active {
    /// Builds this worker's view of `snapshot`; filter VMs are instantiated here, on the
    /// worker thread that will run them, never on the request path.
    fn build(
        shared: &Shared,
        pool: &Rc<Pool>,
        scope: &Rc<TraceScope>,
        snapshot: Arc<Snapshot>,
        filters: Option<&Arc<dyn ChainBuilder>>,
    ) -> Result<Self, String> {
        let upstreams = Rc::new(crate::upstreams::WorkerUpstreams::new(
            snapshot.clone(),
            pool.clone(),
            shared.health.clone(),
            scope.clone(),
        ));
        let chains: Vec<Chain> = match filters {
            Some(b) => b.build(upstreams)?,
            None => Vec::new(),
        }
        .into_iter()
        .map(Rc::from)
        .collect();
        let timers = chains
            .iter()
            .map(|c| crate::chain::timers(c, &shared.metrics))
            .collect();
        let strategies = snapshot
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (Some(name), Some(builder)) = (&c.balancer, filters) else {
                    return Ok(None);
                };
                Ok(builder
                    .balancer(i)?
                    .map(|b| RefCell::new(Strategy::new(b, name.clone(), shared.metrics.clone()))))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Active {
            strategies,
            upstream_timers: snapshot
                .clusters
                .iter()
                .map(|c| shared.metrics.upstream_duration(&c.name))
                .collect(),
            balancers: RefCell::new(
                snapshot
                    .clusters
                    .iter()
                    .map(|cl| SmoothWrr::new(cl.endpoints.iter().map(|e| e.weight)))
                    .collect(),
            ),
            route_names: snapshot.routes.iter().map(|r| Rc::from(&*r.name)).collect(),
            cluster_names: snapshot
                .clusters
                .iter()
                .map(|c| Rc::from(&*c.name))
                .collect(),
            snapshot,
            chains,
            timers,
            no_filters: Rc::from(Vec::new()),
            requests: RefCell::default(),
            durations: RefCell::default(),
        })
    }

    /// Records in `progress` what filters read of where the request goes (`route_name`,
    /// `cluster_name`, `route_metadata`, `cluster_metadata`); again after a re-route.
    pub fn note_route(
        &self,
        progress: &rustygate_filter_api::Progress,
        route: usize,
        cluster: Option<usize>,
    ) {
        progress
            .route
            .replace(Some(self.route_names[route].clone()));
        progress
            .route_metadata
            .replace(self.snapshot.routes[route].metadata.clone());
        progress
            .cluster
            .replace(cluster.map(|c| self.cluster_names[c].clone()));
        progress
            .cluster_metadata
            .replace(cluster.and_then(|c| self.snapshot.clusters[c].metadata.clone()));
    }

    /// The filter chain of route `route` (empty when it has none).
    pub fn chain(&self, route: usize) -> Chain {
        // Routes without filters share one empty chain: no allocation per request.
        self.chains.get(route).unwrap_or(&self.no_filters).clone()
    }

    /// The callback timers of route `route`'s chain (only called for non-empty chains).
    pub fn timers(&self, route: usize) -> Rc<[PhaseTimers]> {
        self.timers[route].clone()
    }

    /// The endpoint for the next attempt to cluster `idx`: one in rotation (or any, in panic
    /// mode, when too few are), and one not `tried` yet while any such remains.
    /// `None` only when no endpoint is in rotation and panic mode is off (`panic_threshold: 0`).
    ///
    /// A cluster with a balancer component asks it first (with `request`), offering it the
    /// endpoints in rotation; its answer is taken unless it has none, fails, or names an
    /// endpoint this request already tried.
    pub fn pick_endpoint(
        &self,
        idx: usize,
        now_ms: u64,
        tried: &[usize],
        request: Option<&PickInfo>,
    ) -> Option<usize> {
        let cluster = &self.snapshot.clusters[idx];
        let eps = &cluster.endpoints;
        let health_known = cluster.health_check.is_some() || cluster.outlier.is_some();
        let healthy = if health_known {
            eps.iter().filter(|e| e.state.available(now_ms)).count()
        } else {
            eps.len()
        };
        let panic = resilience::panic_mode(healthy, eps.len(), cluster.panic_threshold);
        let usable = |i: usize| !health_known || panic || eps[i].state.available(now_ms);
        if let (Some(strategy), Some(request)) = (&self.strategies[idx], request) {
            let picked = strategy
                .borrow_mut()
                .pick(cluster, now_ms, usable, panic, request);
            if let Some(i) = picked.filter(|i| !tried.contains(i)) {
                return Some(i);
            }
        }
        let mut balancers = self.balancers.borrow_mut();
        let b = &mut balancers[idx];
        if !health_known {
            // Nothing can take an endpoint out of rotation: no health to read.
            if tried.is_empty() {
                return b.pick();
            }
            return b.pick_among(|i| !tried.contains(&i)).or_else(|| b.pick());
        }
        b.pick_among(|i| usable(i) && !tried.contains(&i))
            .or_else(|| b.pick_among(usable))
    }

    /// Whether cluster `idx` has a balancer component (which then wants [`PickInfo`]).
    pub fn has_strategy(&self, idx: usize) -> bool {
        self.strategies[idx].is_some()
    }

    /// Tells cluster `idx`'s balancer component how an attempt to endpoint `endpoint` ended.
    pub fn report(&self, idx: usize, endpoint: usize, outcome: PickOutcome) {
        if let Some(s) = &self.strategies[idx] {
            s.borrow_mut().report(endpoint, outcome);
        }
    }

    /// Counts a finished request. `route_idx` is `u32::MAX` when no route matched.
    #[inline]
    pub fn record_request(
        &self,
        metrics: &Metrics,
        route_idx: u32,
        route: &str,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .borrow_mut()
            .entry((route_idx, status))
            .or_insert_with(|| metrics.requests_total(route, status))
            .increment(1);
        self.durations
            .borrow_mut()
            .entry(route_idx)
            .or_insert_with(|| metrics.request_duration(route))
            .record(elapsed);
    }
}

/// A configuration change sent to a worker: prepared everywhere first, then committed, so that
/// a worker that cannot build the new generation leaves every worker on the old one.
pub(crate) enum Control {
    Prepare {
        snapshot: Arc<Snapshot>,
        filters: Option<Arc<dyn ChainBuilder>>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Commit {
        generation: u64,
        reply: oneshot::Sender<()>,
    },
    Abort {
        generation: u64,
    },
}

/// One worker's state.
pub(crate) struct Worker {
    /// From 0, in start order: the worker's slot in per-worker counts.
    pub id: usize,
    pub shared: Arc<Shared>,
    active: RefCell<Rc<Active>>,
    pending: RefCell<Option<Rc<Active>>>,
    pub pool: Rc<Pool>,
    pub rng: RefCell<fastrand::Rng>,
    /// The request whose filter callback runs, for traced outbound calls.
    pub trace_scope: Rc<TraceScope>,
    pub drain: Drain,
    /// The deadlines of this worker's upstream attempts.
    pub deadlines: Rc<Deadlines>,
    /// The time as of the running poll of a client connection (for what needs no finer
    /// grain; see [`LoopClock`]).
    pub clock: Arc<LoopClock>,
}

impl Worker {
    /// The generation a new request runs on.
    pub fn active(&self) -> Rc<Active> {
        self.active.borrow().clone()
    }

    /// Counts a filter failure.
    pub fn filter_failure(&self, filter: &str, reason: &str) {
        self.shared
            .metrics
            .filter_failures(filter, reason)
            .increment(1);
    }

    /// Counts a failed upstream attempt.
    pub fn upstream_failure(&self, cluster: &str, reason: &str) {
        self.shared
            .metrics
            .upstream_failures(cluster, reason)
            .increment(1);
    }

    fn control(&self, msg: Control) {
        match msg {
            Control::Prepare {
                snapshot,
                filters,
                reply,
            } => {
                let result = Active::build(
                    &self.shared,
                    &self.pool,
                    &self.trace_scope,
                    snapshot,
                    filters.as_ref(),
                );
                let answer = result.map(|a| {
                    *self.pending.borrow_mut() = Some(Rc::new(a));
                });
                let _ = reply.send(answer);
            }
            Control::Commit { generation, reply } => {
                let next = self.pending.borrow_mut().take();
                if let Some(next) = next.filter(|n| n.snapshot.generation == generation) {
                    // The old generation lives on in the requests that hold it.
                    *self.active.borrow_mut() = next;
                }
                let _ = reply.send(());
            }
            Control::Abort { generation } => {
                let mut pending = self.pending.borrow_mut();
                if pending
                    .as_ref()
                    .is_some_and(|p| p.snapshot.generation == generation)
                {
                    *pending = None;
                }
            }
        }
    }
}

/// Runs one worker thread until the gateway is stopped.
pub(crate) fn run(
    id: usize,
    shared: Arc<Shared>,
    listeners: Vec<(Arc<ListenerCtx>, std::net::TcpListener)>,
    phase: watch::Receiver<Phase>,
    first: (Arc<Snapshot>, Option<Arc<dyn ChainBuilder>>),
    control: mpsc::UnboundedReceiver<Control>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        // Filter VMs are created here, on the thread and inside the task set that will run
        // them (their outbound calls are worker tasks), before any traffic.
        let clock = Arc::new(LoopClock::new());
        let pool = Rc::new(Pool::new(clock.clone()));
        tokio::task::spawn_local(crate::pool::reap_idle(pool.clone()));
        let trace_scope = Rc::new(TraceScope::new(shared.tracer.clone()));
        let active = match Active::build(&shared, &pool, &trace_scope, first.0, first.1.as_ref()) {
            Ok(a) => {
                let _ = ready.send(Ok(()));
                a
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return Ok(());
            }
        };
        let deadlines = Rc::new(Deadlines::default());
        tokio::task::spawn_local(deadlines.clone().run());
        let worker = Rc::new(Worker {
            id,
            shared,
            active: RefCell::new(Rc::new(active)),
            pending: RefCell::new(None),
            pool,
            rng: RefCell::new(fastrand::Rng::new()),
            trace_scope,
            drain: Drain::default(),
            deadlines,
            clock,
        });
        for (ctx, std_listener) in listeners {
            let listener = TcpListener::from_std(std_listener)?;
            tokio::task::spawn_local(accept_loop(worker.clone(), ctx, listener, phase.clone()));
        }
        tracing::debug!(worker = id, "worker started");
        // The future the task set runs until is polled on every turn of the event loop, so
        // it only reads a flag; the control loop is a task like the others.
        let stopped = Rc::new(Stopped::default());
        tokio::task::spawn_local(control_loop(worker, control, phase, stopped.clone()));
        std::future::poll_fn(|cx| stopped.poll(cx)).await;
        Ok(())
    })
}

/// Set when a worker's control loop has ended.
#[derive(Default)]
struct Stopped {
    done: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Stopped {
    fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.done.get() {
            return Poll::Ready(());
        }
        let mut waker = self.waker.borrow_mut();
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn set(&self) {
        self.done.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Applies reloads, starts the drain, and stays up while it runs (connection tasks live on
/// this thread) until the gateway stops.
async fn control_loop(
    worker: Rc<Worker>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut phase: watch::Receiver<Phase>,
    stopped: Rc<Stopped>,
) {
    let mut draining = false;
    loop {
        let awaited = if draining {
            Phase::Stopped
        } else {
            Phase::Draining
        };
        tokio::select! {
            Some(msg) = control.recv() => worker.control(msg),
            _ = phase.wait_for(move |p| *p >= awaited) => {
                if draining {
                    break;
                }
                draining = true;
                worker.drain.start();
            }
        }
    }
    stopped.set();
}

fn server_builder(ctx: &ListenerCtx, current: Rc<Current>) -> auto::Builder<StreamExec> {
    let limits = &ctx.limits;
    let mut b = auto::Builder::new(StreamExec::new(current));
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // One flat write per message: for the small heads and bodies that dominate API
        // traffic this measured ~4% less CPU per request than vectored writes.
        .writev(false)
        // Timed by the connection's watchdog instead (see `head_clock`).
        .header_read_timeout(None)
        // The head scan refuses a head over the limits first (with a JSON 431); hyper's own
        // limits stay as the backstop for the heads it does not see.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    if ctx.http2_extended_connect {
        b.http2().enable_connect_protocol();
    }
    b
}

async fn accept_loop(
    worker: Rc<Worker>,
    ctx: Arc<ListenerCtx>,
    listener: TcpListener,
    mut phase: watch::Receiver<Phase>,
) {
    let current = Rc::new(Current::default());
    let builder = Rc::new(server_builder(&ctx, current.clone()));
    let active = worker.shared.metrics.connections_active(&ctx.name);
    let rejected = worker
        .shared
        .metrics
        .connections_rejected(&ctx.name, "max_connections");
    // Only a TLS listener has handshakes to count, and only a PROXY protocol one headers.
    let handshake_failed = ctx.tls.as_ref().map(|_| {
        worker
            .shared
            .metrics
            .connections_rejected(&ctx.name, "tls_handshake")
    });
    let header_failed = ctx.proxy_protocol.then(|| {
        worker
            .shared
            .metrics
            .connections_rejected(&ctx.name, "proxy_protocol")
    });
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = phase.wait_for(|p| *p != Phase::Running) => break,
        };
        let (stream, peer) = match accepted {
            Ok(v) => v,
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!(listener = &*ctx.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if ctx.connections.fetch_add(1, Ordering::Relaxed) >= ctx.limits.max_connections {
            ctx.connections.fetch_sub(1, Ordering::Relaxed);
            rejected.increment(1);
            continue;
        }
        worker.shared.connections.fetch_add(1, Ordering::Relaxed);
        active.increment(1.0);
        let _ = stream.set_nodelay(true);
        let accepted_at = Instant::now();
        let local = stream.local_addr().unwrap_or(peer);
        let id = worker.shared.connection_ids.fetch_add(1, Ordering::Relaxed) + 1;
        let (worker, builder, active, handshake_failed, header_failed) = (
            worker.clone(),
            builder.clone(),
            active.clone(),
            handshake_failed.clone(),
            header_failed.clone(),
        );
        let (ctx, current) = (ctx.clone(), current.clone());
        let clock = worker.clock.clone();
        tokio::task::spawn_local(clock.per_poll(async move {
            let mut stream = stream;
            let ends = match &header_failed {
                None => Some((peer, local)),
                // Boxed: its buffers would otherwise sit in every connection's task.
                Some(failed) => {
                    let terms = (ctx.proxy_header, ctx.limits.header_read_timeout.get());
                    Box::pin(crate::proxy_header::ends(
                        &mut stream,
                        (peer, local),
                        terms,
                        failed,
                    ))
                    .await
                }
            };
            if let Some((peer, local)) = ends {
                let conn = Rc::new(ConnCtx {
                    listener: ctx.clone(),
                    peer,
                    local,
                    id,
                    peer_value: rustygate_core::forwarding::client_address_value(peer.ip()),
                    tls: std::cell::OnceCell::new(),
                    last_active: Cell::new(accepted_at),
                    tunnel: RefCell::new(None),
                    stream: current,
                    socket: Arc::new(SocketState::new(accepted_at, worker.clock.clone())),
                });
                let stream = crate::tcp::Tcp::new(stream);
                serve_accepted(&worker, &builder, conn, stream, handshake_failed.as_ref()).await;
            }
            ctx.connections.fetch_sub(1, Ordering::Relaxed);
            active.decrement(1.0);
            worker.shared.connection_closed();
        }));
    }
    tracing::debug!(listener = &*ctx.name, "stopped accepting");
}

/// Serves an accepted connection, after its TLS handshake on a TLS listener.
async fn serve_accepted(
    worker: &Rc<Worker>,
    builder: &Rc<auto::Builder<StreamExec>>,
    conn: Rc<ConnCtx>,
    stream: crate::tcp::Tcp,
    handshake_failed: Option<&metrics::Counter>,
) {
    let Some(slot) = &conn.listener.tls else {
        return serve(worker.clone(), builder, conn.clone(), stream).await;
    };
    let acceptor = slot.read().clone();
    // Boxed: a TLS session's state (a kilobyte) would otherwise sit in every connection's
    // task, TLS or not.
    Box::pin(async {
        // The handshake gets the time a request head gets: a client that stalls in it holds
        // a connection slot no longer than a slow head would.
        match tokio::time::timeout(
            conn.listener.limits.header_read_timeout.get(),
            acceptor.accept(stream),
        )
        .await
        {
            Ok(Ok(tls)) => {
                let _ = conn.tls.set(Arc::new(crate::tls::settled(tls.get_ref().1)));
                // The first head gets its own time, as the handshake had.
                let now = Instant::now();
                conn.socket.head.restart(now);
                conn.last_active.set(now);
                serve(worker.clone(), builder, conn.clone(), tls).await
            }
            Ok(Err(e)) => {
                if let Some(c) = handshake_failed {
                    c.increment(1);
                }
                tracing::debug!(peer = %conn.peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                if let Some(c) = handshake_failed {
                    c.increment(1);
                }
                tracing::debug!(peer = %conn.peer, "TLS handshake timed out");
            }
        }
    })
    .await
}
