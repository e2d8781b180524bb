//! The real `rustygate` binary as a child process, for what only a process shows: signals,
//! exit codes, stdout logs and memory use.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::scratch::Scratch;

/// Path to the `rustygate` binary of the same profile as this test, built once per test run.
pub fn gateway_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().unwrap();
            // target/<profile>/deps/<test> → target/<profile>
            let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = std::process::Command::new(cargo);
            cmd.args(["build", "-q", "-p", "rustygate", "-p", "demo-upstream"]);
            // Cargo gives this test its package's variables; passed on, they would make
            // build scripts that watch them (ring's watches CARGO_MANIFEST_DIR) rerun, and
            // everything above them rebuild, each time a test and a plain build alternate.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if key == "OUT_DIR"
                    || [
                        "CARGO_MANIFEST_",
                        "CARGO_PKG_",
                        "CARGO_CRATE_",
                        "CARGO_PRIMARY_PACKAGE",
                    ]
                    .iter()
                    .any(|p| key.starts_with(p))
                {
                    cmd.env_remove(&*key);
                }
            }
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("cargo runs");
            assert!(status.success(), "building the rustygate binary failed");
            profile_dir.join("rustygate")
        })
        .clone()
}

/// `rustygate validate --config <config>`, run to its end.
pub fn validate(config: impl AsRef<std::path::Path>) -> std::process::Output {
    std::process::Command::new(gateway_bin())
        .args(["validate", "--config"])
        .arg(config.as_ref())
        .output()
        .unwrap()
}

/// A running `rustygate run` process with its stdout collected line by line.
pub struct GatewayProcess {
    /// The child.
    pub child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every stdout line read so far.
    pub log: Vec<String>,
    /// Where [`GatewayProcess::start`] wrote the configuration.
    files: Option<Scratch>,
}

impl GatewayProcess {
    /// Writes `yaml` to a temp file and starts `rustygate run --config` on it.
    pub async fn start(yaml: &str) -> GatewayProcess {
        let files = Scratch::new("test");
        let path = files.join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut gw = Self::start_file(&path, &[]).await;
        gw.files = Some(files);
        gw
    }

    /// Starts `rustygate run --config path` with extra environment variables.
    pub async fn start_file(path: &std::path::Path, env: &[(&str, String)]) -> GatewayProcess {
        let mut child = Command::new(gateway_bin())
            .args(["run", "--config"])
            .arg(path)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("rustygate starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        GatewayProcess {
            child,
            lines: rx,
            log: Vec::new(),
            files: None,
        }
    }

    /// Waits for a log line containing `needle` (up to `timeout`) and returns it.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_since(0, needle, timeout).await
    }

    /// A position in the log: every line printed so far comes before it.
    pub fn mark(&mut self) -> usize {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        self.log.len()
    }

    /// Like [`GatewayProcess::wait_for_log`], for lines after `mark`.
    pub async fn wait_for_log_since(
        &mut self,
        mark: usize,
        needle: &str,
        timeout: Duration,
    ) -> String {
        if let Some(l) = self.log.iter().skip(mark).find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                _ => panic!(
                    "no log line containing {needle:?} within {timeout:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Resident set size of the process, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id().expect("running"), "VmRSS:")
    }

    /// Peak resident set size of the process, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id().expect("running"), "VmHWM:")
    }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
}

/// A free loopback port (bound then released; good enough for a child process's listener).
///
/// Ports come from 20000-31999, below the kernel's ephemeral range (32768 and up on Linux),
/// where `bind(0)` picks the ports of upstreams and clients started meanwhile by tests running
/// in parallel; and each is handed out once per test process. So a port taken here and bound
/// a moment later by a gateway cannot have been given to anyone else in between.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Test binaries run one after another; each starts somewhere else in the range.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7_919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}-{}", FIRST + SPAN - 1)
}
