//! The `rustygate` binary: the composition root. It reads the configuration, installs logging,
//! starts the data plane, the control plane (reloads, file watching) and the admin listener,
//! and turns signals into reloads (SIGHUP) or a graceful drain (SIGTERM, SIGINT).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rustygate_proxy::Gateway;
use rustygate_reload::{ControlPlane, Wasm};
use rustygate_telemetry::Metrics;

mod alloc;

#[global_allocator]
static ALLOC: alloc::MiMalloc = alloc::MiMalloc;

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
    /// Write a new filter project: source, Makefile (`make`, `make test`), README, a sample
    /// gateway.yaml and an end-to-end test that runs the filter through a real gateway.
    NewFilter {
        /// Filter name: lower-case letters, digits and '-'.
        name: String,
        /// Language of the filter.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Interface: proxy-wasm (portable to Envoy) or RustyGate's WIT component world.
        #[arg(long, value_enum, default_value = "proxy-wasm")]
        abi: AbiArg,
        /// Directory to create (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Lang {
    Rust,
    Go,
    #[value(alias = "as")]
    Assemblyscript,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AbiArg {
    ProxyWasm,
    Component,
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
        Command::NewFilter {
            name,
            lang,
            abi,
            dir,
        } => new_filter(&name, lang, abi, dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn new_filter(name: &str, lang: Lang, abi: AbiArg, dir: Option<PathBuf>) -> anyhow::Result<()> {
    use rustygate_scaffold::{Abi, Language};
    let language = match lang {
        Lang::Rust => Language::Rust,
        Lang::Go => Language::Go,
        Lang::Assemblyscript => Language::AssemblyScript,
    };
    let abi = match abi {
        AbiArg::ProxyWasm => Abi::ProxyWasm,
        AbiArg::Component => Abi::Component,
    };
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    let project = rustygate_scaffold::create(name, language, abi, &dir)?;
    println!(
        "created {} ({language}, {abi}, {} files)\n\n  cd {}\n  {}          # build the .wasm\n  {}     # run it through RustyGate (set RUSTYGATE=/path/to/rustygate if it is not on PATH)\n\nsee {}/README.md",
        project.dir.display(),
        project.files.len(),
        project.dir.display(),
        project.build,
        project.test,
        project.dir.display(),
    );
    Ok(())
}

fn validate(path: &Path) -> anyhow::Result<()> {
    let loaded = rustygate_reload::load(path, &mut Wasm::new(Metrics::new()))?;
    let config = &loaded.config;
    println!(
        "{}: OK ({} listeners, {} clusters, {} routes, {} filters)",
        path.display(),
        config.listeners.len(),
        config.clusters.len(),
        config.routes.len(),
        config.filters.len()
    );
    Ok(())
}

fn run(path: &Path) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let mut wasm = Wasm::new(metrics.clone());
    // Everything `validate` checks, so `run` cannot fail on a file `validate` accepted (short
    // of a busy port).
    let loaded = rustygate_reload::load(path, &mut wasm)?;
    let _log_guard = rustygate_telemetry::init_logging(&loaded.config.logging)?;
    for m in &loaded.modules {
        tracing::info!(filter = %m.filter, sha256 = %m.sha256, abi = m.abi.as_str(), from_cache = m.from_cache, "filter loaded");
    }
    let tracer = if loaded.config.tracing.enabled {
        let t = Arc::new(rustygate_telemetry::trace::Tracer::new(
            &loaded.config.tracing,
        )?);
        tracing::info!(endpoint = %loaded.config.tracing.endpoint, protocol = ?loaded.config.tracing.protocol, sampling_ratio = loaded.config.tracing.sampling_ratio, "tracing enabled");
        Some(t)
    } else {
        None
    };
    // The main thread runs signals, reloads and the admin listener; traffic stays on the
    // workers.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the main runtime")?;
    // Installed before the listeners open: a stop signal at any moment after that is a
    // graceful stop, never the default kill.
    let mut signals = {
        let _in_runtime = rt.enter();
        Signals::install()?
    };
    // The admin port is taken before any traffic listener opens: a busy admin port stops the
    // start-up before the gateway has accepted a connection it would then drop by exiting.
    let admin_config = loaded.config.admin.clone();
    let admin_listener = if admin_config.enabled {
        let _in_runtime = rt.enter();
        let std_listener = std::net::TcpListener::bind(&admin_config.address)
            .with_context(|| format!("admin: cannot bind {}", admin_config.address))?;
        std_listener.set_nonblocking(true)?;
        Some(tokio::net::TcpListener::from_std(std_listener)?)
    } else {
        None
    };
    let gateway = Gateway::start(
        &loaded.config,
        metrics.clone(),
        loaded.chains(),
        tracer.clone(),
    )?;
    let control = ControlPlane::new(path, &loaded, wasm, gateway.reconfigure(), metrics.clone());
    drop(loaded);

    rt.block_on(async move {
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = if let Some(listener) = admin_listener {
            tracing::info!(address = %listener.local_addr()?, admin_api = admin_config.token.as_deref().is_some_and(|t| !t.is_empty()), "admin listening");
            let readiness = gateway.readiness();
            let state = rustygate_admin::AdminState {
                metrics,
                ready: Arc::new(move || readiness.is_ready()),
                operations: Some(control.admin_api()),
                token: admin_config.token.clone(),
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
        let watcher = tokio::spawn(control.clone().watch());

        let signal = signals.wait_for_stop(&control).await;
        tracing::info!(signal, "stop signal received");
        watcher.abort();
        let grace = control.config().shutdown.grace_period.get();
        let report = gateway.shutdown(grace).await;
        let _ = stop_admin.send(());
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if let Some(t) = &tracer {
            // Whatever is still buffered goes out before the process ends.
            let t = t.clone();
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
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

/// The process's stop and reload signals.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Takes over SIGTERM, SIGINT and SIGHUP. Needs a runtime context.
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT; reloads on every SIGHUP meanwhile.
    async fn wait_for_stop(&mut self, control: &ControlPlane) -> &'static str {
        loop {
            tokio::select! {
                _ = self.term.recv() => return "SIGTERM",
                _ = self.int.recv() => return "SIGINT",
                // The outcome is logged and counted by the reload itself.
                _ = self.hup.recv() => { let _ = control.reload("SIGHUP").await; }
            }
        }
    }
}
