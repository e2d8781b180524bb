//! The `rustygate` binary: the composition root. It reads the configuration, installs logging,
//! starts the data plane and the admin listener, and turns signals into a graceful drain.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rustygate_config::Config;
use rustygate_proxy::{Gateway, Snapshot};
use rustygate_telemetry::Metrics;

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

fn validate(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
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
    let gateway = Gateway::start(&config, metrics.clone())?;

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
