//! The SSH client: connecting to one host with bounded waits, verifying its host key,
//! authenticating, and opening what lab needs over the connection (a stream to the Docker
//! engine's socket, or a command). Everything here blocks: callers run it on std threads or
//! `spawn_blocking`, never on the async runtime's workers.

use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ssh2::{Channel, MethodType, Session};

use crate::known_hosts::{self, KnownHostsFiles};
use crate::{Endpoint, HostKeyPolicy};

/// Where the Docker engine listens on every host.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// At most this many SSH handshakes to one host at a time: sshd drops connections beyond its
/// `MaxStartups` (10 unauthenticated by default) at random.
const MAX_HANDSHAKES: usize = 4;

/// The stage at which reaching a host failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// TCP connection.
    Connect,
    /// SSH handshake and host key verification.
    HostKey,
    /// Authentication.
    Auth,
    /// Opening a channel (to the Docker socket, or for a command).
    Channel,
}

impl Stage {
    /// The step, as error messages name it.
    pub fn step(self) -> &'static str {
        match self {
            Stage::Connect => "connect over SSH",
            Stage::HostKey => "verify its SSH host key",
            Stage::Auth => "authenticate over SSH",
            Stage::Channel => "reach its Docker engine over SSH",
        }
    }
}

/// A failure to reach a host, with the stage it happened at.
#[derive(Debug, Clone)]
pub struct SshError {
    /// Where it failed.
    pub stage: Stage,
    /// Why, in the words of the OS, libssh2 or the server.
    pub message: String,
    /// The OS's or libssh2's error, where one caused it (shared, so the error stays `Clone`).
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl std::fmt::Display for SshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage.step(), self.message)
    }
}

// By hand, not thiserror: its source would be the `Arc`, which no caller can downcast to
// the io or libssh2 error inside.
impl std::error::Error for SshError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

fn fail(stage: Stage, message: impl Into<String>) -> SshError {
    SshError { stage, message: message.into(), source: None }
}

/// [`fail`], keeping `cause` as the source.
fn failed_by(
    stage: Stage,
    message: impl Into<String>,
    cause: impl std::error::Error + Send + Sync + 'static,
) -> SshError {
    SshError { stage, message: message.into(), source: Some(Arc::new(cause)) }
}

/// One host and how to reach it.
pub struct Target {
    /// The machine.
    pub host: Endpoint,
    /// The known-hosts files.
    pub known_hosts: KnownHostsFiles,
    /// What to do with unknown host keys.
    pub policy: HostKeyPolicy,
    /// Bound on the TCP connection.
    pub connect_timeout: Duration,
    /// Bound on each SSH operation once connected.
    pub operation_timeout: Duration,
    /// `$HOME`, for the usual `~/.ssh` keys.
    pub home: Option<PathBuf>,
    handshakes: Mutex<usize>,
    handshake_done: Condvar,
}

impl Target {
    /// A target for `host`.
    pub fn new(
        host: Endpoint,
        known_hosts: KnownHostsFiles,
        policy: HostKeyPolicy,
        connect_timeout: Duration,
        operation_timeout: Duration,
        home: Option<PathBuf>,
    ) -> Self {
        Target {
            host,
            known_hosts,
            policy,
            connect_timeout,
            operation_timeout,
            home,
            handshakes: Mutex::new(0),
            handshake_done: Condvar::new(),
        }
    }

