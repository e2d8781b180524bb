//! What bounds every component call, balancers and filters alike: a linear-memory cap and a
//! CPU budget checked at each epoch tick, and the reading of a failed call as one of the
//! three ways a guest fails (memory, CPU, trap). The guard also counts its instance and that
//! instance's memory in `rustygate_wasm_vms` and `rustygate_wasm_memory_bytes`, as proxy-wasm
//! VMs are counted.

use std::time::Duration;

use rustygate_telemetry::WasmGauges;
use rustygate_wasm_runtime::CpuBudget;
use wasmtime::{ResourceLimiter, Store, Trap};

/// The limits a store's state carries.
pub(crate) struct Guard {
    memory: MemoryCap,
    cpu: CpuBudget,
}

impl Guard {
    pub(crate) fn new(max_memory: usize, cpu_per_call: Duration, gauges: &WasmGauges) -> Self {
        Self {
            memory: MemoryCap {
                max: max_memory,
                denied: false,
                live: gauges.live(),
            },
            cpu: CpuBudget::new(cpu_per_call),
        }
    }
}

/// A store state with a [`Guard`].
pub(crate) trait Guarded: 'static {
    fn guard(&self) -> &Guard;
    fn guard_mut(&mut self) -> &mut Guard;
}

/// A store for `state` whose memory is capped and whose calls stop when their CPU budget is
/// spent; armed with `first_call` of CPU for instantiation.
pub(crate) fn store<T: Guarded>(
    engine: &wasmtime::Engine,
    state: T,
    first_call: Duration,
) -> Store<T> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.guard_mut().memory);
    store.epoch_deadline_callback(|mut ctx| match ctx.data_mut().guard_mut().cpu.on_tick() {
        Some(ticks) => Ok(wasmtime::UpdateDeadline::Continue(ticks)),
        None => Err(Trap::Interrupt.into()),
    });
    arm(&mut store, first_call);
    store
}

/// Gives the next call `cpu` of CPU.
pub(crate) fn arm<T: Guarded>(store: &mut Store<T>, cpu: Duration) {
    store.data_mut().guard_mut().cpu.arm(cpu);
    store.set_epoch_deadline(1);
}

/// How a call failed.
pub(crate) enum Failure {
    /// The memory cap refused a growth (the guest then trapped on it).
    Memory,
    /// The CPU budget ran out.
    Deadline,
    /// Any other trap, with wasmtime's account (the guest's frames when it has names).
    Trap(String),
}

pub(crate) fn failure<T: Guarded>(store: &Store<T>, e: wasmtime::Error) -> Failure {
    if store.data().guard().memory.denied {
        Failure::Memory
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        Failure::Deadline
    } else {
        Failure::Trap(format!("{e:#}"))
    }
}

/// A store's linear-memory cap (per memory: a component may have several); `denied` tells a
/// memory failure from other traps.
struct MemoryCap {
    max: usize,
    denied: bool,
    live: rustygate_telemetry::LiveInstance,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max;
        self.denied |= !ok;
        if ok {
            self.live.grew(desired.saturating_sub(current));
        }
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
