//! The `lab` command line. [`run`] is the whole program; a third-party binary that links its
//! own drivers calls it from `main` and gets every command with its drivers listed.
//!
//! Exit status: 0 done, 1 an operation failed, 2 bad input (nothing was created).

// First: its `out!` and `outln!` macros are what the other modules print with.
#[macro_use]
mod output;
mod args;
mod commands;
mod driver_test;
mod progress;
mod settings;
mod timings;

use std::ffi::OsString;

use clap::FromArgMatches;

// Name each bundled driver so the linker keeps its registration.
use lab_driver_docker as _;
use lab_driver_qemu as _;
use lab_driver_ssh as _;
use lab_driver_virtualbox as _;

pub use args::Cli;

/// Runs `lab` with the process's arguments; returns the exit status.
pub fn run() -> i32 {
    run_from(std::env::args_os())
}

/// Runs `lab` with `args` (the first is the program name); returns the exit status.
pub fn run_from<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // Parsing is separate from dispatch: the derived arguments plus the flags the drivers
    // declare, then the command.
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let parsed =
        args::command().try_get_matches_from(&args).and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let cli = match parsed {
        Ok((mut cli, matches)) => {
            args::take_driver_flags(&mut cli, &matches);
            cli
        }
        Err(e) => {
            let e = args::with_ssh_separator_tip(e, &args);
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lab: error: start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(commands::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            for line in error_lines(&e) {
                errln!("{line}");
            }
            e.exit_code()
        }
    }
}

/// What lab prints on stderr for an error: the error, then what caused it, outermost first,
/// where the message does not say it already, then the hint.
fn error_lines(e: &lab_core::Error) -> Vec<String> {
    let mut lines = vec![format!("lab: error: {e}")];
    lines.extend(e.causes().into_iter().map(|cause| format!("lab: cause: {cause}")));
    lines.extend(e.hint().map(|hint| format!("lab: hint: {hint}")));
    lines
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::util::SubscriberInitExt;
    let rust_log = std::env::var("RUST_LOG").ok();
    // `try_init` also routes the `log` crate's records (bollard logs through it) into the
    // subscriber, and so through its filters.
    let _ = subscriber(rust_log.as_deref(), verbose, std::io::stderr).try_init();
}

/// Crates whose logs below INFO carry HTTP request and response bodies (join tokens, the
/// registry secret) or TLS and key material. A target is theirs if it starts with one of
/// these names, so `hyper_util`, `hyperlocal` and `hyper_rustls` are covered by `hyper`.
const CAPPED_TARGETS: &[&str] = &["bollard", "hyper", "h2", "reqwest", "tower", "rustls", "http"];

/// Whether an event or span may be printed whatever the user's filter says: anything at INFO
/// or above, and anything below INFO that is not from a [`CAPPED_TARGETS`] crate.
fn below_the_cap(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::INFO || !CAPPED_TARGETS.iter().any(|c| meta.target().starts_with(c))
}