    /// Opens a TCP connection within the connect timeout, trying each resolved address.
    pub fn tcp(&self) -> Result<TcpStream, SshError> {
        let h = &self.host;
        let addrs =
            resolve(&h.address, h.port, self.connect_timeout, |a, p| (a, p).to_socket_addrs().map(|i| i.collect()))
                .map_err(|m| fail(Stage::Connect, m))?;
        let mut last = fail(Stage::Connect, format!("{} resolves to no address", h.address));
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut || e.kind() == std::io::ErrorKind::WouldBlock => {
                    last =
                        fail(Stage::Connect, format!("no answer from {a} within {}s", self.connect_timeout.as_secs()))
                }
                Err(e) => last = failed_by(Stage::Connect, format!("{a}: {e}"), e),
            }
        }
        Err(last)
    }

    /// An authenticated session with a verified host key.
    pub fn session(&self) -> Result<Session, SshError> {
        let _permit = self.permit()?;
        let tcp = self.tcp()?;
        let _ = tcp.set_nodelay(true);
        let mut sess = Session::new().map_err(|e| failed_by(Stage::HostKey, e.to_string(), e))?;
        sess.set_tcp_stream(tcp);
        // Until the server has shown its SSH banner and key, the connect timeout applies: a
        // firewall or proxy may accept TCP connections for hosts that are not there.
        sess.set_timeout(millis(self.connect_timeout));
        let h = &self.host;
        let prefs = known_hosts::algorithm_preference(&self.known_hosts, h.host_key_name(), h.port);
        let _ = sess.method_pref(MethodType::HostKey, &prefs);
        sess.handshake().map_err(|e| {
            let why = if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) {
                format!("no SSH server answered at {} within {}s", self.describe(), self.connect_timeout.as_secs())
            } else {
                format!("SSH handshake with {}: {}", self.describe(), e.message())
            };
            failed_by(Stage::Connect, why, e)
        })?;
        sess.set_timeout(millis(self.operation_timeout));
        known_hosts::verify(&sess, &self.known_hosts, &h.name, h.host_key_name(), h.port, self.policy)
            .map_err(|m| fail(Stage::HostKey, m))?;
        self.authenticate(&sess)?;
        Ok(sess)
    }

    fn describe(&self) -> String {
        known_hosts::pattern(&self.host.address, self.host.port)
    }

    /// Waits, at most the operation timeout, for one of the host's handshake slots; released
    /// on drop. Sessions that hang hold their slots until their own bounds end them; a wait
    /// beyond that says so instead of queueing forever.
    fn permit(&self) -> Result<Permit<'_>, SshError> {
        let deadline = std::time::Instant::now() + self.operation_timeout;
        let mut n = self.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= MAX_HANDSHAKES {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(fail(
                    Stage::Connect,
                    format!(
                        "no SSH session to {} could start within {}s: {MAX_HANDSHAKES} sessions to it were \
                         already being set up and none finished",
                        self.describe(),
                        self.operation_timeout.as_secs()
                    ),
                ));
            }
            n = self.handshake_done.wait_timeout(n, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *n += 1;
        Ok(Permit(self))
    }

    /// The identity file if one is set; otherwise ssh-agent, then the usual `~/.ssh` keys.
    /// The error names the user and every method tried.
    fn authenticate(&self, sess: &Session) -> Result<(), SshError> {
        let user = &self.host.user;
        let offered = match sess.auth_methods(user) {
            Ok(m) => m.to_string(),
            Err(_) if sess.authenticated() => return Ok(()),
            Err(e) => {
                return Err(failed_by(Stage::Auth, format!("as {user}: the server refused to list methods: {e}"), e))
            }
        };
        let mut tried: Vec<String> = Vec::new();
        if !offered.split(',').any(|m| m == "publickey") {
            return Err(fail(
                Stage::Auth,
                format!("as {user}: the server offers only {offered}; lab authenticates with keys (publickey)"),
            ));
        }
        if let Some(key) = &self.host.identity_file {
            match sess.userauth_pubkey_file(user, None, key, None) {
                Ok(()) if sess.authenticated() => return Ok(()),
                Ok(()) => tried.push(format!("key {} (refused)", key.display())),
                Err(e) => tried.push(format!("key {} ({})", key.display(), e.message())),
            }
        } else {
            if let Some(sock) = std::env::var_os("SSH_AUTH_SOCK") {
                match agent_answers(Path::new(&sock), self.operation_timeout).and_then(|()| agent_auth(sess, user)) {
                    Ok(()) => return Ok(()),
                    Err(why) => tried.push(format!("ssh-agent ({why})")),
                }
            } else {
                tried.push("ssh-agent (SSH_AUTH_SOCK is not set)".into());
            }
            let dir = self.home.as_ref().map(|h| h.join(".ssh"));
            for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let Some(path) = dir.as_ref().map(|d| d.join(name)).filter(|p| p.is_file()) else { continue };
                match sess.userauth_pubkey_file(user, None, &path, None) {
                    Ok(()) if sess.authenticated() => return Ok(()),
                    Ok(()) => tried.push(format!("key {} (refused)", path.display())),
                    Err(e) => tried.push(format!("key {} ({})", path.display(), e.message())),
                }
            }
            if tried.len() == 1 {
                tried.push("no key in ~/.ssh (id_ed25519, id_ecdsa, id_rsa)".into());
            }
        }
        Err(fail(Stage::Auth, format!("as {user}: no method worked; tried {}", tried.join("; "))))
    }

    /// The OpenSSH command that opens a shell on the host (`args` empty) or runs `args` there,
    /// checking its host key as lab does: the same known-hosts files, policy, alias, key and
    /// connect timeout. `ssh -p PORT [-i KEY -o IdentitiesOnly=yes] -o UserKnownHostsFile=...
    /// [-o GlobalKnownHostsFile=...] -o StrictHostKeyChecking=... [-o HostKeyAlias=...] -o
    /// ConnectTimeout=N -l USER [-t] -- ADDRESS [ARGS...]`, each a separate argument.
    pub fn openssh_command(&self, args: &[String]) -> Vec<String> {
        let h = &self.host;
        let mut cmd = vec!["ssh".to_string(), "-p".into(), h.port.to_string()];
        if let Some(key) = &h.identity_file {
            cmd.extend(["-i".into(), key.to_string_lossy().into_owned(), "-o".into(), "IdentitiesOnly=yes".into()]);
        }
        cmd.extend(["-o".into(), format!("UserKnownHostsFile={}", self.known_hosts.user.display())]);
        // The default global files are ssh's own default too; none at all must be said.
        let global = &self.known_hosts.global;
        if global.is_empty() {
            cmd.extend(["-o".into(), "GlobalKnownHostsFile=/dev/null".into()]);
        } else if !global.iter().eq(known_hosts::GLOBAL_FILES.iter().map(std::path::Path::new)) {
            let files: Vec<String> = global.iter().map(|g| g.display().to_string()).collect();
            cmd.extend(["-o".into(), format!("GlobalKnownHostsFile={}", files.join(" "))]);
        }
        cmd.extend(["-o".into(), format!("StrictHostKeyChecking={}", self.policy.openssh())]);
        if let Some(alias) = &h.host_key_alias {
            cmd.extend(["-o".into(), format!("HostKeyAlias={alias}")]);
        }
        cmd.extend([
            "-o".into(),
            format!("ConnectTimeout={}", self.connect_timeout.as_secs()),
            "-l".into(),
            h.user.clone(),
        ]);
        if args.is_empty() {
            cmd.push("-t".into());
        }
        cmd.extend(["--".into(), h.address.clone()]);
        // `ssh` joins its arguments with spaces for the remote login shell to split again;
        // quoting each makes it arrive as exactly one argument (`-- sh -c '...'` still gives
        // a shell). Arguments from a command line hold no NUL byte, so none is refused here.
        cmd.extend(args.iter().filter_map(|a| shell_quote(a).ok()));
        cmd
    }

    /// An authenticated session and a channel to the host's Docker socket.
    pub fn docker_channel(&self) -> Result<(Session, Channel), SshError> {
        let sess = self.session()?;
        let ch = sess.channel_direct_streamlocal(DOCKER_SOCKET, None).map_err(|e| {
            let why = format!(
                "open a stream to {DOCKER_SOCKET} as {}: {} (is Docker installed and running, may {} use its socket, \
                 and does sshd allow AllowStreamLocalForwarding?)",
                self.host.user,
                e.message(),
                self.host.user
            );
            failed_by(Stage::Channel, why, e)
        })?;
        Ok((sess, ch))
    }

    /// Runs `argv` on the host. The command travels as one string that the user's login shell
    /// splits, as with any SSH command, so every element is quoted to reach the program as
    /// exactly one argument.
    pub fn exec(&self, argv: &[String]) -> Result<(Option<i64>, String, String), SshError> {
        let sess = self.session()?;
        let mut ch = sess.channel_session().map_err(|e| failed_by(Stage::Channel, e.message().to_string(), e))?;
        let command = shell_join(argv).map_err(|e| fail(Stage::Channel, format!("run a command: {e}")))?;
        ch.exec(&command).map_err(|e| failed_by(Stage::Channel, format!("run a command: {}", e.message()), e))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        ch.read_to_end(&mut stdout)
            .map_err(|e| failed_by(Stage::Channel, format!("read the command's output: {e}"), e))?;
        ch.stderr()
            .read_to_end(&mut stderr)
            .map_err(|e| failed_by(Stage::Channel, format!("read the command's errors: {e}"), e))?;
        let _ = ch.wait_close();
        let status = ch.exit_status().ok().map(i64::from);
        Ok((status, String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned()))
    }
}

