//! Turning docker-machine's failures into lab's errors, in docker-machine's own words.

use lab_core::Error;

use crate::client::Output;

/// docker-machine ran and failed: the node, the command (with the machine's name) and what
/// docker-machine said.
pub(crate) fn failed(node: &str, command: &str, out: &Output) -> Error {
    Error::node(node, command, out.message())
}

/// docker-machine could not be run at all, or did not finish in time.
pub(crate) fn not_run(node: &str, command: &str, e: &std::io::Error) -> Error {
    Error::node(node, command, e)
}

/// Whether docker-machine said the machine does not exist.
pub(crate) fn does_not_exist(out: &Output) -> bool {
    out.stderr.contains("does not exist")
}
