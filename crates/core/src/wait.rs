//! Bounded waits: the one way lab waits for something to happen (an engine to answer, a
//! socket to appear, the registry to serve, the swarm to accept an update). A wait looks,
//! and looks again every so often until what it waits for holds, it learns it never will, or
//! its deadline passes; then it fails with [`Error::Timeout`], which says what never
//! happened and keeps the last reason it saw as its source, so the CLI prints it as the
//! cause.
//!
//! It uses nothing of lab's but [`crate::error`], so every area (and every driver crate) may
//! use it.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{BoxError, Error, Result};

/// What one look found.
#[derive(Debug)]
pub enum Look<T> {
    /// It holds: the wait is over, with this.
    Done(T),
    /// Not yet, and why: the last of these becomes the [`Error::Timeout`]'s source.
    NotYet(BoxError),
    /// It never will: the wait ends now with this error (no point waiting out the deadline).
    Fail(Error),
}

impl<T> Look<T> {
    /// Not yet, for the reason `why` (a message, or any error).
    pub fn not_yet(why: impl Into<BoxError>) -> Self {
        Look::NotYet(why.into())
    }
}

/// A bounded wait: who is waited on, for what, for how long at most, and how often to look.
#[derive(Debug, Clone)]
pub struct Wait {
    node: String,
    what: String,
    limit: Duration,
    every: Duration,
    hint: Option<String>,
}

impl Wait {
    /// A wait of at most `limit` on `node` (a node's name, or whatever the wait is about,
    /// such as `driver NAME`) for `what` (e.g. `its Docker engine to answer`), looking every
    /// half second.
    pub fn new(node: impl Into<String>, what: impl Into<String>, limit: Duration) -> Self {
        Wait { node: node.into(), what: what.into(), limit, every: Duration::from_millis(500), hint: None }
    }

    /// Looks every `every` instead.
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// The hint the timeout carries, if the wait runs out.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Looks with `look` until it answers [`Look::Done`] (its value is returned) or
    /// [`Look::Fail`] (its error is returned), or the limit passes after a [`Look::NotYet`]
    /// (a [`Error::Timeout`] with that last reason as its source).
    ///
    /// It always looks at least once, and once more at the deadline: a wait never fails
    /// without having looked after its last sleep. A look is not interrupted, so a slow one
    /// can carry the wait past its limit by its own length; bound the look itself where that
    /// matters.
    pub async fn poll<T, F, Fut>(self, mut look: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Look<T>>,
    {
        let start = Instant::now();
        loop {
            let last = match look().await {
                Look::Done(v) => return Ok(v),
                Look::Fail(e) => return Err(e),
                Look::NotYet(why) => why,
            };
            let elapsed = start.elapsed();
            if elapsed >= self.limit {
                return Err(Error::Timeout {
                    node: self.node,
                    what: self.what,
                    // Rounded up: a wait of 300 ms did not time out "after 0s".
                    secs: self.limit.as_secs() + u64::from(self.limit.subsec_nanos() > 0),
                    hint: self.hint,
                    source: Some(last),
                });
            }
            tokio::time::sleep(self.every.min(self.limit - elapsed)).await;
        }
    }

    /// [`Wait::poll`] where `Ok` is done and any error means "not yet".
    pub async fn until<T, E, F, Fut>(self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: Into<BoxError>,
    {
        self.poll(|| {
            let f = attempt();
            async move {
                match f.await {
                    Ok(v) => Look::Done(v),
                    Err(e) => Look::NotYet(e.into()),
                }
            }
        })
        .await
    }

    /// [`Wait::poll`] for a condition that says nothing of why it does not hold yet: the
    /// timeout's source is `pending`. A condition that needs no waiting to answer is
    /// `|| std::future::ready(...)`.
    pub async fn holds<F, Fut>(self, pending: &str, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.poll(|| {
            let done = check();
            async move {
                if done.await {
                    Look::Done(())
                } else {
                    Look::not_yet(pending.to_string())
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn short(what: &str) -> Wait {
        Wait::new("worker1", what, Duration::from_millis(300)).every(Duration::from_millis(10))
    }

    #[tokio::test]
    async fn it_returns_what_the_look_found_once_it_holds() {
        let tries = AtomicU32::new(0);
        let got = short("the third try")
            .poll(|| async {
                match tries.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Look::not_yet("not yet"),
                    n => Look::Done(n),
                }
            })
            .await
            .unwrap();
        assert_eq!(got, 2);
        assert_eq!(tries.load(Ordering::SeqCst), 3);
    }

    /// The timeout says what never happened, and the last reason is its source, not text in
    /// a hint.
    #[tokio::test]
    async fn a_timeout_keeps_the_last_reason_as_its_source() {
        let tries = AtomicU32::new(0);
        let started = Instant::now();
        let e = short("its Docker engine to answer")
            .until(|| async {
                let n = tries.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, format!("refused #{n}")))
            })
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300), "gave up early: {waited:?}");
        assert!(waited < Duration::from_secs(3), "overran its limit: {waited:?}");
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert_eq!(e.to_string(), "worker1: timed out after 1s waiting for its Docker engine to answer");
        assert_eq!(e.hint(), None);
        let n = tries.load(Ordering::SeqCst);
        assert!(n >= 2, "it looked only {n} time(s)");
        let source = std::error::Error::source(&e).expect("the last error is kept");
        assert_eq!(source.to_string(), format!("refused #{}", n - 1), "not the last reason");
        assert!(source.downcast_ref::<std::io::Error>().is_some(), "the error itself is kept, not its text");
        assert_eq!(e.causes(), vec![format!("refused #{}", n - 1)]);
    }

    #[tokio::test]
    async fn a_failure_ends_the_wait_at_once() {
        let tries = AtomicU32::new(0);
        let e = Wait::new("manager", "something", Duration::from_secs(30))
            .poll(|| async {
                tries.fetch_add(1, Ordering::SeqCst);
                Look::<()>::Fail(Error::node("manager", "look", "it will never happen"))
            })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "manager: look: it will never happen");
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_condition_is_looked_at_least_once_and_a_hint_is_kept() {
        short("x").holds("never", || std::future::ready(true)).await.unwrap();
        let e = Wait::new("n", "a socket to appear", Duration::ZERO)
            .hint("is the engine running?")
            .holds("no socket yet", || std::future::ready(false))
            .await
            .unwrap_err();
        assert_eq!(e.hint(), Some("is the engine running?"));
        assert_eq!(e.causes(), vec!["no socket yet".to_string()]);
    }
}