/// libssh2's "timed out".
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

struct Permit<'a>(&'a Target);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut n = self.0.handshakes.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.0.handshake_done.notify_one();
    }
}

/// Resolves `host` with `resolver` on a thread of its own, waiting at most `timeout`: the
/// system resolver has no bound of its own that lab controls. A resolver that never returns
/// leaves its thread behind, which ends with the process.
pub fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
    resolver: impl FnOnce(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + 'static,
) -> Result<Vec<SocketAddr>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("lab-ssh-resolve".into())
        .spawn(move || {
            let _ = tx.send(resolver(&name, port));
        })
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(format!("cannot resolve {host}: {e}")),
        Err(_) => Err(format!("resolving the name {host} did not finish within {}s", timeout.as_secs())),
    }
}

/// Checks, within `timeout`, that the ssh-agent at `sock` answers a request for its keys.
/// libssh2 talks to the agent without any bound, so an agent that accepts the connection
/// and never answers would hang lab for good; asked first, it fails with its own name.
fn agent_answers(sock: &Path, timeout: Duration) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let at = sock.display();
    let mut s = UnixStream::connect(sock).map_err(|e| format!("cannot connect to {at}: {e}"))?;
    let silent = |e: std::io::Error| {
        if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
            format!("the agent at {at} did not answer within {}s", timeout.as_secs())
        } else {
            format!("talking to the agent at {at}: {e}")
        }
    };
    s.set_read_timeout(Some(timeout)).and_then(|()| s.set_write_timeout(Some(timeout))).map_err(silent)?;
    // SSH2_AGENTC_REQUEST_IDENTITIES: length 1, type 11.
    s.write_all(&[0, 0, 0, 1, 11]).map_err(silent)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).map_err(silent)?;
    let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).min(256 * 1024)];
    s.read_exact(&mut body).map_err(silent)?;
    Ok(())
}

