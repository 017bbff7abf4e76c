//! `lab up --timings`: a timeline of the run, in the spirit of `cargo build --timings`. Every
//! step of the plan, per node, from start to finish, and the phases around it (preflight,
//! observation, planning, the final check), written as one self-contained HTML page with an
//! SVG chart. The critical path, the chain of steps each of which waited for the one before it
//! and that ends when the run ends, is marked: it is what to shorten to make `up` faster.
//!
//! [`Timings`] is a [`Progress`] that records each event with the time it came and passes it
//! on to the progress the user sees. What it records is turned into a page by [`render`], a
//! pure function tested below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lab_core::cluster::{Progress, Step};
use lab_core::converge::plan::Plan;
use lab_core::Error;
use serde::Serialize;

/// One bar of the timeline: a step of the plan, or a phase of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// What it was (the step as `lab plan` prints it, or the phase).
    pub label: String,
    /// The node it was about; phases and cluster-wide steps have none.
    pub node: Option<String>,
    /// `machine`, `image`, `swarm`, `registry`, `tls` or `lab` (a phase).
    pub area: &'static str,
    /// Seconds from the start of the command.
    pub start: f64,
    /// Seconds from the start of the command; `None` if it never ended (the run failed).
    pub end: Option<f64>,
    /// Whether it failed.
    pub failed: bool,
    /// The step's short result, as the progress line shows it.
    pub detail: Option<String>,
    /// Its index in the plan, for steps.
    pub step: Option<usize>,
    /// Whether it is on the critical path.
    pub critical: bool,
}

/// What a run recorded, as [`render`] draws it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The cluster.
    pub cluster: String,
    /// Its driver.
    pub driver: String,
    /// lab's version.
    pub version: &'static str,
    /// When the command started, seconds since the epoch.
    pub started_at: u64,
    /// The machine's load average (1 minute) at the start and at the end, where known: the
    /// figures mean little on a loaded machine.
    pub load: (Option<f64>, Option<f64>),
    /// Every bar, in the order it started.
    pub spans: Vec<Span>,
    /// Each step's dependencies (indices into the plan), as the plan gave them.
    pub after: Vec<Vec<usize>>,
    /// How long the whole command took, in seconds.
    pub total: f64,
}

/// Records every event of a run, and passes it on to `inner`.
pub struct Timings {
    inner: Arc<dyn Progress>,
    start: Instant,
    started_at: u64,
    load: Option<f64>,
    spans: Mutex<Vec<Span>>,
    plan: Mutex<Vec<(Step, Vec<usize>)>>,
    /// The cluster and its driver, once the settings say.
    names: Mutex<(String, String)>,
}

/// Which area of lab a step belongs to, for its colour.
fn area(step: &Step) -> &'static str {
    match step {
        Step::DestroyNode { .. } | Step::CreateNode { .. } | Step::StartNode { .. } | Step::WaitEngine { .. } => {
            "machine"
        }
        Step::LoadImage { .. } => "image",
        Step::LeaveSwarm { .. } | Step::InitSwarm { .. } | Step::JoinSwarm { .. } | Step::ConfigureNode { .. } => {
            "swarm"
        }
        Step::ChooseRegistryMode | Step::DeployRegistry | Step::MoveRegistryData { .. } | Step::Forwarder { .. } => {
            "registry"
        }
        Step::IssueRegistryCerts | Step::NodeCerts { .. } | Step::RenewRegistryCa { .. } | Step::RevokeNode { .. } => {
            "tls"
        }
    }
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

impl Timings {
    /// Starts recording now.
    pub fn new(inner: Arc<dyn Progress>) -> Timings {
        let started_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Timings {
            inner,
            start: Instant::now(),
            started_at,
            load: load_average(),
            spans: Mutex::new(Vec::new()),
            plan: Mutex::new(Vec::new()),
            names: Mutex::new((String::from("lab"), String::new())),
        }
    }

    /// The cluster and driver the run is about, once known.
    pub fn name(&self, cluster: &str, driver: &str) {
        *self.names.lock().expect("timings lock") = (cluster.to_string(), driver.to_string());
    }

    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The plan about to run, so that steps can be placed in it and its dependencies drawn.
    pub fn plan(&self, plan: &Plan) {
        *self.plan.lock().expect("timings lock") =
            plan.steps.iter().map(|s| (s.step.clone(), s.after.clone())).collect();
    }

