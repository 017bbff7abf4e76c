//! The qemu driver's own failures that come from the OS: a program that would not run, a
//! file lab could not write or remove, the random source. The OS's error is kept as the
//! cause; they become lab's [`Error`] where the driver hands them to the core (`?` and `into`
//! convert them). What QEMU, qemu-img or openssl said when they ran and failed is their own
//! words in lab's error, with no Rust error beneath it.

use lab_core::Error;

/// A failure of the OS under the qemu driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuError {
    /// Running a program, or writing, moving or removing a file, failed: `context` says which.
    #[error("{context}: {source}")]
    Io {
        /// What lab was doing, e.g. `write /path/known_hosts`.
        context: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The OS's random source failed while making `node`'s machine ID.
    #[error("{node}: make its machine ID: {source}")]
    Random {
        /// The node.
        node: String,
        /// Why.
        #[source]
        source: getrandom::Error,
    },
}

impl From<QemuError> for Error {
    fn from(e: QemuError) -> Error {
        let message = match &e {
            QemuError::Io { source, .. } => source.to_string(),
            QemuError::Random { source, .. } => source.to_string(),
        };
        match e {
            QemuError::Io { context, source } => {
                Error::Operation { context, message, hint: None, source: Some(Box::new(source)) }
            }
            QemuError::Random { node, source } => Error::Node {
                node,
                step: "make its machine ID".into(),
                message,
                hint: None,
                source: Some(Box::new(source)),
            },
        }
    }
}

/// `context` failed with `e`.
pub(crate) fn io(context: impl Into<String>, e: std::io::Error) -> QemuError {
    QemuError::Io { context: context.into(), source: e }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 21, item 3: the OS's error stays the cause of lab's.
    #[test]
    fn the_os_error_stays_the_cause() {
        let e: Error = io("run qemu-img", std::io::Error::from(std::io::ErrorKind::PermissionDenied)).into();
        assert!(e.to_string().starts_with("run qemu-img: "), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
