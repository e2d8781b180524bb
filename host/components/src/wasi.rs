//! The WASI a balancer component gets: clocks and random numbers, answered synchronously on
//! the worker thread. Everything else the Rust standard library imports (stdio, filesystem,
//! environment, exit) is linked as a trap: a balancer has no business there, and a trap is a
//! clean failure that the proxy falls back from. Components log through `rustygate:gateway/log`
//! (the SDK routes panic messages there too).
//!
//! wasmtime-wasi is not used because its synchronous bindings drive streams through a tokio
//! `block_on`, which cannot run inside the worker's own runtime.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{ComponentType, Linker, Lower};

/// The version of `interface` that `imports` asks for, if it imports it. Components built
/// against any WASI 0.2.x link: the host answers under the exact name imported.
fn imported<'a>(imports: &'a [String], interface: &str) -> Option<&'a str> {
    imports
        .iter()
        .find(|i| i.split_once('@').is_some_and(|(name, _)| name == interface))
        .map(String::as_str)
}

#[derive(ComponentType, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

/// Adds clocks and random, as `imports` (a component's import names) name them, to `linker`.
pub(crate) fn add<T: 'static>(linker: &mut Linker<T>, imports: &[String]) -> wasmtime::Result<()> {
    let origin = Instant::now();
    if let Some(name) = imported(imports, "wasi:clocks/monotonic-clock") {
        let mut mono = linker.instance(name)?;
        mono.func_wrap("now", move |_, (): ()| {
            Ok((origin.elapsed().as_nanos() as u64,))
        })?;
        mono.func_wrap("resolution", |_, (): ()| Ok((1u64,)))?;
    }
    let now = || {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Datetime {
            seconds: d.as_secs(),
            nanoseconds: d.subsec_nanos(),
        }
    };
    if let Some(name) = imported(imports, "wasi:clocks/wall-clock") {
        let mut wall = linker.instance(name)?;
        wall.func_wrap("now", move |_, (): ()| Ok((now(),)))?;
        wall.func_wrap("resolution", |_, (): ()| {
            Ok((Datetime {
                seconds: 0,
                nanoseconds: 1,
            },))
        })?;
    }
    for interface in ["random", "insecure"] {
        let (bytes, u64_fn) = match interface {
            "random" => ("get-random-bytes", "get-random-u64"),
            _ => ("get-insecure-random-bytes", "get-insecure-random-u64"),
        };
        let Some(name) = imported(imports, &format!("wasi:random/{interface}")) else {
            continue;
        };
        let mut random = linker.instance(name)?;
        random.func_wrap(bytes, |_, (len,): (u64,)| {
            let mut buf = vec![0u8; len.min(1 << 20) as usize];
            getrandom::fill(&mut buf).map_err(|e| wasmtime::Error::msg(e.to_string()))?;
            Ok((buf,))
        })?;
        random.func_wrap(u64_fn, |_, (): ()| {
            let v = getrandom::u64().map_err(|e| wasmtime::Error::msg(e.to_string()))?;
            Ok((v,))
        })?;
    }
    if let Some(name) = imported(imports, "wasi:random/insecure-seed") {
        let mut seed = linker.instance(name)?;
        seed.func_wrap("insecure-seed", |_, (): ()| {
            let a = getrandom::u64().map_err(|e| wasmtime::Error::msg(e.to_string()))?;
            let b = getrandom::u64().map_err(|e| wasmtime::Error::msg(e.to_string()))?;
            Ok(((a, b),))
        })?;
    }
    Ok(())
}