    /// Runs `work` as a phase of the run named `label`, recording how long it took.
    pub async fn phase<T, E>(
        &self,
        label: &str,
        work: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let i = {
            let mut spans = self.spans.lock().expect("timings lock");
            spans.push(Span {
                label: label.to_string(),
                node: None,
                area: "lab",
                start: self.now(),
                end: None,
                failed: false,
                detail: None,
                step: None,
                critical: false,
            });
            spans.len() - 1
        };
        let r = work.await;
        let mut spans = self.spans.lock().expect("timings lock");
        spans[i].end = Some(self.now());
        spans[i].failed = r.is_err();
        r
    }

    fn index_of(&self, step: &Step) -> Option<usize> {
        self.plan.lock().expect("timings lock").iter().position(|(s, _)| s == step)
    }

    fn end(&self, step: &Step, failed: bool, detail: Option<&str>) {
        let now = self.now();
        let mut spans = self.spans.lock().expect("timings lock");
        if let Some(s) = spans.iter_mut().rev().find(|s| s.end.is_none() && s.label == step.to_string()) {
            s.end = Some(now);
            s.failed = failed;
            s.detail = detail.map(str::to_string);
        }
    }

    /// What was recorded, up to now.
    pub fn record(&self) -> Record {
        let (cluster, driver) = self.names.lock().expect("timings lock").clone();
        let spans = self.spans.lock().expect("timings lock").clone();
        let after = self.plan.lock().expect("timings lock").iter().map(|(_, a)| a.clone()).collect();
        let mut r = Record {
            cluster,
            driver,
            version: env!("CARGO_PKG_VERSION"),
            started_at: self.started_at,
            load: (self.load, load_average()),
            spans,
            after,
            total: self.now(),
        };
        mark_critical(&mut r);
        r
    }

    /// Writes the page to `path` (a directory gets a file named after the cluster and the
    /// time); returns where it went.
    pub fn write(&self, path: &Path) -> std::io::Result<PathBuf> {
        let record = self.record();
        let file = if path.as_os_str().is_empty() || path.is_dir() {
            path.join(format!("lab-timings-{}-{}.html", record.cluster, record.started_at))
        } else {
            path.to_path_buf()
        };
        std::fs::write(&file, render(&record))?;
        Ok(file)
    }
}

impl Progress for Timings {
    fn started(&self, step: &Step) {
        let index = self.index_of(step);
        self.spans.lock().expect("timings lock").push(Span {
            label: step.to_string(),
            node: step.node().map(str::to_string),
            area: area(step),
            start: self.now(),
            end: None,
            failed: false,
            detail: None,
            step: index,
            critical: false,
        });
        self.inner.started(step);
    }

    fn finished(&self, step: &Step, elapsed: Duration, detail: Option<&str>) {
        self.end(step, false, detail);
        self.inner.finished(step, elapsed, detail);
    }

    fn failed(&self, step: &Step, elapsed: Duration, error: &Error) {
        self.end(step, true, None);
        self.inner.failed(step, elapsed, error);
    }

    fn note(&self, message: &str) {
        self.inner.note(message);
    }

    fn bytes(&self, step: &Step, done: u64, total: Option<u64>) {
        self.inner.bytes(step, done, total);
    }
}

