//! A local unix socket per host that leads to that host's Docker engine over SSH, so that
//! bollard reaches a remote engine exactly as it reaches a local one.
//!
//! A std thread accepts local connections; each gets its own thread, SSH session and
//! `direct-streamlocal` channel to `/var/run/docker.sock` (the host key is verified every
//! time), and bytes are pumped both ways until either side closes. If the host cannot be
//! reached, the local connection is answered with an HTTP 502 whose JSON `message` is the
//! reason, so that it reaches the user through bollard as the engine's own error would,
//! naming the host and the cause instead of "connection closed". Tunnels live as long as the
//! lab process.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ssh2::{Channel, Session};

use crate::client::Target;

/// How much is buffered in each direction before reading that side pauses.
const BUFFER: usize = 256 * 1024;
/// libssh2's "would block".
const EAGAIN: i32 = -37;
/// After the local side has closed, how long the engine may take to close its side.
const DRAIN: Duration = Duration::from_secs(30);

/// Binds `socket` (replacing a stale file) and serves it from a background thread.
pub fn start(target: Arc<Target>, socket: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    let name = format!("lab-ssh-{}", target.host.name);
    std::thread::Builder::new().name(name).spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let target = target.clone();
            let _ = std::thread::Builder::new()
                .name(format!("lab-ssh-{}-conn", target.host.name))
                .spawn(move || serve(&target, conn));
        }
    })?;
    Ok(())
}

fn serve(target: &Target, conn: UnixStream) {
    match target.docker_channel() {
        Ok((sess, ch)) => {
            if let Err(e) = pump(conn, &sess, ch) {
                tracing::debug!(host = %target.host.name, "docker stream ended: {e}");
            }
        }
        Err(e) => {
            tracing::debug!(host = %target.host.name, "{e}");
            // Without the host's name: every error lab makes of an engine's answer names the
            // node already.
            refuse(conn, &e.to_string());
        }
    }
}

/// Answers the request waiting on `conn` with a 502 carrying `message`.
fn refuse(mut conn: UnixStream, message: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the request's head first: answering before the client has written can make its
    // write fail, and then it reports that instead of our message.
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let body = serde_json::json!({ "message": message }).to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

/// Copies bytes both ways between `conn` and `ch` until the engine closes its side (or, once
/// the client has closed its side, until [`DRAIN`] passes). Both ends are non-blocking and
/// polled by this one thread: libssh2 sessions cannot be read and written from two threads.
///
/// Why it is long: it is one loop that polls four directions (client to buffer, buffer to
/// channel, channel to buffer, buffer to client) in turn, and all four share its state (the
/// two buffers, the three end-of-stream flags, the back-off); split apart, each piece would
/// take and hand back that whole state, and the order of the turns would no longer be visible.
fn pump(mut conn: UnixStream, sess: &Session, mut ch: Channel) -> std::io::Result<()> {
    conn.set_nonblocking(true)?;
    sess.set_blocking(false);
    let mut up: Vec<u8> = Vec::new(); // local -> engine
    let mut down: Vec<u8> = Vec::new(); // engine -> local
    let mut buf = vec![0u8; 64 * 1024];
    let (mut local_eof, mut eof_sent, mut remote_eof) = (false, false, false);
    let mut idle = Duration::from_micros(200);
    let mut local_closed_at: Option<Instant> = None;
    loop {
        let mut moved = false;
        if !local_eof && up.len() < BUFFER {
            match conn.read(&mut buf) {
                Ok(0) => {
                    local_eof = true;
                    local_closed_at = Some(Instant::now());
                    moved = true;
                }
                Ok(n) => {
                    up.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !up.is_empty() {
            match ch.write(&up) {
                Ok(n) => {
                    up.drain(..n);
                    moved |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if local_eof && up.is_empty() && !eof_sent {
            match ch.send_eof() {
                Ok(()) => eof_sent = true,
                Err(e) if e.code() == ssh2::ErrorCode::Session(EAGAIN) => {}
                Err(_) => eof_sent = true,
            }
        }
        if !remote_eof && down.len() < BUFFER {
            match ch.read(&mut buf) {
                Ok(0) => {
                    if ch.eof() {
                        remote_eof = true;
                        moved = true;
                    }
                }
                Ok(n) => {
                    down.extend_from_slice(&buf[..n]);
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        if !down.is_empty() {
            match conn.write(&down) {
                Ok(n) => {
                    down.drain(..n);
                    moved |= n > 0;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                // The client went away: nothing left to deliver.
                Err(_) => return Ok(()),
            }
        }
        if remote_eof && down.is_empty() {
            let _ = conn.shutdown(std::net::Shutdown::Write);
            return Ok(());
        }
        if local_closed_at.is_some_and(|t| t.elapsed() > DRAIN) {
            return Ok(());
        }
        if moved {
            idle = Duration::from_micros(200);
        } else {
            std::thread::sleep(idle);
            idle = (idle * 2).min(Duration::from_millis(10));
        }
    }
}

/// The directory this process's sockets live in: `<dir>/<pid>`, after removing the
/// directories of lab processes that are gone.
pub fn socket_dir(dir: &Path) -> PathBuf {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    dir.join(std::process::id().to_string())
}
