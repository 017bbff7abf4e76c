//! Drivers as programs, in any language: [`ExternalDriver`] is a [`Driver`] that talks to an
//! executable over newline-delimited JSON on its stdin and stdout (`docs/driver-protocol.md`
//! is the contract, `docs/driver-protocol.schema.json` its schema).
//!
//! A driver name that no crate registered resolves, through [`find`], to the program named by
//! `[drivers.NAME] command`, or else to an executable `lab-driver-NAME` on `PATH`; the CLI
//! tries it when [`lookup`](crate::driver::lookup) does not know the name, and lists what
//! [`on_path`] finds in `lab drivers`.
//!
//! One process serves one lab command: it is started at the handshake and every request goes
//! to it in turn, one at a time, under a mutex. Why not a process per request: the handshake
//! checks the driver's configuration once, before anything is made; a driver may keep what it
//! learnt (connections, a parsed inventory) between requests; and an interpreter's start-up is
//! paid once, not once per `observe`. The cost, requests waiting for each other, is small
//! because lab's requests are short, except `create`, which a driver may make return early
//! (lab waits for the engine itself).
//!
//! lab never hangs on a driver, and a driver cannot fill lab's memory: every request is
//! bounded by a timeout and every line it prints by a size ([`MAX_LINE`] on stdout; stderr
//! lines are cut), and a driver that dies, closes its stdout, answers late or prints a line
//! that is not JSON or is too long is killed and reported with its name, its path and the last
//! lines it wrote on stderr (its log, shown under `-v`).
//! The process is killed when the driver is dropped.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::Mutex;

use crate::driver::{Capabilities, Driver, DriverContext, ExecOutput, Machine, MachineState, NodeEngine};
use crate::error::{engine_message, Error, Result};
use crate::topology::{check_node_name, NodeSpec, Role};

/// The protocol version this lab speaks. A driver that answers the handshake with another is
/// refused, naming both.
pub const PROTOCOL_VERSION: u64 = 1;

/// What an external driver's executable is called on `PATH`: `lab-driver-NAME`.
pub const PROGRAM_PREFIX: &str = "lab-driver-";

/// How long a request may take unless `[drivers.NAME] timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `create`, `start`, `destroy` and `teardown` may take (machines can be slow to make
/// and remove) unless `[drivers.NAME] create_timeout` says otherwise.
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long `lab drivers` waits for each driver's handshake.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Seconds bollard waits on one request to an engine (what the built-in drivers use).
const ENGINE_TIMEOUT_SECS: u64 = 120;

/// The longest line lab reads from a driver's stdout (1 MiB). lab's largest answers, an
/// `observe` of a big cluster or the output of an `exec`, are kilobytes; a line past this is a
/// broken driver, and reading it whole let one line take lab to gigabytes of memory.
pub const MAX_LINE: usize = 1 << 20;

/// The longest line of a driver's stderr lab keeps; the rest of a longer line is read and
/// dropped, so a driver's log cannot grow lab's memory either.
const MAX_STDERR_LINE: usize = 4096;
/// Lines of a driver's stderr kept for error messages.
const STDERR_KEPT: usize = 20;
/// Of those, how many an error message quotes.
const STDERR_QUOTED: usize = 5;

/// The keys of `[drivers.NAME]` that are lab's, not the driver's: they are read by lab and not
/// passed on in the handshake.
pub const LAB_KEYS: &[&str] = &["command", "timeout", "create_timeout"];

/// An external driver's executable, and where lab found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The driver's name (`--driver NAME`).
    pub name: String,
    /// The executable.
    pub path: PathBuf,
    /// True when `[drivers.NAME] command` named it; false when it was found on `PATH`.
    pub from_config: bool,
}

/// A driver name that can be part of a file name: letters, digits, `-`, `_`, starting with a
/// letter or digit.
fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()).collect())
        .unwrap_or_default()
}

/// The program `[drivers.NAME] command = text` names, as an absolute path: like a shell, a bare
/// name is looked up on `PATH` (`None` when no directory has it), and anything with a slash is
/// a path, relative to the current directory. The CLI records this path, not the text, so a
/// later command from another directory, or with another `PATH`, runs the same program.
pub fn resolve_command(text: &str) -> Option<PathBuf> {
    if text.contains('/') {
        Some(std::path::absolute(text).unwrap_or_else(|_| PathBuf::from(text)))
    } else {
        path_dirs().into_iter().map(|d| d.join(text)).find(|p| is_executable(p))
    }
}

/// The program for driver `name`: `[drivers.NAME] command` in its table `config` if set (bad
/// input, naming `source` and the key, when it is not an executable), else `lab-driver-NAME`
/// on `PATH`. `None` when there is neither.
pub fn find(name: &str, config: &Value, source: &str) -> Result<Option<Program>> {
    if let Some(command) = config.get("command") {
        let what = format!("{source}: [drivers.{name}] command");
        let Some(text) = command.as_str().filter(|s| !s.trim().is_empty()) else {
            return Err(Error::input(what, format!("{command} is not the path of a program")));
        };
        let Some(path) = resolve_command(text) else {
            return Err(Error::input(what, format!("{text:?} is not an executable on PATH")));
        };
        if !is_executable(&path) {
            let why = if path.exists() { "is not an executable file" } else { "does not exist" };
            return Err(Error::input(what, format!("{text:?} {why}")));
        }
        return Ok(Some(Program { name: name.to_string(), path, from_config: true }));
    }
    if !plain_name(name) {
        return Ok(None);
    }
    let file = format!("{PROGRAM_PREFIX}{name}");
    Ok(path_dirs().into_iter().map(|d| d.join(&file)).find(|p| is_executable(p)).map(|path| Program {
        name: name.to_string(),
        path,
        from_config: false,
    }))
}

/// Every `lab-driver-NAME` executable on `PATH`, by name; where two directories have one, the
/// first on `PATH` wins, as it would for a shell.
pub fn on_path() -> Vec<Program> {
    let mut found: BTreeMap<String, Program> = BTreeMap::new();
    for dir in path_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for file in names {
            let Some(name) = file.to_str().and_then(|f| f.strip_prefix(PROGRAM_PREFIX)) else { continue };
            if !plain_name(name) || found.contains_key(name) {
                continue;
            }
            let path = dir.join(&file);
            if is_executable(&path) {
                found.insert(name.to_string(), Program { name: name.to_string(), path, from_config: false });
            }
        }
    }
    found.into_values().collect()
}

/// The error for a driver name that is neither registered nor an external program: it lists
/// both kinds, so that a typo is easy to see.
pub fn unknown(name: &str) -> Error {
    let registered: Vec<&str> = crate::driver::registry().map(|m| m.keys().copied().collect()).unwrap_or_default();
    let external: Vec<String> = on_path().into_iter().map(|p| p.name).collect();
    let external = if external.is_empty() {
        format!("no {PROGRAM_PREFIX}NAME programs on PATH")
    } else {
        format!("external drivers on PATH: {}", external.join(", "))
    };
    Error::input(
        "--driver",
        format!("unknown driver {name:?}; registered drivers: {}; {external}", registered.join(", ")),
    )
}