/// Marks the critical path: the phases (most run one after another), and, among the plan's
/// steps, the chain that ends with the step that finished last, each step preceded by the one
/// of its dependencies that finished last (the one it really waited for).
fn mark_critical(r: &mut Record) {
    let by_step: BTreeMap<usize, usize> =
        r.spans.iter().enumerate().filter_map(|(i, s)| s.step.map(|st| (st, i))).collect();
    let end_of = |r: &Record, step: usize| by_step.get(&step).and_then(|&i| r.spans[i].end).unwrap_or(0.0);
    let last = by_step.keys().copied().max_by(|a, b| end_of(r, *a).total_cmp(&end_of(r, *b)));
    let mut on = last;
    while let Some(step) = on {
        if let Some(&i) = by_step.get(&step) {
            r.spans[i].critical = true;
        }
        let deps = r.after.get(step).cloned().unwrap_or_default();
        on = deps.into_iter().max_by(|a, b| end_of(r, *a).total_cmp(&end_of(r, *b)));
    }
    // A phase that ran beside another one, which started no later and ended after it, was
    // waited for by nothing: not on the path.
    let phases: Vec<(f64, f64)> =
        r.spans.iter().filter(|s| s.step.is_none()).map(|s| (s.start, s.end.unwrap_or(r.total))).collect();
    for s in r.spans.iter_mut().filter(|s| s.step.is_none()) {
        let end = s.end.unwrap_or(r.total);
        s.critical = !phases.iter().any(|&(a, b)| a <= s.start && b > end);
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn colour(area: &str) -> &'static str {
    match area {
        "machine" => "#6c8ebf",
        "image" => "#d6b656",
        "swarm" => "#82b366",
        "registry" => "#b85450",
        "tls" => "#9673a6",
        _ => "#999999",
    }
}

/// The chart's geometry: the height of a row, and where the bars start and how wide they run.
const ROW: f64 = 18.0;
const LEFT: f64 = 420.0;
const WIDTH: f64 = 900.0;

/// The page: a summary, the chart (one row per bar, grouped by node, the critical path
/// outlined), a table of every bar, and the record itself as JSON for tools.
pub fn render(r: &Record) -> String {
    let steps: Vec<&Span> = r.spans.iter().filter(|s| s.step.is_some()).collect();
    let busy: f64 = steps.iter().map(|s| s.end.unwrap_or(r.total) - s.start).sum();
    let critical: f64 = steps.iter().filter(|s| s.critical).map(|s| s.end.unwrap_or(r.total) - s.start).sum();
    let load = |l: Option<f64>| l.map(|l| format!("{l:.2}")).unwrap_or_else(|| "unknown".into());
    let (svg, rows) = (chart(r), table_rows(r));
    // `<` as JSON's `\u003c`, so no label can end the script element early.
    let json = serde_json::to_string(r).unwrap_or_default().replace('<', "\\u003c");
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lab up --timings: {cluster}</title>
<style>body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} tr.critical td{{background:#fff0f0}}
.key span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}</style></head>
<body><h1>lab up --timings: cluster {cluster}</h1>
<p>driver {driver}, lab {version}; {total:.2} s in all, {n} steps taking {busy:.2} s together
({conc:.1} at once on average); the critical path's steps take {critical:.2} s. Load average
{l0} at the start, {l1} at the end.</p>
<p class="key"><span style="background:{c_lab}"></span>lab<span style="background:{c_m}"></span>machines
<span style="background:{c_i}"></span>images<span style="background:{c_s}"></span>swarm
<span style="background:{c_r}"></span>registry<span style="background:{c_t}"></span>TLS
<span style="border:2px solid #e00000"></span>critical path</p>
{svg}
<h2>Every step</h2>
<table><tr><th>node</th><th>step</th><th>start (s)</th><th>took (s)</th><th></th><th>detail</th></tr>
{rows}</table>
<script type="application/json" id="lab-timings">{json}</script>
</body></html>
"#,
        cluster = escape(&r.cluster),
        driver = escape(&r.driver),
        version = r.version,
        total = r.total,
        n = steps.len(),
        conc = busy / r.total.max(0.001),
        l0 = load(r.load.0),
        l1 = load(r.load.1),
        c_lab = colour("lab"),
        c_m = colour("machine"),
        c_i = colour("image"),
        c_s = colour("swarm"),
        c_r = colour("registry"),
        c_t = colour("tls"),
    )
}

/// The chart's rows, top to bottom: the phases first, then each node's steps, then the
/// cluster-wide steps, each group in the order its bars started.
fn chart_order(r: &Record) -> Vec<&Span> {
    let mut order: Vec<&Span> = r.spans.iter().collect();
    order.sort_by(|a, b| {
        let key = |s: &Span| match (&s.node, s.area) {
            (_, "lab") => (0, String::new()),
            (Some(n), _) => (1, n.clone()),
            (None, _) => (2, String::new()),
        };
        key(a).cmp(&key(b)).then(a.start.total_cmp(&b.start))
    });
    order
}

