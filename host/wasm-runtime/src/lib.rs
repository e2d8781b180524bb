//! The only place RustyGate configures wasmtime.
//!
//! - One [`Runtime`] (one `Engine`) per process: Cranelift, the pooling allocator, and epoch
//!   interruption for CPU deadlines.
//! - A background ticker advances the engine's epoch every [`EPOCH_TICK`]; a store's deadline
//!   of N ticks therefore bounds one guest call to about N × tick of wall-clock time, which on a
//!   worker that does nothing else while the call runs is CPU time.
//! - Modules are compiled once and cached on disk by the SHA-256 of their bytes (and of the
//!   engine's configuration, which wasmtime checks on load), so a restart does not recompile a
//!   2 MB Go filter.
//! - [`StoreLimits`](wasmtime::StoreLimits) cap each store's linear memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

pub use wasmtime;

/// Resolution of CPU deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Largest linear memory any store may have (per-store limits are set lower).
    pub max_memory_bytes: usize,
    /// Instance slots in the pooling allocator; `0` uses on-demand allocation.
    pub pool_slots: u32,
    /// Where compiled modules are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Lays memory out so that the process runs under valgrind (set by `RUSTYGATE_VALGRIND`;
    /// `tests/bench/instructions.sh` counts instructions per request that way): no instance
    /// pool, whose reservation valgrind cannot map. Each memory keeps its own guarded
    /// reservation, so guests run the code they run in production (bounds checks left to the
    /// guard pages). Wasmtime's traps are then signals, which valgrind may not hand back as
    /// wasmtime expects: the benchmarks' filters never trap. Not for serving.
    pub valgrind_compatible: bool,
    /// Writes `/tmp/perf-<pid>.map` naming the compiled guest functions (set by
    /// `RUSTYGATE_PERF_MAP`), so that `perf report` and callgrind profiles can attribute time
    /// inside filters to their functions.
    pub perf_map: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 256 << 20,
            pool_slots: 64,
            cache_dir: default_cache_dir(),
            valgrind_compatible: std::env::var_os("RUSTYGATE_VALGRIND").is_some(),
            perf_map: std::env::var_os("RUSTYGATE_PERF_MAP").is_some(),
        }
    }
}

/// `$XDG_CACHE_HOME/rustygate/modules`, or `$HOME/.cache/rustygate/modules`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rustygate").join("modules"))
}

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid module for this engine.
    #[error("{path}: not a valid WebAssembly module: {reason}")]
    Compile {
        /// File.
        path: String,
        /// wasmtime's explanation.
        reason: String,
    },
}

/// A compiled module and its identity.
#[derive(Clone)]
pub struct LoadedModule {
    /// The compiled module (cheap to clone, shareable across threads).
    pub module: Module,
    /// Hex SHA-256 of the `.wasm` bytes.
    pub sha256: String,
    /// Whether it came from the on-disk cache.
    pub from_cache: bool,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("sha256", &self.sha256)
            .finish()
    }
}

/// How many modules that are no longer configured stay compiled in memory, most recently
/// used first. Besides making a rollback instant, this matters for memory: every fresh load
/// of a module costs a little that wasmtime does not give back (about 1 KiB measured), so a
/// flip-flop between versions must not reload them each time.
pub const KEEP_UNUSED: usize = 8;

/// A compiled component and its origin.
pub struct LoadedComponent {
    /// The compiled component (cheap to clone, shareable across threads).
    pub component: wasmtime::component::Component,
    /// Hex SHA-256 of the `.wasm` bytes.
    pub sha256: String,
    /// Whether it came from memory or the on-disk cache rather than being compiled.
    pub from_cache: bool,
}

#[derive(Default)]
struct Loaded {
    modules: HashMap<String, (Module, u64)>,
    components: HashMap<String, (wasmtime::component::Component, u64)>,
    clock: u64,
}

impl Loaded {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

/// The process's WebAssembly engine and its epoch ticker.
pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    /// Compiled modules and components by SHA-256, with when they were last in use: a reload
    /// that keeps or returns to one reuses its code instead of compiling or loading another
    /// copy. Trimmed with [`Runtime::retain`].
    loaded: Mutex<Loaded>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.cache_dir)
            .finish()
    }
}

