//! The log subscriber. Lines are written by a background thread (tracing-appender's
//! non-blocking writer) so a slow stdout never stalls a worker; the returned guard flushes
//! what is queued when the process ends.

use rustygate_config::{LogFormat, Logging};
use tracing_subscriber::EnvFilter;

/// Keeps the background log writer alive; drop it last so that queued lines are flushed.
#[must_use = "dropping the guard stops log output"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// The logging configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `logging.level` is not a valid filter.
    #[error("logging.level: invalid filter {level:?}: {source}")]
    Filter {
        /// The configured filter.
        level: String,
        /// Parser error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A subscriber was already installed in this process.
    #[error("a log subscriber is already installed")]
    AlreadySet,
}

/// Installs the process's log subscriber. The binary calls this once at start-up; the
/// subscriber is process-wide because `tracing` dispatches through one global.
/// `RUST_LOG`, when set, overrides `logging.level`.
pub fn init_logging(cfg: &Logging) -> Result<LogGuard, LoggingError> {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.level.clone());
    let filter =
        EnvFilter::try_new(&level).map_err(|source| LoggingError::Filter { level, source })?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match cfg.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder.with_ansi(false).try_init(),
    };
    result.map_err(|_| LoggingError::AlreadySet)?;
    Ok(LogGuard { _writer: guard })
}

/// Checks `cfg.level` without installing anything (used by `rustygate validate`).
pub fn check_level(cfg: &Logging) -> Result<(), LoggingError> {
    EnvFilter::try_new(&cfg.level)
        .map(drop)
        .map_err(|source| LoggingError::Filter {
            level: cfg.level.clone(),
            source,
        })
}
