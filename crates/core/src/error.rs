//! The core's error type. Every variant knows whether it is the user's input that is wrong
//! (exit status 2, nothing was created) or an operation that failed (exit status 1), and
//! operational errors name the node and the step, with the underlying tool's own words.
//!
//! Operational errors keep what caused them (bollard's error, io's error) as their
//! [`std::error::Error::source`], so the CLI can show the whole chain: "connection refused"
//! under "connect to the local Docker engine" is the part a user acts on.

use std::path::PathBuf;

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause an error carries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
        /// What caused it, when it came from another library.
        #[source]
        source: Option<BoxError>,
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
        /// What caused it, when it came from another library.
        #[source]
        source: Option<BoxError>,
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
    #[error("{}", if driver.is_empty() { format!("the driver {message}") } else { format!("driver {driver} {message}") })]
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

    /// The driver cannot do this. The driver's name is filled in by the core, which knows
    /// it (see [`Error::for_driver`]).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::Unsupported { driver: String::new(), message: message.into() }
    }

    /// Names `driver` in an [`Error::Unsupported`] that does not name one yet.
    pub fn for_driver(mut self, name: &str) -> Self {
        if let Error::Unsupported { driver, .. } = &mut self {
            if driver.is_empty() {
                *driver = name.to_string();
            }
        }
        self
    }

    /// A bad-input error.
    pub fn input(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Input { what: what.into(), message: message.into() }
    }

    /// An operational error on a node, with the cause as the underlying tool said it.
    pub fn node(node: impl Into<String>, step: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Node { node: node.into(), step: step.into(), message: message.to_string(), hint: None, source: None }
    }

    /// An operational error that belongs to no single node.
    pub fn op(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Operation { context: context.into(), message: message.to_string(), hint: None, source: None }
    }

    /// A Docker engine refused or failed `step` on `node`: the message is the engine's own
    /// words ([`engine_message`]) and bollard's error is kept as the source.
    pub fn engine(node: impl Into<String>, step: impl Into<String>, err: bollard::errors::Error) -> Self {
        Error::Node {
            node: node.into(),
            step: step.into(),
            message: engine_message(&err),
            hint: None,
            source: Some(Box::new(err)),
        }
    }

    /// [`Error::engine`] for an engine that is no single node's (the local one).
    pub fn engine_op(context: impl Into<String>, err: bollard::errors::Error) -> Self {
        Error::Operation {
            context: context.into(),
            message: engine_message(&err),
            hint: None,
            source: Some(Box::new(err)),
        }
    }

    /// An I/O failure during `step` on `node`, kept as the source.
    pub fn io(node: impl Into<String>, step: impl Into<String>, err: std::io::Error) -> Self {
        Error::Node {
            node: node.into(),
            step: step.into(),
            message: err.to_string(),
            hint: None,
            source: Some(Box::new(err)),
        }
    }

    /// The causes below this error, outermost first, leaving out those whose text the
    /// message already says (bollard's "Docker responded with status code 409: ..." around
    /// the engine's own words, for example).
    pub fn causes(&self) -> Vec<String> {
        let top = self.to_string();
        let message = match self {
            Error::Node { message, .. } | Error::Operation { message, .. } => message.as_str(),
            _ => top.as_str(),
        };
        let mut out: Vec<String> = Vec::new();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            let text = e.to_string();
            let said = text.is_empty()
                || top.contains(&text)
                || text.contains(message)
                || out.iter().any(|o| o.contains(&text));
            if !said {
                out.push(text);
            }
            cur = e.source();
        }
        out
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

/// Whether the engine answered 404: the object is not there (any more).
pub fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

/// Renders a bollard error as the Docker engine said it, without bollard's framing. Where
/// the engine said nothing (the connection failed), the message ends with the innermost
/// cause, e.g. `... client error (Connect): No such file or directory (os error 2)`.
pub fn engine_message(err: &bollard::errors::Error) -> String {
    use bollard::errors::Error as B;
    match err {
        B::DockerResponseServerError { message, .. } => message.trim().to_string(),
        B::DockerStreamError { error } => error.trim().to_string(),
        other => {
            let mut text = other.to_string();
            let mut cur = std::error::Error::source(other);
            while let Some(e) = cur {
                let more = e.to_string();
                if !more.is_empty() && !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                cur = e.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, item 3: a failed connection keeps its cause, in the message and as the
    /// source chain the CLI prints.
    #[tokio::test]
    async fn a_connection_failure_keeps_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the socket should be: the connection is refused.
        let sock = dir.path().join("not-a-socket.sock");
        std::fs::write(&sock, "").unwrap();
        let docker =
            bollard::Docker::connect_with_unix(&sock.display().to_string(), 5, bollard::API_DEFAULT_VERSION).unwrap();
        let err = docker.ping().await.expect_err("no engine there");
        let e = Error::engine("manager", "connect to its Docker engine", err);
        let text = e.to_string();
        assert!(text.starts_with("manager: connect to its Docker engine: "), "{text}");
        assert!(text.contains("Connection refused") || text.contains("os error 111"), "the cause is lost: {text}");
        assert!(std::error::Error::source(&e).is_some(), "bollard's error is not kept");
        // Nothing the message already says is repeated as a cause.
        for c in e.causes() {
            assert!(!text.contains(&c), "{c:?} repeats the message {text:?}");
        }
    }

    #[test]
    fn an_engine_refusal_is_the_engines_words() {
        let err = bollard::errors::Error::DockerResponseServerError {
            status_code: 409,
            message: "This node is already part of a swarm.".into(),
        };
        let e = Error::engine("worker1", "join the swarm as worker", err);
        assert_eq!(e.to_string(), "worker1: join the swarm as worker: This node is already part of a swarm.");
        assert!(e.causes().is_empty(), "{:?}", e.causes());
        assert_eq!(e.exit_code(), 1);
    }
}
