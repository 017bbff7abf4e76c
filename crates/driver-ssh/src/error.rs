//! Turning SSH failures into lab's errors, naming the host and the step.

use lab_core::Error;

use crate::client::SshError;

/// An error reaching host `name`.
pub(crate) fn on_host(name: &str, e: SshError) -> Error {
    let hint = match e.stage {
        crate::client::Stage::Connect => Some("check the address and port in the hosts file, and that sshd runs there"),
        crate::client::Stage::Auth => {
            Some("set identity_file for the host in the hosts file, or add its key to ssh-agent (ssh-add)")
        }
        _ => None,
    };
    let err = Error::node(name, e.stage.step(), e.message);
    match hint {
        Some(h) => err.with_hint(h),
        None => err,
    }
}