/// The subscriber lab logs through: `RUST_LOG` if it parses, else the level `-v`/`-vv` picks.
///
/// The cap is a filter layer of its own beside the `EnvFilter`, not a directive inside it:
/// an `EnvFilter` lets its most specific directive win, so `RUST_LOG=bollard::docker=debug`
/// beat a `bollard=info` added to it. A layer's filter can only narrow what reaches the
/// output, so no `RUST_LOG` value and no `-v` count can reopen these targets.
fn subscriber<W>(rust_log: Option<&str>, verbose: u8, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{filter, fmt, EnvFilter};
    let default = match verbose {
        0 => "warn",
        1 => "info,lab_core=info",
        _ => "debug",
    };
    let env = rust_log.and_then(|v| EnvFilter::try_new(v).ok()).unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::registry()
        .with(env)
        .with(filter::filter_fn(below_the_cap))
        .with(fmt::layer().with_writer(writer).with_target(false))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// A writer that keeps what the subscriber prints.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What lab would print for a few events under `RUST_LOG=rust_log` and `-v` x `verbose`.
    fn printed(rust_log: Option<&str>, verbose: u8) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let sub = super::subscriber(rust_log, verbose, move || writer.clone());
        tracing::subscriber::with_default(sub, || {
            tracing::debug!(target: "bollard::docker", "SWMTKN-1-bollard-debug");
            tracing::trace!(target: "bollard::read", "REGISTRY_HTTP_SECRET=bollard-trace");
            let span = tracing::debug_span!(target: "bollard::docker", "request", body = "SWMTKN-1-in-a-span");
            let _enter = span.enter();
            tracing::debug!(target: "hyper::proto::h1", "SWMTKN-1-hyper");
            tracing::debug!(target: "hyper_util::client", "SWMTKN-1-hyper-util");
            tracing::debug!(target: "h2::codec", "SWMTKN-1-h2");
            tracing::debug!(target: "reqwest::connect", "SWMTKN-1-reqwest");
            tracing::info!(target: "bollard::docker", "bollard-info-is-fine");
            tracing::debug!(target: "lab_core::converge::exec", "lab-debug-is-fine");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    /// Issue 7, item 6: no `RUST_LOG` and no `-v` count lets the HTTP stack's debug output,
    /// which carries request bodies, reach the terminal.
    #[test]
    fn no_log_level_prints_http_bodies() {
        let cases: &[(Option<&str>, u8)] = &[
            (Some("trace"), 0),
            (Some("bollard::docker=debug"), 0),
            (Some("bollard::read=trace,bollard::docker=trace"), 0),
            (Some("[request]=trace"), 0),
            (Some("hyper::proto=trace,hyper_util::client=trace,h2=trace,reqwest=trace"), 0),
            (Some("debug"), 2),
            (None, 2),
            (None, 1),
        ];
        let mut leaks = Vec::new();
        for &(rust_log, verbose) in cases {
            let text = printed(rust_log, verbose);
            for line in text.lines().filter(|l| l.contains("SWMTKN-") || l.contains("REGISTRY_HTTP_SECRET")) {
                leaks.push(format!("RUST_LOG={rust_log:?} -v x{verbose}: {line}"));
            }
        }
        assert!(leaks.is_empty(), "printed:\n{}", leaks.join("\n"));
        // The capture works: what is allowed is printed.
        let text = printed(Some("trace"), 0);
        assert!(text.contains("bollard-info-is-fine") && text.contains("lab-debug-is-fine"), "{text}");
    }

    /// Issue 21, item 3: a wait that runs out prints what never happened, then the last
    /// error it saw as the cause (with that error's own cause), then the hint.
    #[tokio::test]
    async fn a_timeout_prints_its_last_error_as_the_cause() {
        use lab_core::wait::Wait;
        use lab_core::Error;
        let refused =
            || std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let e = Wait::new("worker1", "its Docker engine to answer", std::time::Duration::from_millis(50))
            .every(std::time::Duration::from_millis(10))
            .hint("is its engine running?")
            .until(|| async { Err::<(), _>(Error::caused("worker1", "connect to its Docker engine", refused())) })
            .await
            .unwrap_err();
        assert_eq!(
            super::error_lines(&e),
            [
                "lab: error: worker1: timed out after 1s waiting for its Docker engine to answer",
                "lab: cause: worker1: connect to its Docker engine: Connection refused (os error 111)",
                "lab: hint: is its engine running?",
            ]
        );
        assert_eq!(e.exit_code(), 1);
    }

    /// Issue 21, item 3: an error made from another error prints its words once, and keeps
    /// it: a cause that says more than the message is printed under it.
    #[test]
    fn an_errors_chain_is_printed_once_each() {
        use lab_core::Error;
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "Permission denied (os error 13)");
        let e = Error::op_caused("relay to 10.0.0.2:5443", io);
        assert_eq!(super::error_lines(&e), ["lab: error: relay to 10.0.0.2:5443: Permission denied (os error 13)"]);
        assert!(std::error::Error::source(&e).is_some(), "the io error is kept");
        let outer = Error::op("lab images gc", "the registry stayed read-only").with_source(e);
        assert_eq!(
            super::error_lines(&outer),
            [
                "lab: error: lab images gc: the registry stayed read-only",
                "lab: cause: relay to 10.0.0.2:5443: Permission denied (os error 13)",
            ]
        );
    }
}
