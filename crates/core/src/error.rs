//! The core's error type. Every variant knows whether it is the user's input that is wrong
//! (exit status 2, nothing was created) or an operation that failed (exit status 1), and
//! operational errors name the node and the step, with the underlying tool's own words.

use std::path::PathBuf;

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the core or a driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: a flag, a config file or a hosts file. `what` names the flag, file or
    /// field; `message` says what is wrong with the value.
    #[error("{what}: {message}")]
    Input {
        /// The flag, file and field at fault, e.g. `--cluster` or `lab.toml: workers`.
        what: String,
        /// What is wrong, with the offending value.
        message: String,
    },
    /// An operation failed on one node.
    #[error("{node}: {step}: {message}")]
    Node {
        /// The node the failure happened on.
        node: String,
        /// What lab was doing, e.g. `join swarm as worker`.
        step: String,
        /// The cause, in the underlying tool's own words.
        message: String,
        /// A hint for the user, if there is one.
        hint: Option<String>,
    },
    /// An operation failed that belongs to no single node (the driver's setup, the local
    /// Docker engine).
    #[error("{context}: {message}")]
    Operation {
        /// What lab was doing.
        context: String,
        /// The cause, in the underlying tool's own words.
        message: String,
        /// A hint for the user, if there is one.
        hint: Option<String>,
    },
    /// A bounded wait ran out.
    #[error("{node}: timed out after {secs}s waiting for {what}")]
    Timeout {
        /// The node that was waited on.
        node: String,
        /// What never happened.
        what: String,
        /// How long lab waited.
        secs: u64,
        /// Why it may not have happened, if lab could tell.
        hint: Option<String>,
    },
    /// Another `lab` process holds the cluster's lock.
    #[error("cluster {cluster} is busy: {holder} holds its lock")]
    Locked {
        /// The cluster.
        cluster: String,
        /// Who holds the lock (pid and command), as recorded in the lock file.
        holder: String,
    },
    /// Reading or writing lab's own state failed.
    #[error("state file {}: {source}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The requested driver cannot do this (e.g. the SSH driver cannot create hosts).
    #[error("driver {driver}: {message}")]
    Unsupported {
        /// The driver's name.
        driver: String,
        /// What it cannot do.
        message: String,
    },
}

impl Error {
    /// Exit status the CLI should use: 2 for bad input, 1 for anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input { .. } => 2,
            _ => 1,
        }
    }

    /// A bad-input error.
    pub fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Input { what: what.into(), message: message.into() }
    }

    /// An operational error on a node, with the cause as the underlying tool said it.
    pub fn node(node: impl Into<String>, step: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Node { node: node.into(), step: step.into(), message: message.to_string(), hint: None }
    }

    /// An operational error that belongs to no single node.
    pub fn op(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Operation { context: context.into(), message: message.to_string(), hint: None }
    }

    /// Attaches a hint to an operational error (ignored on other variants).
    pub fn with_hint(mut self, text: impl Into<String>) -> Self {
        match &mut self {
            Error::Node { hint, .. } | Error::Operation { hint, .. } | Error::Timeout { hint, .. } => {
                *hint = Some(text.into())
            }
            _ => {}
        }
        self
    }

    /// The hint, if any.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Node { hint, .. } | Error::Operation { hint, .. } | Error::Timeout { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

/// Renders a bollard error as the Docker engine said it, without bollard's framing.
pub fn engine_message(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as B;
    match err {
        B::DockerResponseServerError { message, .. } => message.trim().to_string(),
        B::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}
