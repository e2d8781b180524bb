//! hyper's executor for a worker: spawns onto the worker's own `LocalSet`, so connection
//! tasks, and everything they hold, never leave the worker thread.

use std::future::Future;

/// Spawns hyper's background futures with `tokio::task::spawn_local`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}
