//! Drawing progress on stderr: a spinner per running step on a terminal, plain lines
//! elsewhere (CI, pipes, `--output json`). Which one is a pure function, tested below.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lab_core::cluster::Progress;
use lab_core::cluster::Step;

/// Whether to draw spinners: only on a terminal, never in CI, never with JSON output.
pub fn use_bars(stderr_is_terminal: bool, ci: bool, json: bool) -> bool {
    stderr_is_terminal && !ci && !json
}

/// Whether this process runs in CI, by the variable CI services set.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Progress as lines or spinners on stderr.
pub struct Reporter {
    bars: Option<MultiProgress>,
    running: Mutex<HashMap<Step, ProgressBar>>,
}

impl Reporter {
    pub fn new(bars: bool) -> Self {
        Reporter { bars: bars.then(MultiProgress::new), running: Mutex::new(HashMap::new()) }
    }

    fn line(&self, text: &str) {
        match &self.bars {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Progress for Reporter {
    fn started(&self, step: &Step) {
        match &self.bars {
            Some(m) => {
                let pb = m.add(ProgressBar::new_spinner());
                pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
                pb.set_message(step.to_string());
                pb.enable_steady_tick(Duration::from_millis(120));
                self.running.lock().expect("progress lock").insert(step.clone(), pb);
            }
            None => self.line(&format!("  ... {step}")),
        }
    }

    fn finished(&self, step: &Step, elapsed: Duration, detail: Option<&str>) {
        if let Some(pb) = self.running.lock().expect("progress lock").remove(step) {
            pb.finish_and_clear();
        }
        let detail = detail.map(|d| format!(": {d}")).unwrap_or_default();
        self.line(&format!("  ok  {step} ({}){detail}", secs(elapsed)));
    }

    fn failed(&self, step: &Step, elapsed: Duration, error: &lab_core::Error) {
        if let Some(pb) = self.running.lock().expect("progress lock").remove(step) {
            pb.finish_and_clear();
        }
        self.line(&format!("  FAIL {step} ({}): {error}", secs(elapsed)));
    }

    fn note(&self, message: &str) {
        self.line(&format!("lab: {message}"));
    }

    fn bytes(&self, step: &Step, done: u64, total: Option<u64>) {
        if let Some(pb) = self.running.lock().expect("progress lock").get(step) {
            let total = total.map(|t| format!("/{} MB", t / 1_000_000)).unwrap_or_default();
            pb.set_message(format!("{step} {} MB{total}", done / 1_000_000));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::use_bars;

    #[test]
    fn bars_only_on_an_interactive_terminal() {
        assert!(use_bars(true, false, false));
        assert!(!use_bars(false, false, false), "pipe");
        assert!(!use_bars(true, true, false), "CI");
        assert!(!use_bars(true, false, true), "json");
    }
}
