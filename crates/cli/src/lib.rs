//! The `lab` command line. [`run`] is the whole program; a third-party binary that links its
//! own drivers calls it from `main` and gets every command with its drivers listed.
//!
//! Exit status: 0 done, 1 an operation failed, 2 bad input (nothing was created).

mod args;
mod commands;
mod output;
mod progress;
mod settings;

use std::ffi::OsString;

use clap::Parser;

// Name each bundled driver so the linker keeps its registration.
use lab_driver_docker as _;
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
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
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
            eprintln!("lab: error: {e}");
            if let Some(hint) = e.hint() {
                eprintln!("lab: hint: {hint}");
            }
            e.exit_code()
        }
    }
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "info,lab_core=info",
        _ => "debug,hyper=info,hyper_util=info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // bollard logs request and response bodies at debug level, and those carry join tokens
    // and the registry secret: never let them through, whatever RUST_LOG says.
    let filter = ["bollard=info", "hyper=info", "hyper_util=info"]
        .into_iter()
        .fold(filter, |f, d| f.add_directive(d.parse().expect("static directive")));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}
