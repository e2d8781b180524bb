//! RustyGate's data plane.
//!
//! [`Gateway::start`] binds every listener once per worker (`SO_REUSEPORT`, so the kernel
//! spreads connections), starts the worker threads, and returns a handle used to read the
//! bound addresses and to drain. See `docs/architecture.md` for why workers are
//! thread-per-core with no work stealing.

#[cfg(test)]
mod against_hyper;
mod body;
mod chain;
mod checker;
mod connection;
mod deadlines;
mod exec;
mod grpc;
mod h1;
mod handler;
mod head_clock;
mod head_scan;
mod health;
mod loop_clock;
mod per_worker;
mod pool;
mod proxy_header;
mod request_line;
mod request_scan;
mod snapshot;
mod strategy;
mod stream_watch;
mod tcp;
pub mod tls;
mod trace_scope;
mod tunnel;
mod upstreams;
mod worker;
mod write_stall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustygate_config::Config;
use rustygate_filter_api::ChainBuilder;
use rustygate_telemetry::Metrics;
use rustygate_telemetry::trace::Tracer;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use snapshot::{Snapshot, SnapshotError};

use worker::{Control, ListenerCtx};

/// Lifecycle phase broadcast to workers, in the order they come (a stop may skip the drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting and serving.
    Running,
    /// Not accepting; finishing in-flight requests.
    Draining,
    /// Workers exit; whatever is left is dropped.
    Stopped,
}

/// State shared by all workers: counters. Configuration is not here: each worker holds the
/// generation it runs (see [`Reconfigure::apply`]).
pub(crate) struct Shared {
    pub metrics: Metrics,
    /// Span exporter; `None` when tracing is off, and then no span is ever made.
    pub tracer: Option<Arc<Tracer>>,
    /// Endpoint health and cluster load, across workers and reloads.
    pub health: Arc<health::Health>,
    /// Requests in flight, counted by the worker serving them.
    pub in_flight: per_worker::PerWorker,
    pub connections: AtomicUsize,
    /// The last client connection id handed out (`connection.id`, from 1).
    pub connection_ids: std::sync::atomic::AtomicU64,
    pub draining: AtomicBool,
    closed: Notify,
    /// Times filter callbacks: the TSC where it is invariant (a read costs a third of
    /// `clock_gettime`'s, and a request with filters reads it several times per filter),
    /// else the monotonic clock.
    pub clock: quanta::Clock,
}

impl Shared {
    fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        if self.draining.load(Ordering::Relaxed) {
            self.closed.notify_waiters();
        }
    }
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("listener {listener}: cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// Configured address.
        address: String,
        /// Socket error.
        #[source]
        source: std::io::Error,
    },
    /// A listener's certificate could not be loaded.
    #[error("listener {listener}: TLS: {source}")]
    Tls {
        /// Listener name.
        listener: String,
        /// What is wrong with the certificate or key.
        #[source]
        source: tls::TlsError,
    },
    /// The configuration could not be compiled.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A worker could not start its filters.
    #[error("{0}")]
    Filters(String),
    /// A worker thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// What a drain achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Requests in flight when the drain began.
    pub in_flight_at_start: usize,
    /// Of those (and any that arrived on open connections), how many were still running when
    /// the grace period ended and were cut off.
    pub abandoned: usize,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl DrainReport {
    /// Requests that were in flight at the start and completed.
    pub fn drained(&self) -> usize {
        self.in_flight_at_start.saturating_sub(self.abandoned)
    }
}

/// Readiness as the admin listener reports it: false once a drain has begun.
#[derive(Clone)]
pub struct Readiness(Arc<Shared>);

impl Readiness {
    /// True while accepting traffic.
    pub fn is_ready(&self) -> bool {
        !self.0.draining.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Readiness").field(&self.is_ready()).finish()
    }
}

/// Why a new configuration was not applied. The gateway keeps running the previous one.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The configuration could not be compiled.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A worker could not build the new filter chains.
    #[error("{0}")]
    Filters(String),
    /// A listener's certificate could not be loaded again.
    #[error("listener {listener}: TLS: {source}")]
    Tls {
        /// Listener name.
        listener: String,
        /// What is wrong with the certificate or key.
        #[source]
        source: tls::TlsError,
    },
    /// The gateway is stopping.
    #[error("the gateway is shutting down")]
    Stopping,
}

/// Hands new configurations to the running workers. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Reconfigure {
    workers: Arc<[mpsc::UnboundedSender<Control>]>,
    health: Arc<health::Health>,
    /// The committed snapshot, for the health checker.
    committed: Arc<watch::Sender<Arc<Snapshot>>>,
    /// The listeners, in configuration order: a reload renews their certificates.
    listeners: Arc<[Arc<ListenerCtx>]>,
}

impl std::fmt::Debug for Reconfigure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconfigure")
            .field("workers", &self.workers.len())
            .finish()
    }
}

