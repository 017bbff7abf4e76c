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
//!
//! - [`discover`]: finding the program for a driver name, and listing those on `PATH`;
//! - [`wire`]: the protocol's messages, as serde types;
//! - [`process`]: the child process, its bounded lines, its environment and its stderr;
//! - [`adapter`]: [`ExternalDriver`], the [`Driver`] that speaks the protocol over it.

use std::time::Duration;

mod adapter;
mod discover;
mod process;
mod wire;

pub use adapter::ExternalDriver;
pub use discover::{find, on_path, resolve_command, unknown, Program};
pub use wire::{DriverOption, Hello, Limits, OptionType};

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