/// Per-request time limits, from `[drivers.NAME] timeout` and `create_timeout` (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The handshake and every request except those below.
    pub timeout: Duration,
    /// `create`, `start`, `destroy` and `teardown`.
    pub create_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { timeout: DEFAULT_TIMEOUT, create_timeout: DEFAULT_CREATE_TIMEOUT }
    }
}

impl Limits {
    /// Reads the limits from a driver's table; a value that is not a positive number of
    /// seconds is bad input naming `source`, the table, the key and the value.
    pub fn from_config(name: &str, config: &Value, source: &str) -> Result<Limits> {
        let read = |key: &str, default: Duration| -> Result<Duration> {
            match config.get(key) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e9)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        Error::input(
                            format!("{source}: [drivers.{name}] {key}"),
                            format!("{v} is not a number of seconds greater than 0"),
                        )
                    }),
            }
        };
        Ok(Limits {
            timeout: read("timeout", DEFAULT_TIMEOUT)?,
            create_timeout: read("create_timeout", DEFAULT_CREATE_TIMEOUT)?,
        })
    }
}

/// The driver's table without lab's own keys ([`LAB_KEYS`]): what the driver is sent.
fn driver_table(config: &Value) -> Value {
    match config {
        Value::Object(m) => Value::Object(
            m.iter().filter(|(k, _)| !LAB_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
        Value::Null => json!({}),
        other => other.clone(),
    }
}

/// What a driver says about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the driver speaks.
    pub lab_protocol: u64,
    /// One line for `lab drivers`.
    #[serde(default)]
    pub description: String,
    /// What the driver can do.
    #[serde(default)]
    pub capabilities: WireCapabilities,
    /// The options the driver takes in its `[drivers.NAME]` table.
    #[serde(default)]
    pub options: Vec<DriverOption>,
}

/// [`Capabilities`] as the protocol spells them; a missing one is false, and ones this lab
/// does not know are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WireCapabilities {
    /// See [`Capabilities::create`].
    pub create: bool,
    /// See [`Capabilities::destroy`].
    pub destroy: bool,
    /// See [`Capabilities::start`].
    pub start: bool,
    /// See [`Capabilities::exec`].
    pub exec: bool,
    /// See [`Capabilities::shell`].
    pub shell: bool,
}

impl From<WireCapabilities> for Capabilities {
    fn from(c: WireCapabilities) -> Self {
        Capabilities::none().create(c.create).destroy(c.destroy).start(c.start).shell(c.shell).exec(c.exec)
    }
}

/// The type of a driver option's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionType {
    /// Text (the default).
    #[default]
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// true or false.
    Boolean,
}

/// One option a driver takes, as it declares it in the handshake. (Issue 10, item 4 builds
/// CLI flags from these; for now lab only carries them.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverOption {
    /// The key in `[drivers.NAME]`: lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// The value's type.
    #[serde(rename = "type", default)]
    pub kind: OptionType,
    /// One line of help.
    #[serde(default)]
    pub help: String,
    /// The value is a file's path (relative to where it was given).
    #[serde(default)]
    pub path: bool,
    /// The value is secret: lab never prints it.
    #[serde(default)]
    pub secret: bool,
    /// The option may be given more than once (its value is then a list).
    #[serde(default)]
    pub repeatable: bool,
}

/// A machine as the protocol spells it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireMachine {
    name: String,
    /// Optional: when absent, lab's topology decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<Role>,
    state: WireState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireState {
    Running,
    Stopped,
    Broken,
}

impl From<&Machine> for WireMachine {
    fn from(m: &Machine) -> Self {
        let (state, reason) = match &m.state {
            MachineState::Running => (WireState::Running, None),
            MachineState::Stopped => (WireState::Stopped, None),
            MachineState::Broken(r) => (WireState::Broken, Some(r.clone())),
        };
        WireMachine { name: m.name.clone(), role: m.role, state, reason, address: m.address.clone() }
    }
}

impl From<WireMachine> for Machine {
    fn from(w: WireMachine) -> Self {
        let state = match w.state {
            WireState::Running => MachineState::Running,
            WireState::Stopped => MachineState::Stopped,
            WireState::Broken => {
                MachineState::Broken(w.reason.unwrap_or_else(|| "the driver says it is broken".into()))
            }
        };
        Machine { name: w.name, role: w.role, state, address: w.address }
    }
}

/// The answer to `engine`.
#[derive(Debug, Clone, Deserialize)]
struct WireEngine {
    /// `unix:///path`, `tcp://host:port` or `ssh://[user@]host[:port]`.
    host: String,
    /// TLS files for a `tcp://` engine.
    #[serde(default)]
    tls: Option<WireTls>,
    advertise_addr: String,
    /// What `lab env` exports; default `DOCKER_HOST` (and the TLS variables) from the above.
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct WireTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
struct WireExec {
    #[serde(default)]
    status: Option<i64>,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
}

/// An error a driver answered with.
#[derive(Debug, Clone, Deserialize)]
struct WireError {
    kind: String,
    message: String,
    #[serde(default)]
    node: Option<String>,
    /// For `input` errors: the key of the driver's table at fault (e.g. `engines.manager`).
    #[serde(default)]
    field: Option<String>,
}

/// Who the driver is, for messages and for the mapping of its errors.
#[derive(Debug, Clone)]
struct Identity {
    name: String,
    path: PathBuf,
    /// `lab.toml: [drivers.NAME]`, for input errors.
    table: String,
}

impl Identity {
    /// `driver static (/path/to/lab-driver-static)`.
    fn label(&self) -> String {
        format!("driver {} ({})", self.name, self.path.display())
    }