/// The SVG chart: seconds along the top, then a labelled bar per row.
fn chart(r: &Record) -> String {
    let total = r.total.max(0.001);
    let x = |t: f64| LEFT + t / total * WIDTH;
    let order = chart_order(r);
    let height = (order.len() as f64 + 2.0) * ROW + 20.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="monospace" font-size="11">"#,
        LEFT + WIDTH + 40.0
    );
    // Seconds along the top.
    let tick = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|t| total / t <= 12.0)
        .unwrap_or(600.0);
    let mut t = 0.0;
    while t <= total {
        let _ = write!(
            svg,
            r##"<line x1="{0}" y1="14" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="11" text-anchor="middle">{2}s</text>"##,
            x(t),
            height,
            t
        );
        t += tick;
    }
    for (row, s) in order.iter().enumerate() {
        let y = 20.0 + row as f64 * ROW;
        let end = s.end.unwrap_or(r.total);
        let who = s.node.as_deref().unwrap_or(if s.area == "lab" { "lab" } else { "cluster" });
        let _ = write!(svg, r#"<text x="4" y="{}">{}: {}</text>"#, y + 12.0, escape(who), escape(&s.label));
        let stroke = if s.critical { r##" stroke="#e00000" stroke-width="2""## } else { "" };
        let fill = if s.failed { "#ff4040" } else { colour(s.area) };
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{fill}"{stroke}><title>{} ({:.2}s to {:.2}s){}</title></rect>"#,
            x(s.start),
            y + 2.0,
            (x(end) - x(s.start)).max(1.0),
            ROW - 4.0,
            escape(&s.label),
            s.start,
            end,
            s.detail.as_deref().map(|d| format!(": {}", escape(d))).unwrap_or_default()
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The table's rows, one per bar in the order it started.
fn table_rows(r: &Record) -> String {
    let mut rows = String::new();
    for s in &r.spans {
        let end = s.end.unwrap_or(r.total);
        let _ = write!(
            rows,
            "<tr{}><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            if s.critical { r#" class="critical""# } else { "" },
            escape(s.node.as_deref().unwrap_or("-")),
            escape(&s.label),
            s.start,
            end - s.start,
            if s.failed {
                "FAILED"
            } else if s.end.is_none() {
                "never ended"
            } else {
                "ok"
            },
            escape(s.detail.as_deref().unwrap_or(""))
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(label: &str, node: Option<&str>, step: Option<usize>, start: f64, end: f64) -> Span {
        Span {
            label: label.into(),
            node: node.map(str::to_string),
            area: if step.is_some() { "machine" } else { "lab" },
            start,
            end: Some(end),
            failed: false,
            detail: None,
            step,
            critical: false,
        }
    }

    /// A record of cluster `c` on the docker driver, started at 0, with no load known.
    fn record(spans: Vec<Span>, after: Vec<Vec<usize>>, total: f64) -> Record {
        Record {
            cluster: "c".into(),
            driver: "docker".into(),
            version: "0",
            started_at: 0,
            load: (None, None),
            spans,
            after,
            total,
        }
    }

    /// The labels of the spans on the critical path.
    fn critical(r: &Record) -> Vec<&str> {
        r.spans.iter().filter(|s| s.critical).map(|s| s.label.as_str()).collect()
    }

    /// Two chains: a (0-1) then b (1-5); c (0-2) then d (2-3). The run ends with b, which
    /// waited for a: the critical path is a, b and the phases, not c or d.
    #[test]
    fn the_critical_path_is_the_chain_that_ends_last() {
        let mut r = record(
            vec![
                span("observe", None, None, 0.0, 0.1),
                span("a", Some("n1"), Some(0), 0.1, 1.0),
                span("c", Some("n2"), Some(2), 0.1, 2.0),
                span("d", Some("n2"), Some(3), 2.0, 3.0),
                span("b", Some("n1"), Some(1), 1.0, 5.0),
            ],
            vec![vec![], vec![0], vec![], vec![2]],
            5.5,
        );
        mark_critical(&mut r);
        assert_eq!(critical(&r), ["observe", "a", "b"]);
        // A step with two dependencies waited for the later one.
        r.after = vec![vec![], vec![0, 3], vec![], vec![2]];
        r.spans.iter_mut().for_each(|s| s.critical = false);
        mark_critical(&mut r);
        assert_eq!(critical(&r), ["observe", "c", "d", "b"]);
    }

    /// `up` checks the registry and looks for IPVS side by side: the phase that ends first,
    /// inside the other, is off the path; phases one after another are all on it.
    #[test]
    fn a_phase_beside_a_longer_one_is_off_the_critical_path() {
        let mut r = record(
            vec![
                span("observe", None, None, 0.0, 0.1),
                span("check", None, None, 0.1, 0.5),
                span("ipvs", None, None, 0.1, 0.3),
                span("table", None, None, 0.5, 0.6),
            ],
            vec![],
            0.6,
        );
        mark_critical(&mut r);
        assert_eq!(critical(&r), ["observe", "check", "table"]);
    }

    #[test]
    fn the_page_names_every_step_escaped_and_carries_the_record() {
        let r = Record {
            load: (Some(1.5), None),
            ..record(vec![span("load image <x> onto n1", Some("n1"), Some(0), 0.0, 1.0)], vec![vec![]], 1.0)
        };
        let page = render(&r);
        assert!(page.contains("load image &lt;x&gt; onto n1"), "{page}");
        assert!(!page.contains("<x>"), "unescaped label");
        assert!(page.contains("id=\"lab-timings\""));
        assert!(page.contains("Load average\n1.50 at the start, unknown at the end"), "{page}");
        assert!(page.starts_with("<!DOCTYPE html>") && page.trim_end().ends_with("</html>"));
    }
}
