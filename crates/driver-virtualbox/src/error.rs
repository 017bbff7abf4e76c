//! The virtualbox driver's own failures: docker-machine failing, in its own words, or not
//! running at all, with the OS's error kept as the cause. They become lab's [`Error`] where
//! the driver hands them to the core (`?` and `into` convert them), still carrying it.

use lab_core::Error;

use crate::client::Output;

/// A failure of docker-machine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MachineError {
    /// docker-machine ran for `node` and failed.
    #[error("{node}: {command}: {message}")]
    Failed {
        /// The node.
        node: String,
        /// The command, with the machine's name.
        command: String,
        /// What docker-machine said ([`Output::message`]).
        message: String,
    },
    /// docker-machine could not be run for `node`, or did not finish in time.
    #[error("{node}: {command}: {source}")]
    NotRun {
        /// The node.
        node: String,
        /// The command.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// docker-machine could not be run for something that is no single machine's (its
    /// version, the list of machines).
    #[error("{context}: {source}")]
    Program {
        /// What lab was doing.
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<MachineError> for Error {
    fn from(e: MachineError) -> Error {
        match e {
            MachineError::Failed { node, command, message } => Error::node(node, command, message),
            MachineError::NotRun { node, command, source } => Error::io(node, command, source),
            MachineError::Program { context, source } => {
                Error::Operation { context, message: source.to_string(), hint: None, source: Some(Box::new(source)) }
            }
        }
    }
}

/// docker-machine ran and failed: the node, the command (with the machine's name) and what
/// docker-machine said.
pub(crate) fn failed(node: &str, command: &str, out: &Output) -> MachineError {
    MachineError::Failed { node: node.into(), command: command.into(), message: out.message() }
}

/// docker-machine could not be run at all, or did not finish in time.
pub(crate) fn not_run(node: &str, command: &str, e: std::io::Error) -> MachineError {
    MachineError::NotRun { node: node.into(), command: command.into(), source: e }
}

/// docker-machine could not be run for `context`, no single machine's.
pub(crate) fn program_not_run(context: &str, e: std::io::Error) -> MachineError {
    MachineError::Program { context: context.into(), source: e }
}

/// Whether docker-machine said the machine does not exist.
pub(crate) fn does_not_exist(out: &Output) -> bool {
    out.stderr.contains("does not exist")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21, item 3: an OS error that kept docker-machine from running stays the cause.
    #[test]
    fn the_os_error_stays_the_cause() {
        let gone = || std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e: Error = not_run("worker1", "docker-machine ls", gone()).into();
        assert_eq!(e.to_string(), "worker1: docker-machine ls: No such file or directory");
        assert!(std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("No such file")));
        let e: Error = program_not_run("run docker-machine --version", gone()).into();
        assert!(std::error::Error::source(&e).is_some());
        let out = Output { code: Some(1), stdout: String::new(), stderr: "Host is not running\n".into() };
        let e: Error = failed("worker1", "docker-machine ip c-worker1", &out).into();
        assert_eq!(e.to_string(), "worker1: docker-machine ip c-worker1: Host is not running");
    }
}