/// One endpoint's health as the admin API shows it.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    /// `host:port`.
    pub address: String,
    /// In rotation now.
    pub healthy: bool,
    /// Why not, if not.
    pub reason: Option<&'static str>,
}

impl Reconfigure {
    /// Health of every endpoint of the committed configuration, by cluster name.
    pub fn health(&self) -> Vec<(String, Vec<EndpointHealth>)> {
        let snapshot = self.committed.borrow().clone();
        let now = self.health.now_ms();
        snapshot
            .clusters
            .iter()
            .map(|c| {
                let endpoints = c
                    .endpoints
                    .iter()
                    .map(|e| {
                        let healthy = e.state.available(now);
                        EndpointHealth {
                            address: e.authority.to_string(),
                            healthy,
                            reason: (!healthy).then(|| e.state.reason(now).as_str()),
                        }
                    })
                    .collect();
                (c.name.to_string(), endpoints)
            })
            .collect()
    }

    /// Replaces the routing snapshot and filter chains on every worker, or on none.
    ///
    /// Every worker first builds the new generation on its own thread (instantiating its
    /// filter VMs) while it keeps serving the current one; only when all of them succeeded is
    /// the switch committed, and this returns once every worker has switched. Requests that
    /// started earlier finish on the generation they started with; its VMs are dropped with
    /// its last request. `generation` must increase with every call.
    pub async fn apply(
        &self,
        config: &Config,
        generation: u64,
        filters: Option<Arc<dyn ChainBuilder>>,
    ) -> Result<(), ApplyError> {
        let snapshot = Arc::new(Snapshot::build(config, generation, &self.health)?);
        // Certificates are read again (a renewed file under the same path), before anything is
        // switched, so that a file that cannot be used fails the whole reload.
        let certificates = config
            .listeners
            .iter()
            .map(|l| {
                tls::acceptor(l).map_err(|source| ApplyError::Tls {
                    listener: l.name.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut replies = Vec::with_capacity(self.workers.len());
        for w in self.workers.iter() {
            let (reply, answer) = oneshot::channel();
            w.send(Control::Prepare {
                snapshot: snapshot.clone(),
                filters: filters.clone(),
                reply,
            })
            .map_err(|_| ApplyError::Stopping)?;
            replies.push(answer);
        }
        let mut failure = None;
        for answer in replies {
            match answer.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(ApplyError::Filters(e))),
                Err(_) => failure = failure.or(Some(ApplyError::Stopping)),
            }
        }
        if let Some(e) = failure {
            for w in self.workers.iter() {
                let _ = w.send(Control::Abort { generation });
            }
            return Err(e);
        }
        let mut done = Vec::with_capacity(self.workers.len());
        for w in self.workers.iter() {
            let (reply, answer) = oneshot::channel();
            if w.send(Control::Commit { generation, reply }).is_ok() {
                done.push(answer);
            }
        }
        for answer in done {
            let _ = answer.await;
        }
        // A reload never changes the listeners themselves (that takes a restart), so they
        // line up with the configuration's; only their TLS settings are renewed.
        for (ctx, acceptor) in self.listeners.iter().zip(certificates) {
            if let (Some(slot), Some(acceptor)) = (&ctx.tls, acceptor) {
                *slot.write() = acceptor;
            }
        }
        self.health.retain(&snapshot);
        self.committed.send_replace(snapshot);
        Ok(())
    }
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    reconfigure: Reconfigure,
    phase: watch::Sender<Phase>,
    threads: Vec<JoinHandle<()>>,
    addrs: Vec<(String, SocketAddr)>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listeners", &self.addrs)
            .finish()
    }
}

/// Default worker count: one per CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

impl Gateway {
    /// Binds all listeners and starts the workers on configuration generation 1. `config` must
    /// have passed validation; `filters` builds each worker's filter chains (one per route, in
    /// route order).
    pub fn start(
        config: &Config,
        metrics: Metrics,
        filters: Option<Arc<dyn ChainBuilder>>,
        tracer: Option<Arc<Tracer>>,
    ) -> Result<Self, StartError> {
        let workers = config.workers.unwrap_or_else(default_workers).max(1);
        let health = Arc::new(health::Health::default());
        let snapshot = Arc::new(Snapshot::build(config, 1, &health)?);
        let shared = Arc::new(Shared {
            metrics,
            tracer,
            health: health.clone(),
            in_flight: per_worker::PerWorker::new(workers),
            connections: AtomicUsize::new(0),
            connection_ids: std::sync::atomic::AtomicU64::new(0),
            draining: AtomicBool::new(false),
            closed: Notify::new(),
            clock: quanta::Clock::new(),
        });

        // sockets[w] = this worker's socket for each listener.
        let mut sockets: Vec<Vec<(Arc<ListenerCtx>, std::net::TcpListener)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        let mut listener_ctxs = Vec::with_capacity(config.listeners.len());
        for l in &config.listeners {
            let bind_err = |source| StartError::Bind {
                listener: l.name.clone(),
                address: l.address.clone(),
                source,
            };
            let mut addr: SocketAddr = l
                .address
                .parse()
                .map_err(|e| bind_err(std::io::Error::other(e)))?;
            let tls = tls::acceptor(l)
                .map_err(|source| StartError::Tls {
                    listener: l.name.clone(),
                    source,
                })?
                .map(parking_lot::RwLock::new);
            let ctx = Arc::new(ListenerCtx {
                name: l.name.as_str().into(),
                limits: l.limits.clone(),
                connections: AtomicUsize::new(0),
                scheme: if tls.is_some() { "https" } else { "http" },
                tls,
                forward_client_cert: l.forward_client_cert,
                client_cert_details: l.client_cert_details.as_slice().into(),
                paths: l.path_normalization.clone(),
                allow_chunked_length: l.allow_chunked_length,
                http2_extended_connect: l.http2_extended_connect,
                proxy_protocol: l.proxy_protocol,
                proxy_header: if l.allow_requests_without_proxy_protocol {
                    proxy_header::Expect::Optional
                } else {
                    proxy_header::Expect::Required
                },
            });
            for per_worker in sockets.iter_mut() {
                let socket = bind(addr).map_err(bind_err)?;
                // Port 0: every worker must share the port the first bind picked.
                addr = socket.local_addr().map_err(bind_err)?;
                per_worker.push((ctx.clone(), socket));
            }
            addrs.push((l.name.clone(), addr));
            listener_ctxs.push(ctx);
        }

        let (phase, phase_rx) = watch::channel(Phase::Running);
        let mut threads = Vec::with_capacity(workers);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut controls = Vec::with_capacity(workers);
        for (id, listeners) in sockets.into_iter().enumerate() {
            let (control, control_rx) = mpsc::unbounded_channel();
            controls.push(control);
            let (shared, phase_rx, first, ready) = (
                shared.clone(),
                phase_rx.clone(),
                (snapshot.clone(), filters.clone()),
                ready_tx.clone(),
            );
            let handle = std::thread::Builder::new()
                .name(format!("rustygate-worker-{id}"))
                .spawn(move || {
                    if let Err(e) =
                        worker::run(id, shared, listeners, phase_rx, first, control_rx, ready)
                    {
                        tracing::error!(worker = id, error = %e, "worker failed");
                    }
                })
                .map_err(StartError::Thread)?;
            threads.push(handle);
        }
        drop(ready_tx);
        let (committed, snapshots) = watch::channel(snapshot.clone());
        threads.push(
            checker::start(shared.clone(), snapshots, phase_rx.clone())
                .map_err(StartError::Thread)?,
        );
        for _ in 0..workers {
            let result = ready_rx
                .recv()
                .unwrap_or_else(|_| Err("a worker exited during start-up".into()));
            if let Err(e) = result {
                let _ = phase.send(Phase::Stopped);
                return Err(StartError::Filters(e));
            }
        }
        tracing::info!(workers, listeners = ?addrs, "gateway started");
        Ok(Gateway {
            shared,
            reconfigure: Reconfigure {
                workers: controls.into(),
                health,
                committed: Arc::new(committed),
                listeners: listener_ctxs.into(),
            },
            phase,
            threads,
            addrs,
        })
    }

