//! [`Remote`]: one machine's Docker engine and commands over SSH, as lab's drivers use them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::Docker;
use lab_core::state::make_private_dir;
use lab_core::{Error, ExecOutput, Result};

use crate::client::{SshError, Stage, Target};
use crate::tunnel;

/// Unix socket paths are limited to 108 bytes by the kernel.
const MAX_SOCKET_PATH: usize = 100;

/// What a driver tells the user to check when reaching a machine fails at a stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints {
    /// When the TCP connection or the SSH greeting fails.
    pub connect: Option<&'static str>,
    /// When authentication fails.
    pub auth: Option<&'static str>,
}

/// One machine reached over SSH: its Docker engine through a local socket (started on first
/// use, and again if its file went), and commands from argv.
pub struct Remote {
    target: Arc<Target>,
    socket_dir: PathBuf,
    socket: Mutex<Option<PathBuf>>,
    hints: Hints,
}

impl Remote {
    /// `target`, with its socket in this process's directory under `socket_dir` (which lab
    /// keeps 0700; directories of lab processes that are gone are removed).
    pub fn new(target: Target, socket_dir: &Path, hints: Hints) -> Self {
        Remote { target: Arc::new(target), socket_dir: socket_dir.to_path_buf(), socket: Mutex::new(None), hints }
    }

    /// The machine and how it is reached.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn name(&self) -> &str {
        &self.target.host.name
    }

    /// lab's error for a failure to reach the machine, naming it, the step and the cause.
    pub fn error(&self, e: SshError) -> Error {
        let hint = match e.stage {
            Stage::Connect => self.hints.connect,
            Stage::Auth => self.hints.auth,
            _ => None,
        };
        let err = Error::Node {
            node: self.name().into(),
            step: e.stage.step().into(),
            message: e.message.clone(),
            hint: None,
            source: Some(Box::new(e)),
        };
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    }

    /// The local socket that leads to the machine's engine, started on first use.
    pub fn socket(&self) -> Result<PathBuf> {
        let node = self.name().to_string();
        let mut socket = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = socket.as_ref().filter(|p| p.exists()) {
            return Ok(p.clone());
        }
        let step = "open a tunnel to its Docker engine";
        let dir = tunnel::socket_dir(&self.socket_dir);
        make_private_dir(&dir)?;
        let path = dir.join(format!("{node}.sock"));
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::node(
                &node,
                step,
                format!(
                    "the socket path {} is longer than {MAX_SOCKET_PATH} bytes, which unix sockets do not allow",
                    path.display()
                ),
            )
            .with_hint("set XDG_STATE_HOME to a shorter directory"));
        }
        tunnel::start(self.target.clone(), &path).map_err(|e| Error::io(&node, step, e))?;
        *socket = Some(path.clone());
        Ok(path)
    }

    /// A client of the machine's engine (not yet negotiated).
    pub fn docker(&self) -> Result<Docker> {
        let socket = self.socket()?;
        Docker::connect_with_unix(&socket.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)
            .map_err(|e| Error::engine(self.name(), "connect to its Docker engine", e))
    }

    /// Runs `argv` on the machine, without a shell of lab's making: each argument is quoted
    /// to reach the program as exactly one argument.
    pub async fn exec(&self, argv: &[String]) -> Result<ExecOutput> {
        let argv = argv.to_vec();
        let (status, stdout, stderr) = self.blocking(move |t| t.exec(&argv)).await?;
        Ok(ExecOutput { status, stdout, stderr })
    }

    /// Checks that the machine answers over SSH and its Docker socket can be opened.
    pub async fn reach_engine(&self) -> Result<()> {
        self.blocking(|t| t.docker_channel().map(|_| ())).await
    }

    /// Runs blocking SSH work on a std thread of its own (never the runtime's workers), and
    /// waits for it at most as long as every bound inside it together could take. A thread
    /// that outlives that bound is left behind; it ends with the process.
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Target) -> std::result::Result<T, SshError> + Send + 'static,
    ) -> Result<T> {
        let node = self.name().to_string();
        let target = self.target.clone();
        let bound = target.connect_timeout * 3 + target.operation_timeout * 3;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("lab-ssh-{node}"))
            .spawn(move || {
                let _ = tx.send(f(&target));
            })
            .map_err(|e| Error::io(&node, "reach the host over SSH", e))?;
        match tokio::time::timeout(bound, rx).await {
            Ok(Ok(r)) => r.map_err(|e| self.error(e)),
            Ok(Err(_)) => Err(Error::node(&node, "reach the host over SSH", "the SSH thread ended without an answer")),
            Err(_) => Err(Error::node(
                &node,
                "reach the host over SSH",
                format!("no SSH step finished within {}s", bound.as_secs()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Endpoint, HostKeyPolicy, KnownHostsFiles};

    /// Issue 21, item 3: the SSH failure stays the cause of lab's error, which names the
    /// node, the step, and carries the driver's hint for that step.
    #[test]
    fn an_ssh_failure_stays_the_cause() {
        let host = Endpoint {
            name: "worker1".into(),
            address: "10.0.0.2".into(),
            port: 22,
            user: "me".into(),
            identity_file: None,
            host_key_alias: None,
        };
        let files = KnownHostsFiles { user: "/nonexistent/kh".into(), global: vec![] };
        let t = Target::new(host, files, HostKeyPolicy::Strict, Duration::from_secs(1), Duration::from_secs(1), None);
        let r = Remote::new(t, Path::new("/nonexistent"), Hints { connect: Some("is sshd running?"), auth: None });
        let e = r.error(SshError {
            stage: Stage::Connect,
            message: "10.0.0.2:22: Connection refused".into(),
            source: None,
        });
        assert_eq!(e.to_string(), "worker1: connect over SSH: 10.0.0.2:22: Connection refused");
        assert_eq!(e.hint(), Some("is sshd running?"));
        let cause = std::error::Error::source(&e).expect("the SSH error is kept");
        assert_eq!(cause.to_string(), "connect over SSH: 10.0.0.2:22: Connection refused");
        assert!(e.causes().is_empty(), "nothing the message says is repeated: {:?}", e.causes());
    }
}
