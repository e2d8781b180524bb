//! The `rustygate` binary: the composition root. It reads the configuration, installs logging,
//! starts the data plane and the admin listener, and turns signals into a graceful drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rustygate_config::Config;
use rustygate_filter_api::ChainBuilder;
use rustygate_proxy::{Gateway, Snapshot};
use rustygate_proxy_wasm::ProxyWasm;
use rustygate_telemetry::Metrics;
use rustygate_wasm_runtime::{Runtime, RuntimeConfig};

// mimalloc's per-thread heaps suit thread-per-core workers: allocation and free of a request's
// buffers stay on the worker's own heap, and it measured faster than glibc malloc on the load
// benchmark (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rustygate",
    version,
    about = "A WASM-first programmable API gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway.
    Run {
        /// Configuration file (YAML).
        #[arg(short, long, default_value = "config/default.yaml")]
        config: PathBuf,
    },
    /// Check a configuration file and exit: 0 when valid, 1 with the errors otherwise.
    Validate {
        /// Configuration file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print the JSON Schema of the configuration file.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            print!("{}", rustygate_config::json_schema());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Everything `validate` checks, so that `run` cannot fail on a file `validate` accepted
/// (short of a busy port).
fn load(path: &Path) -> anyhow::Result<Config> {
    let config = rustygate_config::load_file(path).map_err(anyhow::Error::msg)?;
    rustygate_telemetry::check_level(&config.logging)?;
    Snapshot::build(&config, 0).with_context(|| format!("{}", path.display()))?;
    Ok(config)
}

/// The WebAssembly engine and the configured filters, compiled and validated on a canary VM.
/// The runtime must live as long as the gateway: it owns the epoch ticker behind CPU deadlines.
struct Filters {
    _runtime: Runtime,
    host: Arc<ProxyWasm>,
}

fn load_filters(
    config: &Config,
    path: &Path,
    metrics: &Metrics,
) -> anyhow::Result<Option<Filters>> {
    if config.filters.is_empty() {
        return Ok(None);
    }
    let workers = config
        .workers
        .unwrap_or_else(rustygate_proxy::default_workers);
    let runtime = Runtime::new(&RuntimeConfig {
        pool_slots: rustygate_proxy_wasm::vm_slots(config, workers),
        max_memory_bytes: config
            .filters
            .iter()
            .map(|f| f.limits.max_memory_bytes)
            .max()
            .unwrap_or(0),
        ..RuntimeConfig::default()
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let host = ProxyWasm::load(config, base, &runtime, metrics.clone())?;
    for m in host.modules() {
        tracing::info!(filter = %m.filter, sha256 = %m.sha256, abi = m.abi.as_str(), from_cache = m.from_cache, "filter loaded");
    }
    Ok(Some(Filters {
        _runtime: runtime,
        host: Arc::new(host),
    }))
}

fn validate(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    load_filters(&config, path, &Metrics::new())?;
    println!(
        "{}: OK ({} listeners, {} clusters, {} routes)",
        path.display(),
        config.listeners.len(),
        config.clusters.len(),
        config.routes.len()
    );
    Ok(())
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let _log_guard = rustygate_telemetry::init_logging(&config.logging)?;
    let metrics = Metrics::new();
    let filters = load_filters(&config, path, &metrics)?;
    let chains = filters
        .as_ref()
        .map(|f| f.host.clone() as Arc<dyn ChainBuilder>);
    let gateway = Gateway::start(&config, metrics.clone(), chains)?;

    // The main thread runs signals and the admin listener; traffic stays on the workers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the main runtime")?;
    rt.block_on(async move {
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = if config.admin.enabled {
            let listener = tokio::net::TcpListener::bind(&config.admin.address)
                .await
                .with_context(|| format!("admin: cannot bind {}", config.admin.address))?;
            tracing::info!(address = %listener.local_addr()?, "admin listening");
            let readiness = gateway.readiness();
            let state = rustygate_admin::AdminState {
                metrics,
                ready: Arc::new(move || readiness.is_ready()),
            };
            Some(tokio::spawn(rustygate_admin::serve(
                listener,
                state,
                async {
                    let _ = admin_stopped.await;
                },
            )))
        } else {
            None
        };

        let signal = wait_for_signal().await?;
        tracing::info!(signal, "stop signal received");
        let report = gateway.shutdown(config.shutdown.grace_period.get()).await;
        let _ = stop_admin.send(());
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if report.abandoned > 0 {
            tracing::warn!(
                abandoned = report.abandoned,
                "grace period ended with requests still in flight"
            );
        }
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