impl Runtime {
    /// Builds the engine and starts the epoch ticker.
    pub fn new(cfg: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.max_wasm_stack(512 * 1024);
        if cfg.perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if cfg.pool_slots > 0 && !cfg.valgrind_compatible {
            let mut pool = PoolingAllocationConfig::default();
            pool.total_core_instances(cfg.pool_slots)
                .total_memories(cfg.pool_slots)
                .total_tables(cfg.pool_slots)
                .max_memory_size(cfg.max_memory_bytes);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rustygate-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Self {
            engine,
            cache_dir: cfg.cache_dir.clone(),
            loaded: Mutex::default(),
            stop,
            ticker: Some(ticker),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Epoch ticks that make up `d` (at least one).
    pub fn ticks(d: Duration) -> u64 {
        (d.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
    }

    /// Reads and compiles `path`, or loads its compiled form from the cache.
    pub fn load_file(&self, path: &Path) -> Result<LoadedModule, RuntimeError> {
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.load_bytes(&path.display().to_string(), &bytes)
    }

    /// Compiles `bytes` (named `name` in errors), using the cache when possible.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<LoadedModule, RuntimeError> {
        let (module, sha256, from_cache) = self.load_artifact::<Module>(name, bytes)?;
        Ok(LoadedModule {
            module,
            sha256,
            from_cache,
        })
    }

    /// Marks `keep` (SHA-256s) as in use and forgets all but the [`KEEP_UNUSED`] most recently
    /// used of the other modules. Instances still running a forgotten module keep its code
    /// alive until they are dropped.
    pub fn retain<'a>(&self, keep: impl IntoIterator<Item = &'a str>) {
        let mut loaded = self.loaded.lock();
        let now = loaded.tick();
        let keep: std::collections::HashSet<&str> = keep.into_iter().collect();
        let Loaded {
            modules,
            components,
            ..
        } = &mut *loaded;
        let uses = modules
            .iter_mut()
            .map(|(sha, (_, used))| (sha, used))
            .chain(components.iter_mut().map(|(sha, (_, used))| (sha, used)));
        let mut unused: Vec<(u64, String)> = Vec::new();
        for (sha, used) in uses {
            if keep.contains(sha.as_str()) {
                *used = now;
            } else {
                unused.push((*used, sha.clone()));
            }
        }
        unused.sort_unstable_by(|a, b| b.cmp(a));
        for (_, sha) in unused.into_iter().skip(KEEP_UNUSED) {
            modules.remove(&sha);
            components.remove(&sha);
        }
    }

    /// `bytes` compiled: from memory when this process has them, else from the disk cache,
    /// else compiled (and stored in both). Also says whether it came from a cache.
    fn load_artifact<T: Artifact>(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<(T, String, bool), RuntimeError> {
        let sha256: String = Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some((found, _)) = T::memo(&mut self.loaded.lock()).get(&sha256) {
            return Ok((found.clone(), sha256, true));
        }
        let remember = |artifact: &T| {
            let mut loaded = self.loaded.lock();
            let now = loaded.tick();
            T::memo(&mut loaded).insert(sha256.clone(), (artifact.clone(), now));
        };
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}.{}", T::SUFFIX)));
        if let Some(file) = cached.as_ref().filter(|f| f.exists()) {
            // SAFETY: the file was written below from an artifact this same engine
            // configuration compiled; wasmtime verifies the artifact's engine/version header
            // and refuses mismatches. The directory is private to the gateway's user.
            #[allow(unsafe_code)]
            match unsafe { T::deserialize_file(&self.engine, file) } {
                Ok(artifact) => {
                    remember(&artifact);
                    return Ok((artifact, sha256, true));
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %format!("{e:#}"), "ignoring unusable cached code")
                }
            }
        }
        let artifact = T::compile(&self.engine, bytes).map_err(|e| RuntimeError::Compile {
            path: name.to_owned(),
            reason: format!("{e:#}"),
        })?;
        if let Some(file) = cached {
            let stored = artifact
                .serialize()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
                .and_then(|bytes| write_atomically(&file, &bytes));
            if let Err(e) = stored {
                tracing::warn!(file = %file.display(), error = %e, "cannot cache compiled code");
            }
        }
        remember(&artifact);
        Ok((artifact, sha256, false))
    }
}

impl Runtime {
    /// Compiles a component (a WIT balancer or filter), using the caches as for modules.
    pub fn load_component(&self, path: &Path) -> Result<LoadedComponent, RuntimeError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RuntimeError::Read {
            path: name.clone(),
            source,
        })?;
        self.load_component_bytes(&name, &bytes)
    }

    /// Compiles the component `bytes` (named `name` in errors); as for modules, the same
    /// bytes are compiled once per process and, with a cache directory, once per machine.
    pub fn load_component_bytes(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> Result<LoadedComponent, RuntimeError> {
        let (component, sha256, from_cache) = self.load_artifact(name, bytes)?;
        Ok(LoadedComponent {
            component,
            sha256,
            from_cache,
        })
    }
}