    /// Maps an error the driver answered to lab's: `input` is bad input (exit 2) naming the
    /// driver's table and the field; `unsupported` is [`Error::Unsupported`]; `failed` (and any
    /// kind this lab does not know) an operational failure naming the node.
    fn map_error(&self, op: &str, node: Option<&str>, e: WireError) -> Error {
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
type Tail = Arc<StdMutex<VecDeque<String>>>;

/// The running driver process and its pipes.
struct Conn {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_task: tokio::task::JoinHandle<()>,
    next_id: u64,
    /// Why the process may not be used any more (it died, timed out or broke the protocol).
    dead: Option<String>,
}

impl Drop for Conn {
    /// The child is killed by `kill_on_drop`; a grandchild it left holding stderr open must
    /// not keep the reader alive.
    fn drop(&mut self) {
        self.stderr_task.abort();
    }
}

/// How a request went wrong at the protocol level (not an error the driver answered).
enum Fault {
    Timeout(Duration),
    Broken(String),
}

impl Conn {
    /// Starts the program, without the `LAB_*` variables that are not its own
    /// ([`not_its_own`]); bad only if it cannot be executed at all.
    fn spawn(id: &Identity, tail: Tail) -> Result<Conn> {
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
            .map_err(|e| Error::op(id.label(), format!("cannot start the program: {e}")))?;
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
    async fn exchange(&mut self, message: &Value, limit: Duration) -> std::result::Result<Value, Fault> {
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
fn not_its_own(name: &str, vars: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
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
fn shell_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One line read with a bound by [`read_bounded`].
#[derive(Debug, PartialEq)]
enum Bounded {
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
async fn read_bounded<R: AsyncBufRead + Unpin>(r: &mut R, max: usize, skip: bool) -> std::io::Result<Bounded> {
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

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}...", s.chars().take(max).collect::<String>())
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A driver that is a program speaking `docs/driver-protocol.md`.
pub struct ExternalDriver {
    id: Identity,
    hello: Hello,
    limits: Limits,
    fixed: Option<Vec<NodeSpec>>,
    conn: Mutex<Conn>,
    tail: Tail,
    /// `ssh -L` tunnels to `ssh://` engines, killed with the driver.
    tunnels: Mutex<BTreeMap<String, (Child, PathBuf)>>,
    state_dir: Option<PathBuf>,
}

impl std::fmt::Debug for ExternalDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalDriver").field("name", &self.id.name).field("path", &self.id.path).finish()
    }
}

impl Program {
    fn identity(&self, source: &str) -> Identity {
        Identity {
            name: self.name.clone(),
            path: self.path.clone(),
            table: format!("{source}: [drivers.{}]", self.name),
        }
    }

    /// Starts the driver for one cluster: the handshake (which sends the driver its table,
    /// without lab's own keys) and the `fixed_nodes` request. Bad configuration the driver
    /// reports is bad input naming its table.
    pub async fn start(&self, ctx: DriverContext) -> Result<ExternalDriver> {
        let limits = Limits::from_config(&self.name, &ctx.config, &ctx.config_source)?;
        let hello = json!({
            "lab_protocol": PROTOCOL_VERSION,
            "driver": self.name,
            "cluster": ctx.cluster.as_str(),
            "state_dir": ctx.state_dir,
            "cache_dir": ctx.cache_dir,
            "config": driver_table(&ctx.config),
        });
        let mut d = ExternalDriver::handshake(self.identity(&ctx.config_source), hello, limits).await?;
        d.state_dir = Some(ctx.state_dir);
        d.fixed = match d.call("fixed_nodes", None, json!({}), d.limits.timeout).await {
            Ok(Value::Null) => None,
            Ok(v) => {
                let nodes = d.decode::<Vec<NodeSpec>>("fixed_nodes", v)?;
                d.check_names("fixed_nodes", nodes.iter().map(|n| n.name.as_str()))?;
                Some(nodes)
            }
            Err(Error::Unsupported { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(d)
    }

    /// The driver's handshake answer without a cluster (`"cluster": null`), for `lab drivers`.
    pub async fn describe(&self, timeout: Duration) -> Result<Hello> {
        let hello = json!({
            "lab_protocol": PROTOCOL_VERSION,
            "driver": self.name,
            "cluster": null,
            "state_dir": null,
            "cache_dir": null,
            "config": {},
        });
        let limits = Limits { timeout, create_timeout: timeout };
        Ok(ExternalDriver::handshake(self.identity("lab drivers"), hello, limits).await?.hello)
    }
}

impl ExternalDriver {
    /// Starts `id`'s program and exchanges the handshake within `limits.timeout`.
    async fn handshake(id: Identity, hello: Value, limits: Limits) -> Result<ExternalDriver> {
        let tail: Tail = Arc::default();
        let mut conn = Conn::spawn(&id, tail.clone())?;
        let answer = conn.exchange(&hello, limits.timeout).await;
        let mut d = ExternalDriver {
            id,
            hello: Hello {
                lab_protocol: PROTOCOL_VERSION,
                description: String::new(),
                capabilities: Default::default(),
                options: vec![],
            },
            limits,
            fixed: None,
            conn: Mutex::new(conn),
            tail,
            tunnels: Mutex::default(),
            state_dir: None,
        };
        let answer = match answer {
            Ok(a) => a,
            Err(fault) => return Err(d.fault("handshake", None, fault).await),
        };
        // The version first: a driver of another version may answer in another shape.
        let version = answer.get("ok").and_then(|ok| ok.get("lab_protocol")).or_else(|| answer.get("lab_protocol"));
        match version.map(|v| v.as_u64()) {
            Some(Some(PROTOCOL_VERSION)) => {}
            Some(other) => {
                let theirs =
                    other.map(|v| v.to_string()).unwrap_or_else(|| version.map(Value::to_string).unwrap_or_default());
                return Err(Error::Unsupported {
                    driver: d.id.name.clone(),
                    message: format!(
                        "{} speaks lab driver protocol {theirs}, but this lab speaks protocol {PROTOCOL_VERSION}; upgrade the one that is older",
                        d.id.path.display()
                    ),
                });
            }
            None if answer.get("error").is_some() => {}
            None => {
                return Err(d.broken("handshake", None, "answered the handshake without \"lab_protocol\"".into()).await)
            }
        }
        let ok = d.outcome("handshake", None, answer).await?;
        d.hello = d.decode("handshake", ok)?;
        if let Some(o) =
            d.hello.options.iter().find(|o| !plain_name(&o.name) || o.name.chars().any(|c| c.is_ascii_uppercase()))
        {
            return Err(d
                .broken("handshake", None, format!("declares an option with an invalid name {:?}", o.name))
                .await);
        }
        Ok(d)
    }

    /// The driver's handshake answer: description, capabilities, options.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// The options the driver declared.
    pub fn options(&self) -> &[DriverOption] {
        &self.hello.options
    }

    /// `"; its stderr ended with: a | b"`, or nothing when it wrote nothing.
    async fn stderr_tail(&self) -> String {
        // Let the stderr reader catch up with a process that just died.
        {
            let mut conn = self.conn.lock().await;
            // (A finished JoinHandle must not be polled again.)
            if conn.dead.is_some() && !conn.stderr_task.is_finished() {
                let _ = tokio::time::timeout(Duration::from_millis(500), &mut conn.stderr_task).await;
            }
        }
        let t = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_empty() {
            return "; it wrote nothing on stderr".into();
        }
        let last: Vec<&str> = t.iter().skip(t.len().saturating_sub(STDERR_QUOTED)).map(String::as_str).collect();
        format!("; its stderr ended with: {}", last.join(" | "))
    }

    async fn fault(&self, op: &str, node: Option<&str>, fault: Fault) -> Error {
        match fault {
            Fault::Timeout(d) => {
                let tail = self.stderr_tail().await;
                Error::Timeout {
                    node: node.map(str::to_string).unwrap_or_else(|| format!("driver {}", self.id.name)),
                    what: format!("{} to answer {op} (it was stopped)", self.id.label()),
                    secs: d.as_secs().max(1),
                    hint: Some(format!(
                        "raise [drivers.{}] {} if the driver needs longer{tail}",
                        self.id.name,
                        if self.long(op) { "create_timeout" } else { "timeout" }
                    )),
                }
            }
            Fault::Broken(why) => self.broken(op, node, why).await,
        }
    }

    async fn broken(&self, op: &str, node: Option<&str>, why: String) -> Error {
        {
            let mut conn = self.conn.lock().await;
            let _ = conn.child.start_kill();
            conn.dead.get_or_insert_with(|| why.clone());
        }
        // `driver NAME (PATH): OP: what it did; its stderr ended with: ...`
        let message = format!("{why}{}", self.stderr_tail().await);
        match node {
            Some(n) => Error::node(n, format!("{}: {op}", self.id.label()), message),
            None => Error::op(format!("{}: {op}", self.id.label()), message),
        }
    }

    /// The `ok` value of an answer, or the error it carries, mapped.
    async fn outcome(&self, op: &str, node: Option<&str>, answer: Value) -> Result<Value> {
        let Value::Object(mut m) = answer else { unreachable!("exchange returns objects") };
        if let Some(e) = m.remove("error") {
            return match serde_json::from_value::<WireError>(e.clone()) {
                Ok(e) => Err(self.id.map_error(op, node, e)),
                Err(why) => Err(self
                    .broken(
                        op,
                        node,
                        format!(
                            "answered an error that does not follow the protocol ({why}): {}",
                            truncate(&e.to_string(), 200)
                        ),
                    )
                    .await),
            };
        }
        match m.remove("ok") {
            Some(v) => Ok(v),
            None => Err(self.broken(op, node, "answered with neither \"ok\" nor \"error\"".into()).await),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, op: &str, v: Value) -> Result<T> {
        serde_json::from_value(v.clone()).map_err(|e| {
            Error::op(
                format!("{}: {op}", self.id.label()),
                format!(
                    "answered something that does not follow the protocol ({e}): {}",
                    truncate(&v.to_string(), 200)
                ),
            )
        })
    }

    /// Node names the driver answered: held to lab's own rule ([`check_node_name`]), since
    /// they become file names (`{node}.sock`) and container names; anything else is a broken
    /// protocol naming the driver.
    fn check_names<'a>(&self, op: &str, mut names: impl Iterator<Item = &'a str>) -> Result<()> {
        match names.find_map(|n| check_node_name(n).err().map(|why| (n, why))) {
            None => Ok(()),
            Some((name, why)) => Err(Error::op(
                format!("{}: {op}", self.id.label()),
                format!("answered the node name {:?}, which does not follow the protocol: {why}", truncate(name, 100)),
            )),
        }
    }

    fn long(&self, op: &str) -> bool {
        matches!(op, "create" | "start" | "destroy" | "teardown")
    }

    /// One request: `{"id": N, "op": op, ...params}`, answered by `{"id": N, "ok": ...}` or
    /// `{"id": N, "error": {...}}` within the op's limit (counted once the driver is free).
    async fn call(&self, op: &str, node: Option<&str>, params: Value, limit: Duration) -> Result<Value> {
        let answer = {
            let mut conn = self.conn.lock().await;
            conn.next_id += 1;
            let id = conn.next_id;
            let mut message = Map::new();
            message.insert("id".into(), json!(id));
            message.insert("op".into(), json!(op));
            if let Value::Object(p) = params {
                message.extend(p);
            }
            match conn.exchange(&Value::Object(message), limit).await {
                Ok(a) if a.get("id").and_then(Value::as_u64) == Some(id) => Ok(a),
                Ok(a) => Err(Fault::Broken(format!(
                    "answered request {id} with id {}",
                    a.get("id").map(Value::to_string).unwrap_or_else(|| "(none)".into())
                ))),
                Err(f) => Err(f),
            }
        };
        match answer {
            Ok(a) => self.outcome(op, node, a).await,
            Err(f) => Err(self.fault(op, node, f).await),
        }
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported { driver: self.id.name.clone(), message: format!("cannot {what}: its handshake says so") }
    }

    /// A local socket relayed to the Docker socket of `ssh://[user@]host[:port]` by the system's
    /// `ssh` (its config, agent and known hosts apply; `BatchMode`, so never a prompt).
    async fn ssh_tunnel(&self, node: &str, url: &str) -> Result<PathBuf> {
        let step = "connect to its Docker engine over ssh";
        if let Some((_, sock)) = self.tunnels.lock().await.get(node) {
            return Ok(sock.clone());
        }
        let rest = url.strip_prefix("ssh://").unwrap_or(url);
        let (authority, remote) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{p}")),
            None => (rest, "/var/run/docker.sock".to_string()),
        };
        let (dest, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => (h, Some(p)),
            _ => (authority, None),
        };
        let dest = dest.trim_start_matches('[').trim_end_matches(']');
        if dest.is_empty() || dest.starts_with('-') || dest.chars().any(char::is_whitespace) {
            return Err(Error::node(
                node,
                step,
                format!("{} answered engine {url:?}, which names no host", self.id.label()),
            ));
        }
        let dir = self.state_dir.clone().unwrap_or_else(std::env::temp_dir).join("external-ssh");
        std::fs::create_dir_all(&dir).map_err(|e| Error::node(node, step, format!("create {}: {e}", dir.display())))?;
        let sock = dir.join(format!("{node}.sock"));
        let _ = std::fs::remove_file(&sock);
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.args(["-nNT", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes"])
            .arg("-L")
            .arg(format!("{}:{remote}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = port {
            cmd.args(["-p", p]);
        }
        cmd.arg("--").arg(dest);
        let mut child = cmd.spawn().map_err(|e| Error::node(node, step, format!("cannot run ssh: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.limits.timeout;
        loop {
            if sock.exists() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = tokio::time::timeout(Duration::from_secs(1), e.read_to_string(&mut err)).await;
                }
                return Err(Error::node(node, step, format!("ssh {dest} exited ({status}): {}", err.trim())));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    node: node.to_string(),
                    what: format!("ssh {dest} to forward the Docker socket"),
                    secs: self.limits.timeout.as_secs().max(1),
                    hint: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.tunnels.lock().await.insert(node.to_string(), (child, sock.clone()));
        Ok(sock)
    }
}

#[async_trait]
impl Driver for ExternalDriver {
    fn capabilities(&self) -> Capabilities {
        self.hello.capabilities.into()
    }

    async fn preflight(&self, nodes: &[NodeSpec]) -> Result<()> {
        match self.call("preflight", None, json!({ "nodes": nodes }), self.limits.timeout).await {
            Ok(_) | Err(Error::Unsupported { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn observe(&self) -> Result<Vec<Machine>> {
        let v = self.call("observe", None, json!({}), self.limits.timeout).await?;
        let machines: Vec<WireMachine> = self.decode("observe", v)?;
        self.check_names("observe", machines.iter().map(|m| m.name.as_str()))?;
        Ok(machines.into_iter().map(Machine::from).collect())
    }

    async fn create(&self, node: &NodeSpec) -> Result<Machine> {
        let v = self.call("create", Some(&node.name), json!({ "node": node }), self.limits.create_timeout).await?;
        let m: WireMachine = self.decode("create", v)?;
        self.check_names("create", std::iter::once(m.name.as_str()))?;
        Ok(m.into())
    }

    async fn start(&self, node: &str) -> Result<Machine> {
        let v = self.call("start", Some(node), json!({ "node": node }), self.limits.create_timeout).await?;
        let m: WireMachine = self.decode("start", v)?;
        self.check_names("start", std::iter::once(m.name.as_str()))?;
        Ok(m.into())
    }

    async fn destroy(&self, node: &str) -> Result<()> {
        self.call("destroy", Some(node), json!({ "node": node }), self.limits.create_timeout).await.map(drop)
    }

    async fn teardown(&self) -> Result<()> {
        match self.call("teardown", None, json!({}), self.limits.create_timeout).await {
            Ok(_) | Err(Error::Unsupported { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
        let node = machine.name.as_str();
        let v = self
            .call("engine", Some(node), json!({ "machine": WireMachine::from(machine) }), self.limits.timeout)
            .await?;
        let e: WireEngine = self.decode("engine", v)?;
        let step = "connect to its Docker engine";
        let bad =
            |why: &str| Error::node(node, step, format!("{} answered engine {:?}: {why}", self.id.label(), e.host));
        if e.advertise_addr.trim().is_empty() {
            return Err(bad("its advertise_addr is empty"));
        }
        // `lab env` prints these into `export NAME='VALUE'` lines that users `eval`: a name is
        // printed as it is, so it must be a plain shell name (values are quoted there).
        if let Some((k, why)) = e.env.iter().flatten().find_map(|(k, v)| {
            if !shell_name(k) {
                Some((k, "is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)"))
            } else if v.contains('\0') {
                Some((k, "has a NUL in its value, which no environment can hold"))
            } else {
                None
            }
        }) {
            return Err(Error::node(
                node,
                format!("{}: engine", self.id.label()),
                format!("answered the environment variable {:?}, which {why}", truncate(k, 100)),
            ));
        }
        let mut env = vec![("DOCKER_HOST".to_string(), e.host.clone())];
        let connected = match e.host.split_once("://") {
            Some(("unix", path)) if path.starts_with('/') => {
                Docker::connect_with_unix(path, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            Some(("tcp", rest)) if !rest.is_empty() => match &e.tls {
                None => Docker::connect_with_http(&e.host, ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION),
                Some(tls) => {
                    for f in [&tls.ca, &tls.cert, &tls.key] {
                        if !f.is_file() {
                            return Err(bad(&format!("TLS file {} does not exist", f.display())));
                        }
                    }
                    // The docker CLI wants the three files in one directory, named as below.
                    let dir = tls.cert.parent().map(Path::to_path_buf).unwrap_or_default();
                    if [(&tls.ca, "ca.pem"), (&tls.cert, "cert.pem"), (&tls.key, "key.pem")].iter().all(|(f, n)| {
                        f.parent() == Some(dir.as_path()) && f.file_name() == Some(std::ffi::OsStr::new(n))
                    }) {
                        env.push(("DOCKER_TLS_VERIFY".into(), "1".into()));
                        env.push(("DOCKER_CERT_PATH".into(), dir.display().to_string()));
                    }
                    Docker::connect_with_ssl(
                        &e.host,
                        &tls.key,
                        &tls.cert,
                        &tls.ca,
                        ENGINE_TIMEOUT_SECS,
                        bollard::API_DEFAULT_VERSION,
                    )
                }
            },
            Some(("ssh", rest)) if !rest.is_empty() => {
                let sock = self.ssh_tunnel(node, &e.host).await?;
                Docker::connect_with_unix(&sock.to_string_lossy(), ENGINE_TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            _ => return Err(bad("not unix:///path, tcp://host:port or ssh://[user@]host[:port]")),
        };
        let docker = connected.map_err(|err| Error::node(node, step, engine_message(&err)))?;
        Ok(NodeEngine {
            docker,
            advertise_addr: e.advertise_addr.clone(),
            client_env: match e.env {
                Some(map) => map.into_iter().collect(),
                None => env,
            },
        })
    }

    async fn exec(&self, node: &str, argv: &[String]) -> Result<ExecOutput> {
        if !self.hello.capabilities.exec {
            return Err(self.unsupported("run commands on nodes"));
        }
        let v = self.call("exec", Some(node), json!({ "node": node, "argv": argv }), self.limits.timeout).await?;
        let out: WireExec = self.decode("exec", v)?;
        Ok(ExecOutput { status: out.status, stdout: out.stdout, stderr: out.stderr })
    }

    fn fixed_nodes(&self) -> Option<Vec<NodeSpec>> {
        self.fixed.clone()
    }

    /// `shell_command` is synchronous in the trait, so the request is made by blocking this
    /// worker thread on the runtime (possible only on a multi-threaded runtime, which the CLI
    /// uses); elsewhere, or when the driver fails, lab says it cannot open a shell.
    fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
        use tokio::runtime::{Handle, RuntimeFlavor};
        if !self.hello.capabilities.shell {
            return None;
        }
        let handle = Handle::try_current().ok().filter(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)?;
        let params = json!({ "node": node, "args": args });
        let answer = tokio::task::block_in_place(|| {
            handle.block_on(self.call("shell_command", Some(node), params, self.limits.timeout))
        });
        match answer.and_then(|v| self.decode::<Option<Vec<String>>>("shell_command", v)) {
            Ok(Some(argv)) if !argv.is_empty() => Some(argv),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The protocol against tiny `#!/bin/sh` drivers written by each test: framing, versions,
    //! timeouts, dead and lying drivers, and how answered errors map to lab's.

    use super::*;
    use crate::topology::ClusterName;
    use std::time::Instant;

    /// Writes `body` as an executable `lab-driver-fake` in a fresh directory.
    fn script(body: &str) -> (tempfile::TempDir, Program) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lab-driver-fake");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, Program { name: "fake".into(), path, from_config: false })
    }

    fn ctx(dir: &Path, config: Value) -> DriverContext {
        DriverContext {
            driver: "fake".into(),
            cluster: ClusterName::parse("lab", "test").unwrap(),
            state_dir: dir.join("state"),
            cache_dir: dir.join("cache"),
            config,
            config_source: "lab.toml".into(),
            force: false,
        }
    }

    const HELLO: &str = r#"read hello
echo '{"ok":{"lab_protocol":1,"description":"a fake","capabilities":{"exec":true,"shell":false},"options":[{"name":"engines","type":"string","help":"h","repeatable":true}]}}'"#;

    /// A driver that answers the handshake, then each request by the shell `case` arms given,
    /// matched against the request line; `$id` is the request's id.
    fn driver(arms: &str) -> (tempfile::TempDir, Program) {
        script(&format!(
            r#"{HELLO}
while read line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
  case "$line" in
{arms}
    *'"op":"fixed_nodes"'*) echo "{{\"id\":$id,\"error\":{{\"kind\":\"unsupported\",\"message\":\"no fixed nodes\"}}}}" ;;
    *) echo "{{\"id\":$id,\"error\":{{\"kind\":\"unsupported\",\"message\":\"unknown request\"}}}}" ;;
  esac
done"#
        ))
    }

    async fn start(p: &Program, dir: &Path, config: Value) -> Result<ExternalDriver> {
        p.start(ctx(dir, config)).await
    }

    fn fast() -> Value {
        json!({ "timeout": 1, "create_timeout": 1 })
    }

    #[tokio::test]
    async fn handshake_carries_capabilities_options_and_only_the_drivers_keys() {
        let (dir, p) = script(&format!(
            r#"read hello
printf '%s\n' "$hello" > "$(dirname "$0")/hello.json"
{}"#,
            HELLO.lines().nth(1).unwrap()
        ));
        // The handshake is its only exchange before fixed_nodes: no loop, so fixed_nodes
        // fails. describe() needs only the handshake.
        let hello = p.describe(Duration::from_secs(5)).await.unwrap();
        assert_eq!(hello.description, "a fake");
        assert!(hello.capabilities.exec && !hello.capabilities.create);
        assert_eq!(hello.options[0].name, "engines");
        assert!(hello.options[0].repeatable && !hello.options[0].secret);
        let sent: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("hello.json")).unwrap()).unwrap();
        assert_eq!(sent["lab_protocol"], 1);
        assert_eq!(sent["cluster"], Value::Null, "describe has no cluster");

        let (dir, p) = driver("");
        std::fs::write(
            &p.path,
            std::fs::read_to_string(&p.path).unwrap().replacen(
                "read hello",
                "read hello; printf '%s\\n' \"$hello\" > \"$(dirname \"$0\")/hello.json\"",
                1,
            ),
        )
        .unwrap();
        let config = json!({ "command": p.path, "timeout": 5, "engines": { "manager": "unix:///x.sock" } });
        let d = start(&p, dir.path(), config).await.unwrap();
        let sent: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("hello.json")).unwrap()).unwrap();
        assert_eq!(sent["cluster"], "lab");
        assert_eq!(sent["config"], json!({ "engines": { "manager": "unix:///x.sock" } }), "lab's keys are not sent");
        assert_eq!(sent["state_dir"], json!(dir.path().join("state")));
        assert!(d.capabilities().exec && !d.capabilities().destroy);
        assert_eq!(d.fixed_nodes(), None, "unsupported fixed_nodes is None");
    }

    #[tokio::test]
    async fn garbage_is_an_error_naming_the_driver_and_quoting_its_stderr() {
        let (dir, p) = script("read hello\necho 'about to fail' >&2\necho 'hello, I am not JSON'\nsleep 5");
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        let m = e.to_string();
        assert_eq!(e.exit_code(), 1, "{m}");
        for needle in ["driver fake", "lab-driver-fake", "not JSON", "hello, I am not JSON", "about to fail"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
    }

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

    /// Issue 18, item 5: an answer is read with a bound. A line past 1 MiB fails the driver
    /// at once, naming it, whether or not the line ever ends (one 1 GiB line used to take
    /// lab to a gigabyte of memory before the timeout); a long answer under the bound is fine.
    #[tokio::test]
    async fn a_line_past_the_bound_fails_the_driver_at_once() {
        let limits = json!({ "timeout": 20 });
        for tail in ["; echo", "; sleep 30"] {
            let (dir, p) = script(&format!("read hello\n(head -c 67108864 /dev/zero | tr '\\0' x{tail})"));
            let t = Instant::now();
            let e = start(&p, dir.path(), limits.clone()).await.unwrap_err();
            assert!(t.elapsed() < Duration::from_secs(10), "took {:?}: {e}", t.elapsed());
            let m = e.to_string();
            assert_eq!(e.exit_code(), 1, "{m}");
            for needle in ["driver fake", "lab-driver-fake", "handshake", "longer than 1 MiB"] {
                assert!(m.contains(needle), "{m:?} lacks {needle:?}");
            }
            assert!(m.len() < 2000, "the message quotes the line: {} bytes", m.len());
        }
        // An answer just under the bound (JSON may end in blanks) is read as usual.
        let (dir, p) = script(&format!(
            r#"read hello
printf '%s' '{{"ok":{{"lab_protocol":1,"description":"a fake"}}}}'
printf '%{}s\n' ''
exec sleep 30"#,
            MAX_LINE - 1000
        ));
        let hello = p.describe(Duration::from_secs(10)).await.unwrap();
        assert_eq!(hello.description, "a fake");
        drop(dir);
    }

    #[tokio::test]
    async fn a_driver_that_exits_is_an_error_with_its_status_and_stderr() {
        let (dir, p) = script("read hello\necho 'cannot find my config' >&2\nexit 3");
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        let m = e.to_string();
        for needle in ["driver fake", "exited with status 3", "cannot find my config"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }

        // Dying in the middle of a session: the request fails naming the node, and the driver
        // is not asked again.
        let (dir, p) = driver(r#"    *'"op":"start"'*) echo 'start: out of memory' >&2; exit 4 ;;"#);
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let e = d.start("worker1").await.unwrap_err();
        let m = e.to_string();
        for needle in ["worker1", "driver fake", "exited with status 4", "start: out of memory"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
        let e = d.observe().await.unwrap_err().to_string();
        assert!(e.contains("cannot be used any more") && e.contains("status 4"), "{e}");
    }

    #[tokio::test]
    async fn a_driver_that_never_answers_times_out_fast() {
        let (dir, p) = script("read hello\necho 'thinking' >&2\nexec sleep 60");
        let t = Instant::now();
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        assert!(matches!(e, Error::Timeout { secs: 1, .. }), "{e:?}");
        let m = e.to_string();
        assert!(m.contains("driver fake") && m.contains("handshake") && m.contains("timed out after 1s"), "{m}");
        assert!(e.hint().unwrap().contains("thinking") && e.hint().unwrap().contains("timeout"), "{e:?}");

        // A request that hangs: bounded by the same limit, and the process is stopped.
        let (dir, p) = driver(r#"    *'"op":"observe"'*) exec sleep 60 ;;"#);
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let t = Instant::now();
        let e = d.observe().await.unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        assert!(e.to_string().contains("to answer observe"), "{e}");
    }

    #[tokio::test]
    async fn another_protocol_version_is_refused_naming_both() {
        let (dir, p) = script(
            r#"read hello
echo '{"ok":{"lab_protocol":2,"description":"from the future","capabilities":{}}}'"#,
        );
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        let m = e.to_string();
        for needle in ["driver fake", "lab-driver-fake", "protocol 2", "protocol 1"] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
        // Also when the driver refuses first, saying which version it speaks.
        let (dir, p) = script(
            r#"read hello
echo '{"lab_protocol":0,"error":{"kind":"unsupported","message":"I speak 0"}}'"#,
        );
        let m = start(&p, dir.path(), fast()).await.unwrap_err().to_string();
        assert!(m.contains("protocol 0") && m.contains("protocol 1"), "{m}");
    }

    #[tokio::test]
    async fn answered_errors_map_to_lab_errors() {
        // input at the handshake: bad input (exit 2) naming the table and the field.
        let (dir, p) = script(
            r#"read hello
echo '{"error":{"kind":"input","field":"engines.manager","message":"\"ftp://x\" is not unix:///path"}}'"#,
        );
        let e = start(&p, dir.path(), fast()).await.unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert_eq!(e.to_string(), r#"lab.toml: [drivers.fake] engines.manager: "ftp://x" is not unix:///path"#);

        let (dir, p) = driver(
            r#"    *'"op":"create"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"failed\",\"message\":\"disk full\"}}" ;;
    *'"op":"destroy"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"failed\",\"node\":\"other\",\"message\":\"busy\"}}" ;;
    *'"op":"preflight"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"input\",\"message\":\"no engine for worker1\"}}" ;;
    *'"op":"start"'*) echo "{\"id\":$id,\"error\":{\"kind\":\"weird\",\"message\":\"odd\"}}" ;;
    *'"op":"teardown"'*) echo "{\"id\":$id,\"ok\":null}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let node = NodeSpec { name: "worker1".into(), role: Role::Worker, labels: Default::default() };
        let e = d.create(&node).await.unwrap_err();
        assert!(matches!(&e, Error::Node { node, .. } if node == "worker1"), "{e:?}");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(e.to_string(), "worker1: driver fake: create: disk full");
        let e = d.destroy("worker1").await.unwrap_err();
        assert!(e.to_string().starts_with("other: "), "the driver's node wins: {e}");
        let e = d.preflight(std::slice::from_ref(&node)).await.unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "lab.toml: [drivers.fake]: no engine for worker1");
        let e = d.start("worker1").await.unwrap_err();
        assert!(e.exit_code() == 1 && e.to_string().contains("odd"), "{e}");
        // unsupported: Error::Unsupported (observe is not in the arms); optional calls succeed.
        assert!(matches!(d.observe().await, Err(Error::Unsupported { .. })));
        d.teardown().await.unwrap();
    }

    #[tokio::test]
    async fn requests_and_answers_round_trip() {
        let (dir, p) = driver(
            r#"    *'"op":"observe"'*) echo "{\"id\":$id,\"ok\":[{\"name\":\"manager\",\"state\":\"running\",\"address\":\"10.0.0.2\"},{\"name\":\"w\",\"role\":\"worker\",\"state\":\"broken\",\"reason\":\"half made\"}]}" ;;
    *'"op":"exec"'*) echo "{\"id\":$id,\"ok\":{\"status\":7,\"stdout\":\"$(printf '%s' "$line" | sed 's/"/\\"/g')\",\"stderr\":\"e\"}}" ;;
    *'"op":"engine"'*) echo "{\"id\":$id,\"ok\":{\"host\":\"unix://$(dirname "$0")/docker.sock\",\"advertise_addr\":\"10.0.0.2\"}}" ;;
    *'"op":"create"'*) echo "{\"id\":999,\"ok\":null}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let ms = d.observe().await.unwrap();
        assert_eq!(ms[0].role, None, "a missing role is left to lab's topology");
        assert_eq!(ms[1].role, Some(Role::Worker));
        assert_eq!(ms[0].state, MachineState::Running);
        assert_eq!(ms[0].address.as_deref(), Some("10.0.0.2"));
        assert_eq!(ms[1].state, MachineState::Broken("half made".into()));

        // argv goes as a JSON array, never a shell string.
        let argv: Vec<String> = vec!["echo".into(), "a b; rm -rf /".into()];
        let out = d.exec("manager", &argv).await.unwrap();
        assert_eq!(out.status, Some(7));
        let request: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(request["op"], "exec");
        assert_eq!(request["node"], "manager");
        assert_eq!(request["argv"], json!(["echo", "a b; rm -rf /"]));

        let sock = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = d.engine(&ms[0]).await.unwrap();
        assert_eq!(e.advertise_addr, "10.0.0.2");
        assert_eq!(e.client_env, vec![("DOCKER_HOST".to_string(), format!("unix://{}", sock.display()))]);

        // An answer to another request is a broken protocol: an error, and the driver stops.
        let node = NodeSpec { name: "w".into(), role: Role::Worker, labels: Default::default() };
        let m = d.create(&node).await.unwrap_err().to_string();
        assert!(m.contains("answered request") && m.contains("999"), "{m}");
    }

    /// Issue 18, item 10: node names a driver answers become file names (`{node}.sock`), so
    /// they are held to lab's own rule; `../` and the like are a protocol error naming the
    /// driver and the name, from `fixed_nodes`, `observe`, `create` and `start`.
    #[tokio::test]
    async fn node_names_from_the_driver_are_checked() {
        let (dir, p) = driver(
            r#"    *'"op":"observe"'*) echo "{\"id\":$id,\"ok\":[{\"name\":\"manager\",\"state\":\"running\"},{\"name\":\"../../evil\",\"state\":\"running\"}]}" ;;
    *'"op":"create"'*) echo "{\"id\":$id,\"ok\":{\"name\":\"a/b\",\"state\":\"running\"}}" ;;
    *'"op":"start"'*) echo "{\"id\":$id,\"ok\":{\"name\":\"\",\"state\":\"running\"}}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let e = d.observe().await.unwrap_err();
        let m = e.to_string();
        for needle in ["driver fake", "lab-driver-fake", "observe", "\"../../evil\""] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
        let node = NodeSpec { name: "worker1".into(), role: Role::Worker, labels: Default::default() };
        let m = d.create(&node).await.unwrap_err().to_string();
        assert!(m.contains("driver fake") && m.contains("create") && m.contains("\"a/b\""), "{m}");
        let m = d.start("worker1").await.unwrap_err().to_string();
        assert!(m.contains("driver fake") && m.contains("start") && m.contains("\"\""), "{m}");

        let (dir, p) = driver(
            r#"    *'"op":"fixed_nodes"'*) echo "{\"id\":$id,\"ok\":[{\"name\":\"../x\",\"role\":\"manager\",\"labels\":{}}]}" ;;"#,
        );
        let m = start(&p, dir.path(), fast()).await.unwrap_err().to_string();
        assert!(m.contains("driver fake") && m.contains("fixed_nodes") && m.contains("\"../x\""), "{m}");
    }

    /// Issue 18, item 8: the variables an engine's `env` names end up in `export NAME=...`
    /// lines that users `eval`; a name that is not `[A-Za-z_][A-Za-z0-9_]*` (or a value with a
    /// NUL, which no environment can hold) is a protocol error naming the driver and the name.
    #[tokio::test]
    async fn engine_env_names_must_be_shell_names() {
        for (name, value) in [
            ("X=1;touch PWNED;Y", "v"),
            ("", "v"),
            ("1X", "v"),
            ("A-B", "v"),
            ("ÉTÉ", "v"),
            ("A B", "v"),
            ("OK_NAME", "a\0b"),
        ] {
            let env = serde_json::to_string(&json!({ name: value })).unwrap().replace('"', "\\\"");
            let (dir, p) = driver(&format!(
                r#"    *'"op":"engine"'*) echo "{{\"id\":$id,\"ok\":{{\"host\":\"tcp://127.0.0.1:1\",\"advertise_addr\":\"127.0.0.1\",\"env\":{env}}}}}" ;;"#
            ));
            let d = start(&p, dir.path(), fast()).await.unwrap();
            let m = Machine {
                name: "manager".into(),
                role: Some(Role::Manager),
                state: MachineState::Running,
                address: None,
            };
            let e = d.engine(&m).await.map(|e| e.client_env).unwrap_err().to_string();
            let shown = serde_json::to_string(name).unwrap();
            for needle in ["manager", "driver fake", "lab-driver-fake", "engine", "variable", &shown] {
                assert!(e.contains(needle), "{name:?}: {e:?} lacks {needle:?}");
            }
        }
        // Plain names, and any text as a value, are fine.
        let (dir, p) = driver(
            r#"    *'"op":"engine"'*) echo "{\"id\":$id,\"ok\":{\"host\":\"tcp://127.0.0.1:1\",\"advertise_addr\":\"127.0.0.1\",\"env\":{\"_A1\":\"it's; \$(x)\"}}}" ;;"#,
        );
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let m = Machine { name: "manager".into(), role: None, state: MachineState::Running, address: None };
        assert_eq!(d.engine(&m).await.unwrap().client_env, vec![("_A1".to_string(), "it's; $(x)".to_string())]);
    }

    /// `shell_command` is synchronous in the trait: on the CLI's multi-threaded runtime it asks
    /// the driver; a driver without the capability is not asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shell_command_asks_the_driver() {
        let (dir, p) =
            driver(r#"    *'"op":"shell_command"'*) echo "{\"id\":$id,\"ok\":[\"ssh\",\"-t\",\"root@node\"]}" ;;"#);
        let d = start(&p, dir.path(), fast()).await.unwrap();
        assert_eq!(d.shell_command("manager", &[]), None, "no shell capability, not asked");
        std::fs::write(
            &p.path,
            std::fs::read_to_string(&p.path).unwrap().replace(r#""shell":false"#, r#""shell":true"#),
        )
        .unwrap();
        let d = start(&p, dir.path(), fast()).await.unwrap();
        assert_eq!(d.shell_command("manager", &[]), Some(vec!["ssh".into(), "-t".into(), "root@node".into()]));
    }

    /// An `ssh://` engine is reached through the system's ssh; one that cannot be reached (a
    /// closed port on loopback) is an error naming the node and ssh's own words, not a hang.
    #[tokio::test]
    async fn an_ssh_engine_that_cannot_be_reached_is_an_error() {
        let (dir, p) = driver(
            r#"    *'"op":"engine"'*) echo "{\"id\":$id,\"ok\":{\"host\":\"ssh://nobody@127.0.0.1:1\",\"advertise_addr\":\"127.0.0.1\"}}" ;;"#,
        );
        let d = start(&p, dir.path(), json!({ "timeout": 10 })).await.unwrap();
        let m =
            Machine { name: "manager".into(), role: Some(Role::Manager), state: MachineState::Running, address: None };
        let t = Instant::now();
        let e = d.engine(&m).await.unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
        assert!(e.starts_with("manager: connect to its Docker engine over ssh: "), "{e}");
        assert!(e.contains("ssh nobody@127.0.0.1 exited") || e.contains("cannot run ssh"), "{e}");
    }

    #[tokio::test]
    async fn exec_is_not_asked_of_a_driver_without_the_capability() {
        let (dir, p) = driver("");
        std::fs::write(&p.path, std::fs::read_to_string(&p.path).unwrap().replace(r#""exec":true"#, r#""exec":false"#))
            .unwrap();
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let e = d.exec("manager", &["true".into()]).await.unwrap_err();
        assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn the_process_is_killed_when_the_driver_is_dropped() {
        let (dir, p) = driver("");
        std::fs::write(
            &p.path,
            std::fs::read_to_string(&p.path).unwrap().replacen(
                "read hello",
                "echo $$ > \"$(dirname \"$0\")/pid\"; read hello",
                1,
            ),
        )
        .unwrap();
        let d = start(&p, dir.path(), fast()).await.unwrap();
        let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap().trim().to_string();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
                .unwrap_or(false)
        };
        assert!(alive());
        drop(d);
        let t = Instant::now();
        while alive() && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!alive(), "driver process {pid} outlived the driver");
    }

    /// The schema in docs/ names exactly the requests this adapter sends, and the error kinds
    /// it maps.
    #[test]
    fn the_schema_matches_the_adapter() {
        let schema: Value =
            serde_json::from_str(include_str!("../../../../../docs/driver-protocol.schema.json")).unwrap();
        let mut ops: Vec<&str> = schema["$defs"]["request"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["properties"]["op"]["const"].as_str().unwrap())
            .collect();
        ops.sort();
        let mut sent = [
            "preflight",
            "fixed_nodes",
            "observe",
            "create",
            "start",
            "destroy",
            "teardown",
            "engine",
            "exec",
            "shell_command",
        ];
        sent.sort();
        assert_eq!(ops, sent);
        let results: Vec<&String> = schema["$defs"]["results"]["properties"].as_object().unwrap().keys().collect();
        assert_eq!(results.len(), sent.len(), "{results:?}");
        assert_eq!(schema["$defs"]["handshake"]["properties"]["lab_protocol"]["const"], PROTOCOL_VERSION);
        assert_eq!(schema["$defs"]["error"]["properties"]["kind"]["enum"], json!(["input", "failed", "unsupported"]));
        for key in LAB_KEYS {
            assert!(include_str!("../../../../../docs/driver-protocol.md").contains(&format!("`{key}`")), "{key}");
        }
    }

    #[test]
    fn lab_keys_are_checked_and_found() {
        let limits = Limits::from_config("x", &json!({ "timeout": 2.5, "create_timeout": 60 }), "lab.toml").unwrap();
        assert_eq!(limits.timeout, Duration::from_millis(2500));
        assert_eq!(limits.create_timeout, Duration::from_secs(60));
        assert_eq!(Limits::from_config("x", &Value::Null, "lab.toml").unwrap(), Limits::default());
        for bad in [json!(0), json!(-1), json!("30s")] {
            let e = Limits::from_config("x", &json!({ "timeout": bad }), "lab.toml").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().starts_with("lab.toml: [drivers.x] timeout: "), "{e}");
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
        assert_eq!(driver_table(&json!({ "command": "c", "timeout": 1, "a": 2 })), json!({ "a": 2 }));

        let (dir, p) = script("exit 0");
        let found = find("fake", &json!({ "command": p.path }), "lab.toml").unwrap().unwrap();
        assert_eq!(found, Program { name: "fake".into(), path: p.path.clone(), from_config: true });
        let missing = dir.path().join("nope");
        let e = find("fake", &json!({ "command": missing }), "lab.toml").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("[drivers.fake] command") && e.to_string().contains("does not exist"), "{e}");
        let e = find("fake", &json!({ "command": 3 }), "lab.toml").unwrap_err();
        assert!(e.to_string().contains("3 is not the path of a program"), "{e}");
        assert_eq!(find("../etc", &json!({}), "lab.toml").unwrap(), None, "a name with a slash is never a file");
    }
}
