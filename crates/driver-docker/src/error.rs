//! The docker driver's own failures: what the engine it runs nodes on refused or failed, in
//! the engine's own words, with bollard's error kept as the cause. They become lab's
//! [`Error`] where the driver hands them to the core (`?` converts them), still carrying it.

use lab_core::error::engine_message;
use lab_core::Error;

/// A failure of the engine the nodes run on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The engine refused or failed `step` on `node`.
    #[error("{node}: {step}: {}", engine_message(source))]
    Node {
        /// The node.
        node: String,
        /// What lab was doing, e.g. `start node container`.
        step: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// The engine refused or failed something that is no single node's (the cluster's
    /// network, the list of its containers).
    #[error("{context}: {}", engine_message(source))]
    Engine {
        /// What lab was doing.
        context: String,
        /// The engine's answer.
        #[source]
        source: bollard::errors::Error,
    },
}

impl From<DockerError> for Error {
    fn from(e: DockerError) -> Error {
        match e {
            DockerError::Node { node, step, source } => Error::engine(node, step, source),
            DockerError::Engine { context, source } => Error::engine_op(context, source),
        }
    }
}

/// The engine failed `step` on `node`.
pub(crate) fn on_node(node: &str, step: &str, e: bollard::errors::Error) -> DockerError {
    DockerError::Node { node: node.into(), step: step.into(), source: e }
}

/// The engine failed `context`, no single node's.
pub(crate) fn on_engine(context: impl Into<String>, e: bollard::errors::Error) -> DockerError {
    DockerError::Engine { context: context.into(), source: e }
}

/// `step` on `node` failed because of `cause`, another of lab's errors, kept as the source;
/// its hint stays the hint.
pub(crate) fn because(node: &str, step: &str, cause: Error) -> Error {
    let hint = cause.hint().map(str::to_string);
    Error::Node {
        node: node.into(),
        step: step.into(),
        message: cause.to_string(),
        hint,
        source: Some(Box::new(cause)),
    }
}

/// Whether the engine said the thing does not exist.
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// Whether the engine refused a removal because one is under way already ("removal of
/// container X is already in progress"): a killed `lab` asked for it, and the engine goes on.
pub(crate) fn is_removal_in_progress(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
        if message.contains("already in progress"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `lab up` killed while the engine removed a node's container left the removal under
    /// way; the next one met "removal of container X is already in progress" (CI, interrupted).
    #[test]
    fn only_a_removal_under_way_is_waited_for() {
        let err = |status_code: u16, message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.into(),
        };
        assert!(is_removal_in_progress(&err(409, "removal of container c-worker1 is already in progress")));
        assert!(!is_removal_in_progress(&err(409, "Conflict. The container name is already in use")));
        assert!(!is_removal_in_progress(&err(404, "No such container: c-worker1")));
    }

    /// Issue 21, item 3: the engine's error stays the cause of lab's.
    #[test]
    fn the_engines_error_stays_the_cause() {
        let refused = || bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message: "Conflict. The container name is already in use".into(),
        };
        let e: Error = on_node("worker1", "create node container", refused()).into();
        assert_eq!(e.to_string(), "worker1: create node container: Conflict. The container name is already in use");
        let source = std::error::Error::source(&e).expect("bollard's error is kept");
        assert!(source.to_string().contains("409"), "{source}");
        let e: Error = on_engine("create network c-net", refused()).into();
        assert!(std::error::Error::source(&e).is_some());
        let outer = because("worker1", "create node", Error::from(on_engine("get node image x", refused())));
        assert!(outer.to_string().starts_with("worker1: create node: get node image x: Conflict"), "{outer}");
        assert_eq!(
            because("worker1", "create node", Error::op("get node image x", "absent").with_hint("build it")).hint(),
            Some("build it")
        );
        let inner = std::error::Error::source(&outer).expect("the inner error is kept");
        assert!(std::error::Error::source(inner).is_some(), "and its own cause");
    }
}