/// Compiled code the runtime caches: a core module or a component.
trait Artifact: Clone + Sized {
    /// The end of its file name in the disk cache.
    const SUFFIX: &'static str;
    /// Where this process keeps the ones it has.
    fn memo(loaded: &mut Loaded) -> &mut HashMap<String, (Self, u64)>;
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self>;
    fn serialize(&self) -> wasmtime::Result<Vec<u8>>;
    /// # Safety
    /// `file` must hold what [`Artifact::serialize`] wrote for this engine configuration.
    #[allow(unsafe_code)]
    unsafe fn deserialize_file(engine: &Engine, file: &Path) -> wasmtime::Result<Self>;
}

impl Artifact for Module {
    const SUFFIX: &'static str = "cwasm";
    fn memo(loaded: &mut Loaded) -> &mut HashMap<String, (Self, u64)> {
        &mut loaded.modules
    }
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Module::new(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        Module::serialize(self)
    }
    #[allow(unsafe_code)]
    unsafe fn deserialize_file(engine: &Engine, file: &Path) -> wasmtime::Result<Self> {
        // SAFETY: passed on to the caller.
        unsafe { Module::deserialize_file(engine, file) }
    }
}

impl Artifact for wasmtime::component::Component {
    const SUFFIX: &'static str = "component.cwasm";
    fn memo(loaded: &mut Loaded) -> &mut HashMap<String, (Self, u64)> {
        &mut loaded.components
    }
    fn compile(engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Self> {
        Self::new(engine, bytes)
    }
    fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        wasmtime::component::Component::serialize(self)
    }
    #[allow(unsafe_code)]
    unsafe fn deserialize_file(engine: &Engine, file: &Path) -> wasmtime::Result<Self> {
        // SAFETY: passed on to the caller.
        unsafe { Self::deserialize_file(engine, file) }
    }
}

/// Whether the file at `path` holds a WebAssembly component (binary layer 1) rather than a
/// core module: the header tells them apart before anything is compiled.
pub fn is_component(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut file = std::fs::File::open(path)?;
    let mut read = 0;
    while read < head.len() {
        match file.read(&mut head[read..])? {
            0 => break,
            n => read += n,
        }
    }
    Ok(read == head.len() && head[..4] == *b"\0asm" && head[6..8] == [1, 0])
}

/// CPU time the calling thread has used. Epoch ticks are wall-clock time; callers compare
/// this clock before deciding a guest has really used up its CPU budget, so a worker that the
/// OS simply did not schedule is not mistaken for a runaway filter.
#[allow(unsafe_code)]
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and CLOCK_THREAD_CPUTIME_ID is supported on
    // every Linux and BSD this builds for; on failure the fields stay zero.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Per-call CPU budget enforced through epoch ticks, as a wasmtime epoch-deadline callback
/// would drive it: arm with [`CpuBudget::arm`] before each guest call (deadline: one tick),
/// and let [`CpuBudget::on_tick`] decide at each tick that passes during the call. The CPU
/// clock is read only at ticks, so short calls cost nothing extra.
#[derive(Debug, Clone, Copy)]
pub struct CpuBudget {
    limit: Duration,
    /// CPU clock at the first tick during the current call.
    first_tick_cpu: Option<Duration>,
}

impl CpuBudget {
    /// A budget of `limit` CPU per call.
    pub fn new(limit: Duration) -> Self {
        Self {
            limit,
            first_tick_cpu: None,
        }
    }

    /// Starts a call with `limit` of CPU. The store's epoch deadline must be set to 1 tick.
    pub fn arm(&mut self, limit: Duration) {
        self.limit = limit;
        self.first_tick_cpu = None;
    }

    /// Called at a tick during the call: `None` to stop the guest, else the ticks until the
    /// next check. CPU used before the first tick is at most one tick, counted against the
    /// budget.
    pub fn on_tick(&mut self) -> Option<u64> {
        let now = thread_cpu_time();
        let start = *self.first_tick_cpu.get_or_insert(now);
        let used = now.saturating_sub(start) + EPOCH_TICK;
        if used >= self.limit {
            None
        } else {
            Some(Runtime::ticks(self.limit - used))
        }
    }
}

