//! The driver's process: started with only its own settings in its environment, spoken to one
//! request at a time, its lines read with a bound, and its stderr kept as a short tail.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::wire::WireError;
use super::MAX_LINE;
use super::MAX_STDERR_LINE;
use super::STDERR_KEPT;
use crate::error::{Error, Result};

/// Who the driver is, for messages and for the mapping of its errors.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub(super) name: String,
    pub(super) path: PathBuf,
    /// `lab.toml: [drivers.NAME]`, for input errors.
    pub(super) table: String,
}

impl Identity {
    /// `driver static (/path/to/lab-driver-static)`.
    pub(super) fn label(&self) -> String {
        format!("driver {} ({})", self.name, self.path.display())
    }

    /// Maps an error the driver answered to lab's: `input` is bad input (exit 2) naming the
    /// driver's table and the field; `unsupported` is [`Error::Unsupported`]; `failed` (and any
    /// kind this lab does not know) an operational failure naming the node.
    pub(super) fn map_error(&self, op: &str, node: Option<&str>, e: WireError) -> Error {
        let node = e.node.as_deref().or(node);
        match e.kind.as_str() {
            "input" => {
                let what = match e.field.as_deref().filter(|f| !f.is_empty()) {
                    Some(f) => format!("{} {f}", self.table),
                    None => self.table.clone(),
                };
                Error::input(what, e.message)
            }
            "unsupported" => Error::Unsupported { driver: self.name.clone(), message: e.message },
            kind => {
                let message = if kind == "failed" { e.message } else { format!("{} (error kind {kind:?})", e.message) };
                match node {
                    Some(n) => Error::node(n, format!("driver {}: {op}", self.name), message),
                    None => Error::op(format!("driver {}: {op}", self.name), message),
                }
            }
        }
    }
}

/// The last lines a driver wrote on stderr.
pub(super) type Tail = Arc<StdMutex<VecDeque<String>>>;

/// The running driver process and its pipes.
pub(super) struct Conn {
    pub(super) child: Child,
    pub(super) stdin: ChildStdin,
    pub(super) stdout: BufReader<ChildStdout>,
    pub(super) stderr_task: tokio::task::JoinHandle<()>,
    pub(super) next_id: u64,
    /// Why the process may not be used any more (it died, timed out or broke the protocol).
    pub(super) dead: Option<String>,
}

impl Drop for Conn {
    /// The child is killed by `kill_on_drop`; a grandchild it left holding stderr open must
    /// not keep the reader alive.
    fn drop(&mut self) {
        self.stderr_task.abort();
    }
}

/// How a request went wrong at the protocol level (not an error the driver answered).
pub(super) enum Fault {
    Timeout(Duration),
    Broken(String),
}

impl Conn {
    /// Starts the program, without the `LAB_*` variables that are not its own
    /// ([`not_its_own`]); bad only if it cannot be executed at all.
    pub(super) fn spawn(id: &Identity, tail: Tail) -> Result<Conn> {
        let mut command = tokio::process::Command::new(&id.path);
        for var in not_its_own(&id.name, std::env::vars_os().map(|(k, _)| k)) {
            command.env_remove(var);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::op(id.label(), format!("cannot start the program: {e}")).with_source(e))?;
        let (Some(stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::op(id.label(), "cannot open the program's stdin, stdout and stderr"));
        };
        let name = id.name.clone();
        let stderr_task = tokio::spawn(async move {
            let mut stderr = BufReader::new(stderr);
            loop {
                let line = match read_bounded(&mut stderr, MAX_STDERR_LINE, true).await {
                    Ok(Bounded::Line(l)) => String::from_utf8_lossy(&l).into_owned(),
                    Ok(Bounded::TooLong(l)) => format!("{}...", String::from_utf8_lossy(&l)),
                    Ok(Bounded::End) | Err(_) => break,
                };
                // The driver's own log: shown under -v, kept for error messages.
                tracing::info!(driver = %name, "{line}");
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == STDERR_KEPT {
                    t.pop_front();
                }
                t.push_back(truncate(&line, 300));
            }
        });
        Ok(Conn { child, stdin, stdout: BufReader::new(stdout), stderr_task, next_id: 0, dead: None })
    }

    /// Sends one line and reads one line back within `limit`; any fault leaves the process
    /// killed and the connection dead.
    pub(super) async fn exchange(&mut self, message: &Value, limit: Duration) -> std::result::Result<Value, Fault> {
        if let Some(why) = &self.dead {
            return Err(Fault::Broken(format!("it cannot be used any more: {why}")));
        }
        let result = tokio::time::timeout(limit, async {
            let mut line = serde_json::to_string(message).map_err(|e| e.to_string())?;
            line.push('\n');
            if let Err(e) = self.stdin.write_all(line.as_bytes()).await {
                return Err(self.ended(&format!("stopped reading its stdin ({e})")).await);
            }
            if let Err(e) = self.stdin.flush().await {
                return Err(self.ended(&format!("stopped reading its stdin ({e})")).await);
            }
            match read_bounded(&mut self.stdout, MAX_LINE, false).await {
                Ok(Bounded::Line(bytes)) => match String::from_utf8(bytes) {
                    Ok(answer) => serde_json::from_str::<Value>(&answer)
                        .map_err(|e| format!("printed a line that is not JSON ({e}): {:?}", truncate(&answer, 200))),
                    Err(e) => Err(format!("printed something that is not a line of text ({e})")),
                },
                Ok(Bounded::TooLong(_)) => {
                    Err(format!("printed a line longer than {} MiB, lab's bound for one message", MAX_LINE >> 20))
                }
                Ok(Bounded::End) => Err(self.ended("closed its stdout without answering").await),
                Err(e) => Err(format!("printed something that is not a line of text ({e})")),
            }
        })
        .await;
        let fault = match result {
            Ok(Ok(v)) if v.is_object() => return Ok(v),
            Ok(Ok(v)) => Fault::Broken(format!("answered {} instead of a JSON object", truncate(&v.to_string(), 200))),
            Ok(Err(why)) => Fault::Broken(why),
            Err(_) => Fault::Timeout(limit),
        };
        let _ = self.child.start_kill();
        self.dead = Some(match &fault {
            Fault::Timeout(d) => format!("it did not answer within {}", secs(*d)),
            Fault::Broken(why) => why.clone(),
        });
        Err(fault)
    }

