//! How the executor tells the user what it is doing. The CLI decides how to draw it (spinners
//! on a terminal, plain lines in CI); the core only reports events.

use std::time::Duration;

use crate::cluster::Step;

/// Receives progress events. Implementations must be cheap and must not block.
pub trait Progress: Send + Sync {
    /// A step started.
    fn started(&self, step: &Step);
    /// A step finished, after `elapsed`, with an optional short result (e.g. "mode: fallback").
    fn finished(&self, step: &Step, elapsed: Duration, detail: Option<&str>);
    /// A step failed.
    fn failed(&self, step: &Step, elapsed: Duration, error: &crate::Error);
    /// Something the user should know that is not a step (a choice lab made, a warning).
    fn note(&self, message: &str);
    /// Bytes moved so far for a step that copies data (image loading).
    fn bytes(&self, _step: &Step, _done: u64, _total: Option<u64>) {}
}

/// Discards every event.
pub struct Silent;

impl Progress for Silent {
    fn started(&self, _: &Step) {}
    fn finished(&self, _: &Step, _: Duration, _: Option<&str>) {}
    fn failed(&self, _: &Step, _: Duration, _: &crate::Error) {}
    fn note(&self, _: &str) {}
}