    /// The bound address of listener `name` (useful with port 0).
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// All listeners' bound addresses, in config order.
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// Requests currently in flight.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.total()
    }

    /// A handle that applies new configurations (hot reload).
    pub fn reconfigure(&self) -> Reconfigure {
        self.reconfigure.clone()
    }

    /// A readiness handle for the admin listener.
    pub fn readiness(&self) -> Readiness {
        Readiness(self.shared.clone())
    }

    /// Stops accepting, lets open connections finish their in-flight requests for up to
    /// `grace`, then stops the workers. Call from within a tokio runtime.
    pub async fn shutdown(self, grace: Duration) -> DrainReport {
        let start = Instant::now();
        self.shared.draining.store(true, Ordering::SeqCst);
        let in_flight_at_start = self.in_flight();
        tracing::info!(
            in_flight = in_flight_at_start,
            grace_ms = grace.as_millis() as u64,
            "shutting down gracefully"
        );
        let _ = self.phase.send(Phase::Draining);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.shared.closed.notified();
            if self.shared.connections.load(Ordering::SeqCst) == 0 {
                break;
            }
            // Connection counters are also polled, in case a close raced the registration above.
            let tick = tokio::time::sleep(Duration::from_millis(50));
            tokio::select! {
                _ = notified => {}
                _ = tick => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let abandoned = self.in_flight();
        let _ = self.phase.send(Phase::Stopped);
        for t in self.threads {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let report = DrainReport {
            in_flight_at_start,
            abandoned,
            elapsed: start.elapsed(),
        };
        tracing::info!(
            drained = report.drained(),
            abandoned = report.abandoned,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "shutdown complete"
        );
        report
    }
}