    /// Why the process stopped talking: its exit status if it exited (waited for briefly),
    /// else `what`.
    async fn ended(&mut self, what: &str) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => match status.code() {
                Some(code) => format!("exited with status {code} before answering"),
                None => format!("was killed ({status}) before answering"),
            },
            _ => what.to_string(),
        }
    }
}

/// Which of lab's environment variables driver `name` must not see: every `LAB_*` but its own
/// settings, `LAB_DRIVERS__NAME__*` (its name in any case, as figment reads it). Other drivers'
/// tables may hold API tokens; lab's own settings (`LAB_CLUSTER`, `LAB_REGISTRY__*`...) reach
/// the driver through the handshake when they concern it, and a driver that read them from its
/// environment would see settings of commands that are not about it (`lab drivers`) or that a
/// flag overrode. Everything that is not `LAB_*` (PATH, HOME, SSH_AUTH_SOCK, DOCKER_*) passes.
pub(super) fn not_its_own(name: &str, vars: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    vars.filter(|var| {
        let var = var.to_string_lossy();
        let Some(rest) = var.strip_prefix("LAB_") else { return false };
        let own = rest
            .strip_prefix("DRIVERS__")
            .and_then(|r| r.split_once("__"))
            .is_some_and(|(driver, key)| driver.eq_ignore_ascii_case(name) && !key.is_empty());
        !own
    })
    .collect()
}

/// A name a shell can export: `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn shell_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One line read with a bound by [`read_bounded`].
#[derive(Debug, PartialEq)]
pub(super) enum Bounded {
    /// A whole line, without its `\n` (the last line of the input may lack one).
    Line(Vec<u8>),
    /// A line longer than the bound: its first bytes, as many as the bound.
    TooLong(Vec<u8>),
    /// The end of the input, with nothing read.
    End,
}

/// Reads one line of at most `max` bytes, never holding more. A longer line is
/// [`Bounded::TooLong`]: with `skip`, once the rest of it has been read and dropped (the next
/// call reads the next line); without, as soon as the bound is passed, not waiting for the line
/// to end (it may never end).
pub(super) async fn read_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    skip: bool,
) -> std::io::Result<Bounded> {
    let mut line = Vec::new();
    let mut over = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(match (over, line.is_empty()) {
                (true, _) => Bounded::TooLong(line),
                (false, true) => Bounded::End,
                (false, false) => Bounded::Line(line),
            });
        }
        let (chunk, used, ends) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = max - line.len();
        over |= chunk.len() > room;
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        r.consume(used);
        if ends {
            return Ok(if over { Bounded::TooLong(line) } else { Bounded::Line(line) });
        }
        if over && !skip {
            return Ok(Bounded::TooLong(line));
        }
    }
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

pub(super) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn a_driver_keeps_only_its_own_lab_variables() {
        let vars = [
            "PATH",
            "HOME",
            "LABEL",
            "LAB_CLUSTER",
            "LAB_WORKERS",
            "LAB_REGISTRY__TLS",
            "LAB_DRIVERS__OTHER__API_TOKEN",
            "LAB_DRIVERS__FAKER__X",
            "LAB_DRIVERS__FAKE",
            "LAB_DRIVERS__FAKE__",
            "LAB_DRIVERS__FAKE__REGION",
            "LAB_DRIVERS__fake__NESTED__KEY",
        ];
        let removed = not_its_own("fake", vars.iter().map(std::ffi::OsString::from));
        assert_eq!(
            removed,
            [
                "LAB_CLUSTER",
                "LAB_WORKERS",
                "LAB_REGISTRY__TLS",
                "LAB_DRIVERS__OTHER__API_TOKEN",
                "LAB_DRIVERS__FAKER__X",
                "LAB_DRIVERS__FAKE",
                "LAB_DRIVERS__FAKE__"
            ]
        );
    }

    /// The bounded reader keeps at most `max` bytes of a line, and with `skip` finds the next
    /// line after a long one.
    #[tokio::test]
    async fn lines_are_read_with_a_bound() {
        let mut r: &[u8] = b"short\nthis one is long\nlast";
        let mut got = vec![];
        loop {
            match read_bounded(&mut r, 8, true).await.unwrap() {
                Bounded::End => break,
                b => got.push(b),
            }
        }
        assert_eq!(
            got,
            [Bounded::Line(b"short".to_vec()), Bounded::TooLong(b"this one".to_vec()), Bounded::Line(b"last".to_vec())]
        );
        // Without skip, a line that has not ended (the writer is still open) is too long at once.
        let (mut w, r) = tokio::io::duplex(64);
        w.write_all(b"this one is long").await.unwrap();
        let mut r = BufReader::new(r);
        let read = tokio::time::timeout(Duration::from_secs(5), read_bounded(&mut r, 8, false)).await;
        assert_eq!(read.expect("waited for the line to end").unwrap(), Bounded::TooLong(b"this one".to_vec()));
        let mut r: &[u8] = b"12345678\n";
        assert_eq!(read_bounded(&mut r, 8, false).await.unwrap(), Bounded::Line(b"12345678".to_vec()));
    }
}