fn agent_auth(sess: &Session, user: &str) -> Result<(), String> {
    let mut agent = sess.agent().map_err(|e| e.message().to_string())?;
    agent.connect().map_err(|e| format!("cannot connect: {}", e.message()))?;
    agent.list_identities().map_err(|e| e.message().to_string())?;
    let ids = agent.identities().map_err(|e| e.message().to_string())?;
    if ids.is_empty() {
        return Err("it holds no keys".into());
    }
    for id in &ids {
        if agent.userauth(user, id).is_ok() && sess.authenticated() {
            return Ok(());
        }
    }
    Err(match ids.len() {
        1 => "its one key was not accepted".to_string(),
        n => format!("none of its {n} keys was accepted"),
    })
}

/// Quotes one argument for a POSIX shell (shlex's quoting: words that need none stay as they
/// are). A NUL byte, which no command line can carry, is an error.
pub fn shell_quote(s: &str) -> Result<String, String> {
    shlex::try_quote(s).map(|q| q.into_owned()).map_err(|_| format!("the argument {s:?} holds a NUL byte"))
}

/// `argv` as one command line for a remote login shell, each argument quoted to arrive whole.
pub fn shell_join(argv: &[String]) -> Result<String, String> {
    Ok(argv.iter().map(|a| shell_quote(a)).collect::<Result<Vec<_>, _>>()?.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(operation_timeout: Duration) -> Target {
        let host = Endpoint {
            name: "m".into(),
            address: "10.0.0.1".into(),
            port: 22,
            user: "me".into(),
            identity_file: None,
            host_key_alias: None,
        };
        Target::new(
            host,
            KnownHostsFiles { user: "/nonexistent/kh".into(), global: vec![] },
            HostKeyPolicy::Strict,
            Duration::from_secs(1),
            operation_timeout,
            None,
        )
    }

    /// Issue 21, item 3: a refused connection keeps the OS's error as the cause, and lab's
    /// error keeps it below the SSH error.
    #[test]
    fn a_refused_connection_keeps_the_os_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut t = target(Duration::from_secs(1));
        t.host.address = "127.0.0.1".into();
        t.host.port = port;
        let err = t.tcp().unwrap_err();
        assert!(err.message.starts_with(&format!("127.0.0.1:{port}: ")), "{err}");
        let source = std::error::Error::source(&err).expect("the io error is kept");
        let io = source.downcast_ref::<std::io::Error>().expect("as an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
        let lab: lab_core::Error =
            crate::Remote::new(t, Path::new("/nonexistent"), crate::Hints { connect: None, auth: None }).error(err);
        let under = std::error::Error::source(&lab).and_then(std::error::Error::source);
        assert!(under.is_some_and(|e| e.downcast_ref::<std::io::Error>().is_some()), "{lab:?}");
    }

    #[test]
    fn a_resolver_that_never_returns_is_bounded() {
        let start = std::time::Instant::now();
        let err = resolve("never.example", 22, Duration::from_millis(300), |_, _| {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(vec![])
        })
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(err.contains("never.example") && err.contains("did not finish"), "{err}");
        let err =
            resolve("bad", 22, Duration::from_secs(5), |_, _| Err(std::io::Error::other("NXDOMAIN"))).unwrap_err();
        assert!(err.contains("cannot resolve bad: NXDOMAIN"), "{err}");
    }

    #[test]
    fn the_session_permit_is_bounded_once_every_slot_hangs() {
        let t = target(Duration::from_secs(1));
        let held: Vec<_> = (0..MAX_HANDSHAKES).map(|_| t.permit().unwrap()).collect();
        let start = std::time::Instant::now();
        let err = t.permit().err().expect("no slot");
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(err.message.contains("10.0.0.1") && err.message.contains("within 1s"), "{err}");
        drop(held);
        assert!(t.permit().is_ok());
    }

    #[test]
    fn an_agent_that_never_answers_is_bounded_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in listener.incoming().flatten() {
                held.push(c);
            }
        });
        let start = std::time::Instant::now();
        let err = agent_answers(&sock, Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(err.contains(&*sock.to_string_lossy()) && err.contains("did not answer"), "{err}");
        assert!(agent_answers(&dir.path().join("absent"), Duration::from_secs(1))
            .unwrap_err()
            .contains("cannot connect"));
    }

    /// What a POSIX shell makes of `line`: the arguments it passes to a program.
    fn shell_words(line: &str) -> Vec<String> {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("for a in {line}; do printf '%s\\0' \"$a\"; done"))
            .output()
            .expect("run /bin/sh");
        let text = String::from_utf8(out.stdout).unwrap();
        text.split_terminator('\0').map(str::to_string).collect()
    }

    #[test]
    fn arguments_are_quoted_one_by_one_and_arrive_whole() {
        let awkward: Vec<String> = [
            "docker",
            "a b; rm -rf /",
            "it's $(x)",
            "",
            "`id`",
            "\"double\" \\ back",
            "tab\there\nnewline",
            "*",
            "~root",
            "!bang ^caret {a,b} #hash",
            "ünïcode",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(shell_words(&shell_join(&awkward).unwrap()), awkward);
        assert_eq!(shell_quote("docker").unwrap(), "docker");
        assert!(shell_quote("a\0b").unwrap_err().contains("NUL"));
    }
}
