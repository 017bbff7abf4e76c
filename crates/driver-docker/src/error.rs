//! Turning the host engine's errors into lab's, with the engine's own words.

use lab_core::error::engine_message;
use lab_core::Error;

/// An error on `node` while doing `step`.
pub(crate) fn on_node(node: &str, step: &str, e: bollard::errors::Error) -> Error {
    Error::node(node, step, engine_message(&e))
}

/// Whether the engine said the thing does not exist.
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}
