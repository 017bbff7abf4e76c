//! Tables and JSON on stdout. Every byte lab prints on stdout goes through [`print`] (the
//! [`out!`] and [`outln!`] macros), the one place that knows what to do when the reader has
//! gone; stderr (logs, progress, errors) is the business of `progress` and `lib`.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use lab_core::{Error, Result};

/// Set once a write to stdout met a closed pipe: nothing more is written there.
static READER_GONE: AtomicBool = AtomicBool::new(false);

/// Prints on stdout, like `print!`, through [`print`]; returns lab's `Result`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::print(format_args!($($arg)*))
    };
}

/// Prints a line on stdout, like `println!`, through [`print`]; returns lab's `Result`.
macro_rules! outln {
    () => {
        $crate::output::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Prints a line on stderr, like `eprintln!`, through [`say`]: never a panic.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::say(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `args` to stderr, ignoring a failure. `eprintln!` panics when stderr is gone (a
/// terminal closed, the reader of a pipe gone), and a panic in the middle of `lab images gc`
/// would leave the registry read-only: a message nobody can read is no reason to stop.
pub fn say(args: fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

/// Writes `args` to stdout and flushes it.
///
/// A reader that stopped reading (`lab ls | head -1`, or a `| true` that exited first) is not
/// an error. Rust ignores SIGPIPE, so where a C program would die of the signal, `print!`
/// panics on EPIPE (exit 101 and a backtrace); here the write reports success, and whatever
/// the command prints after that is dropped. Any other failure to write (a full disk under
/// `> file`) is an operational error, exit 1.
///
/// The exit status: ripgrep, which STYLE.md takes as the model, ends with 0 on a broken pipe
/// because a reader going away is no failure of its own (see the comment on its `main`).
/// lab agrees that the pipe is no failure, and goes one step further: lab prints its results
/// after the work is done (the cluster is up, the checks have run, the tag is deleted), so
/// nothing is left half-done by carrying on, and the command ends with the status it has when
/// its output is read. Most often that is ripgrep's 0; but `lab check | head -1` on a broken
/// registry still exits 1, since the check failed whether or not anyone read the table.
pub fn print(args: fmt::Arguments<'_>) -> Result<()> {
    write_to(&mut std::io::stdout().lock(), &READER_GONE, args)
}

/// [`print`] to any writer, with the flag that remembers a reader gone.
fn write_to(w: &mut impl Write, gone: &AtomicBool, args: fmt::Arguments<'_>) -> Result<()> {
    if gone.load(Ordering::Relaxed) {
        return Ok(());
    }
    match w.write_fmt(args).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            gone.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => Err(Error::op_caused("write the results to stdout", e)),
    }
}

/// Renders rows as left-aligned columns separated by three spaces, like `docker node ls`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::AtomicBool;

    /// A writer that fails every write with `kind`, counting the tries.
    struct Failing(std::io::ErrorKind, usize);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            self.1 += 1;
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 18, item 12: a reader gone is no error, and nothing more is tried after it; any
    /// other write error is an operational error naming stdout.
    #[test]
    fn a_closed_pipe_ends_printing_quietly() {
        let gone = AtomicBool::new(false);
        let mut w = Failing(std::io::ErrorKind::BrokenPipe, 0);
        super::write_to(&mut w, &gone, format_args!("a\n")).expect("a broken pipe is no error");
        super::write_to(&mut w, &gone, format_args!("b\n")).expect("nor is what follows");
        assert_eq!(w.1, 1, "lab went on writing to a pipe nobody reads");

        let mut full = Failing(std::io::ErrorKind::StorageFull, 0);
        let err = super::write_to(&mut full, &AtomicBool::new(false), format_args!("a\n")).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("stdout"), "{err}");
    }

    #[test]
    fn aligned() {
        let t = super::table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A     LONGER\nxyz   1\n");
    }
}