/// Write then rename, so a concurrent reader never sees half a file.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, file)
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(dir: &Path) -> Runtime {
        Runtime::new(&RuntimeConfig {
            cache_dir: Some(dir.to_path_buf()),
            pool_slots: 4,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn second_load_comes_from_the_cache() {
        let dir = std::env::temp_dir().join(format!("rg-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let wasm = wat::parse_str("(module (func (export \"f\")))").unwrap();
        let first = runtime(&dir).load_bytes("f.wasm", &wasm).unwrap();
        assert!(!first.from_cache);
        // A new process (runtime) finds the compiled code on disk.
        let second = runtime(&dir).load_bytes("f.wasm", &wasm).unwrap();
        assert!(second.from_cache);
        assert_eq!(first.sha256, second.sha256);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reloading_a_module_reuses_its_code_until_pushed_out() {
        let rt = Runtime::new(&RuntimeConfig {
            cache_dir: None,
            pool_slots: 4,
            ..Default::default()
        })
        .unwrap();
        let wasm = wat::parse_str("(module (func (export \"g\")))").unwrap();
        let first = rt.load_bytes("g.wasm", &wasm).unwrap();
        assert!(!first.from_cache);
        let again = rt.load_bytes("g.wasm", &wasm).unwrap();
        assert!(
            again.from_cache,
            "the second load of the same bytes compiled again"
        );
        // No longer configured, but recent: kept.
        rt.retain([]);
        assert!(rt.load_bytes("g.wasm", &wasm).unwrap().from_cache);
        // Pushed out by more recent modules.
        for i in 0..KEEP_UNUSED {
            let other = wat::parse_str(format!("(module (func (export \"f{i}\")))")).unwrap();
            rt.load_bytes("other.wasm", &other).unwrap();
            rt.retain([]);
        }
        assert!(!rt.load_bytes("g.wasm", &wasm).unwrap().from_cache);
    }

    #[test]
    fn components_are_compiled_once_per_process_and_cached_on_disk() {
        let dir = std::env::temp_dir().join(format!("rg-ccache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bytes = wat::parse_str("(component (core module))").unwrap();
        let rt = runtime(&dir);
        let first = rt.load_component_bytes("c.wasm", &bytes).unwrap();
        assert!(!first.from_cache);
        assert!(
            rt.load_component_bytes("c.wasm", &bytes)
                .unwrap()
                .from_cache
        );
        // A new process finds the compiled code on disk.
        let other = runtime(&dir)
            .load_component_bytes("c.wasm", &bytes)
            .unwrap();
        assert!(other.from_cache);
        assert_eq!(first.sha256, other.sha256);
        // No longer configured and pushed out by more recent ones: forgotten in memory (the
        // disk copy stays).
        let rt = Runtime::new(&RuntimeConfig {
            cache_dir: None,
            pool_slots: 4,
            ..Default::default()
        })
        .unwrap();
        rt.load_component_bytes("c.wasm", &bytes).unwrap();
        for i in 0..KEEP_UNUSED {
            let m = wat::parse_str(format!("(module (func (export \"f{i}\")))")).unwrap();
            rt.load_bytes("m.wasm", &m).unwrap();
            rt.retain([]);
        }
        assert!(
            !rt.load_component_bytes("c.wasm", &bytes)
                .unwrap()
                .from_cache
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cpu_budget_counts_cpu_not_wall_time() {
        // Idle for 5× the budget in wall time: a thread that was not scheduled keeps running.
        let mut idle = CpuBudget::new(Duration::from_millis(10));
        for _ in 0..50 {
            std::thread::sleep(EPOCH_TICK);
            assert!(idle.on_tick().is_some(), "stopped a guest that used no CPU");
        }
        // Spinning: stopped once the budget is really spent.
        let mut busy = CpuBudget::new(Duration::from_millis(10));
        assert!(busy.on_tick().is_some());
        let start = thread_cpu_time();
        let stopped = loop {
            let spin = std::time::Instant::now();
            while spin.elapsed() < EPOCH_TICK {
                std::hint::black_box(0u64);
            }
            if busy.on_tick().is_none() {
                break thread_cpu_time() - start;
            }
            assert!(
                thread_cpu_time() - start < Duration::from_secs(1),
                "never stopped"
            );
        };
        assert!(
            stopped >= Duration::from_millis(8),
            "stopped after only {stopped:?} of CPU"
        );
    }

    #[test]
    fn invalid_bytes_are_refused_with_the_file_name() {
        let dir = std::env::temp_dir().join(format!("rg-cache-test-bad-{}", std::process::id()));
        let rt = runtime(&dir);
        let err = rt
            .load_bytes("broken.wasm", b"\0asm\x01\0\0\0\x01")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("broken.wasm: not a valid WebAssembly module"),
            "{err}"
        );
    }
}
