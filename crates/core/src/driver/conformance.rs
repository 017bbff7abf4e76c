//! The behaviour suite every driver must pass, built-in or external (OpenDAL's model: one
//! suite, run against whichever backend is chosen, skipping what it does not claim).
//!
//! [`run`] takes a driver made for a throwaway cluster and checks the contract written on
//! [`Driver`] against the real thing: it creates a machine, looks at it, reaches its engine,
//! runs commands on it, and cleans up. Each rule ends as passed, failed or skipped, with a
//! detail that says what was seen; `lab driver-test NAME` (crates/cli) prints them and exits 1
//! naming each failed rule. Every call is bounded by a timeout, so a driver that hangs fails
//! the rule that waited on it, saying what never happened, and the suite goes on.
//!
//! The suite never touches a swarm or a registry: those are the core's, the same for every
//! driver, and are tested end to end elsewhere. Rules that need a machine are skipped when
//! `create` could not make one, so a single broken operation is reported once.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::driver::{Capabilities, Driver, Machine, MachineState};
use crate::error::{Error, Result};
use crate::topology::{ClusterName, NodeSpec};
use crate::wait::{Look, Wait};

/// The rules, in the order they run, with what each checks.
pub const RULES: &[(&str, &str)] = &[
    ("error-kinds", "a bad configuration table is bad input (exit 2) naming the field"),
    ("observe", "observe changes nothing and sees what create made"),
    ("create", "create twice makes one machine"),
    ("engine", "engine answers: its Docker engine answers ping"),
    ("start", "start of a running machine succeeds (unsupported unless claimed)"),
    ("exec", "exec runs argv without a shell (unsupported unless claimed)"),
    ("destroy-missing", "destroy of a missing machine succeeds (unsupported unless claimed)"),
    ("capabilities", "capabilities are stable, and shell is offered exactly when claimed"),
    ("cleanup", "what the suite made is destroyed and torn down"),
];

/// A cluster name for one run of the suite, `conf-` and 8 random hex digits, so that runs
/// never meet each other's machines.
pub fn throwaway_cluster() -> ClusterName {
    let mut b = [0u8; 4];
    if getrandom::getrandom(&mut b).is_err() {
        // Unique enough without the OS's randomness: this process, this instant.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        b = (std::process::id() ^ t.subsec_nanos() ^ t.as_secs() as u32).to_be_bytes();
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    ClusterName::parse(&format!("conf-{hex}"), "driver-test").expect("conf- and hex digits make a valid name")
}

/// A key no driver's table has: a table carrying it must be refused as bad input.
pub const BAD_KEY: &str = "lab_conformance_no_such_key";

/// How a rule ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The driver did what the contract says.
    Passed,
    /// It did not; the detail says what it did instead.
    Failed,
    /// The rule does not apply (a capability not claimed) or could not run.
    Skipped,
}

/// One rule's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleResult {
    /// The rule's name, one of [`RULES`].
    pub rule: &'static str,
    /// How it ended.
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
}

/// How long the suite waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `observe`, `engine`, `exec`, `preflight`, and making the driver again.
    pub call: Duration,
    /// `create`, `start`, `destroy`, `teardown`.
    pub change: Duration,
    /// For a machine's engine to answer `ping` once `engine` handed it over.
    pub engine: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { call: Duration::from_secs(60), change: Duration::from_secs(300), engine: Duration::from_secs(120) }
    }
}

/// Makes the driver again with another table (the way the CLI made it), for the rule on
/// error kinds.
pub type Remake = Box<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Result<Box<dyn Driver>>> + Send>> + Send + Sync>;

/// What the suite is run against.
pub struct Subject {
    /// The driver's name, for messages.
    pub name: String,
    /// The driver, made for a throwaway cluster.
    pub driver: Box<dyn Driver>,
    /// The nodes it may make (the first is used; at least one).
    pub nodes: Vec<NodeSpec>,
    /// The table the driver was made with.
    pub config: Value,
    /// Makes the driver again with another table; without it, `error-kinds` is skipped.
    pub remake: Option<Remake>,
    /// Time limits.
    pub limits: Limits,
}

/// How a bounded call ended.
enum Call<T> {
    Done(T),
    Error(Error),
    /// No answer within this long.
    TimedOut(Duration),
}

impl<T> Call<T> {
    /// The failure, said as a fragment: `create(manager) failed: ...`.
    fn failure(&self) -> Option<String> {
        match self {
            Call::Done(_) => None,
            Call::Error(e) => Some(format!("failed with a{} {} error: {}", an(kind(e)), kind(e), oneline(e))),
            Call::TimedOut(limit) => Some(format!("never answered: no answer within {limit:?}")),
        }
    }
}

fn an(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "n"
    } else {
        ""
    }
}

/// The error's kind, as the protocol names them.
pub fn kind(e: &Error) -> &'static str {
    match e {
        Error::Input { .. } => "input",
        Error::Unsupported { .. } => "unsupported",
        Error::Timeout { .. } => "timeout",
        _ => "failed",
    }
}

fn oneline(e: &Error) -> String {
    let mut text = e.to_string();
    for c in e.causes() {
        text.push_str(": ");
        text.push_str(&c);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs `fut`, for at most `limit`.
async fn bounded<T>(limit: Duration, fut: impl Future<Output = Result<T>>) -> Call<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Call::Done(v),
        Ok(Err(e)) => Call::Error(e),
        Err(_) => Call::TimedOut(limit),
    }
}

fn passed(rule: &'static str, detail: impl Into<String>) -> RuleResult {
    RuleResult { rule, verdict: Verdict::Passed, detail: detail.into() }
}

fn failed(rule: &'static str, detail: impl Into<String>) -> RuleResult {
    RuleResult { rule, verdict: Verdict::Failed, detail: detail.into() }
}

fn skipped(rule: &'static str, detail: impl Into<String>) -> RuleResult {
    RuleResult { rule, verdict: Verdict::Skipped, detail: detail.into() }
}

/// Machines by name, so that two observes can be compared whatever their order.
fn sorted(mut machines: Vec<Machine>) -> Vec<Machine> {
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    machines
}

fn names(machines: &[Machine]) -> String {
    if machines.is_empty() {
        return "none".into();
    }
    machines.iter().map(|m| format!("{} ({})", m.name, state(m))).collect::<Vec<_>>().join(", ")
}

fn state(m: &Machine) -> String {
    match &m.state {
        MachineState::Running => "running".into(),
        MachineState::Stopped => "stopped".into(),
        MachineState::Broken(why) => format!("broken: {why}"),
    }
}

/// A node name no machine of the suite has.
fn missing_name(nodes: &[NodeSpec]) -> String {
    (1..100).rev().map(|n| format!("worker{n}")).find(|n| !nodes.iter().any(|s| &s.name == n)).unwrap_or_default()
}

/// The printf argv a shell would mangle, and what it prints when nothing does.
const PRINTF: &[&str] = &["printf", "%s|", "a b", "$HOME", ";", "it's", "*"];
const PRINTED: &str = "a b|$HOME|;|it's|*|";
/// A program name a shell would split in two, running the second half.
const INJECTED: &str = "lab-conformance-injected";

struct Suite {
    name: String,
    driver: Box<dyn Driver>,
    caps: Capabilities,
    node: NodeSpec,
    limits: Limits,
}

impl Suite {
    async fn observe(&self) -> Call<Vec<Machine>> {
        match bounded(self.limits.call, self.driver.observe()).await {
            Call::Done(m) => Call::Done(sorted(m)),
            Call::Error(e) => Call::Error(e),
            Call::TimedOut(w) => Call::TimedOut(w),
        }
    }

    /// The machine named after the suite's node, if `machines` has exactly one.
    fn ours<'a>(&self, machines: &'a [Machine]) -> std::result::Result<&'a Machine, String> {
        let mine: Vec<&Machine> = machines.iter().filter(|m| m.name == self.node.name).collect();
        match mine.as_slice() {
            [one] => Ok(one),
            [] => Err(format!("observe does not list {} (it lists {})", self.node.name, names(machines))),
            many => Err(format!("observe lists {} {} times: {}", self.node.name, many.len(), names(machines))),
        }
    }

    /// `create` twice, then `observe`: one machine, named after the node.
    async fn create(&self, before: &[Machine]) -> (RuleResult, Option<Machine>) {
        let rule = "create";
        let n = &self.node.name;
        let limit = self.limits.change;
        let first = bounded(limit, self.driver.create(&self.node)).await;
        if let Some(why) = first.failure() {
            let hint = if self.caps.create {
                ""
            } else {
                " (the driver does not claim create: its machines must exist already)"
            };
            return (failed(rule, format!("the first create({n}) {why}{hint}")), None);
        }
        let second = bounded(limit, self.driver.create(&self.node)).await;
        if let Some(why) = second.failure() {
            return (failed(rule, format!("the second create({n}), of a machine that exists, {why}")), None);
        }
        let (Call::Done(a), Call::Done(b)) = (first, second) else { unreachable!("failures returned above") };
        for (which, m) in [("first", &a), ("second", &b)] {
            if m.name != *n {
                return (failed(rule, format!("the {which} create({n}) answered a machine named {:?}", m.name)), None);
            }
        }
        let after = match self.observe().await {
            Call::Done(m) => m,
            other => {
                return (failed(rule, format!("observe after create {}", other.failure().unwrap_or_default())), None)
            }
        };
        let new: Vec<Machine> = after.iter().filter(|m| !before.iter().any(|b| b.name == m.name)).cloned().collect();
        // The node's machine, when observe lists it once, goes on to the other rules even if
        // this one fails: a driver that duplicates machines can still be judged on the rest.
        let found = self.ours(&after).ok().cloned();
        if new.len() > 1 {
            return (failed(rule, format!("two creates of {n} made {} machines: {}", new.len(), names(&new))), found);
        }
        match (self.ours(&after), found) {
            (Ok(m), found) => {
                (passed(rule, format!("two creates of {n}, one machine: {}", names(std::slice::from_ref(m)))), found)
            }
            (Err(why), found) => (failed(rule, format!("after two creates of {n}, {why}")), found),
        }
    }

    /// Two observes agree (before and after create), and the second pair sees the machine.
    async fn observe_rule(&self, before: &(Call<Vec<Machine>>, Call<Vec<Machine>>), made: bool) -> RuleResult {
        let rule = "observe";
        let pair =
            |a: &Call<Vec<Machine>>, b: &Call<Vec<Machine>>, when: &str| -> std::result::Result<Vec<Machine>, String> {
                match (a, b) {
                    (Call::Done(x), Call::Done(y)) if x == y => Ok(x.clone()),
                    (Call::Done(x), Call::Done(y)) => {
                        Err(format!("two observes in a row {when} disagree: first {}, then {}", names(x), names(y)))
                    }
                    (a, b) => Err(format!("observe {when} {}", a.failure().or(b.failure()).unwrap_or_default())),
                }
            };
        if let Err(why) = pair(&before.0, &before.1, "before create") {
            return failed(rule, why);
        }
        if !made {
            return skipped(rule, "two observes before create agree; create made no machine to look for");
        }
        let (a, b) = (self.observe().await, self.observe().await);
        match pair(&a, &b, "after create") {
            Err(why) => failed(rule, why),
            Ok(after) => match self.ours(&after) {
                Ok(m) => passed(
                    rule,
                    format!("two observes agree, before and after create, and list {}", names(std::slice::from_ref(m))),
                ),
                Err(why) => failed(rule, why),
            },
        }
    }

    /// `engine` hands over a client whose engine answers `ping` within the limit.
    async fn engine(&self, machine: &Machine) -> RuleResult {
        let rule = "engine";
        let n = &machine.name;
        if machine.state != MachineState::Running {
            return failed(rule, format!("observe reports {n} as {} right after create", state(machine)));
        }
        // As the core does: the engine may not be there yet (its socket not made, its port
        // not open), so `engine` is asked again until its engine answers, within the limit.
        // A rule's verdict is the wait's value; only "not yet" keeps it waiting.
        let start = Instant::now();
        let waited = Wait::new(n, "its engine to answer ping", self.limits.engine)
            .poll(|| async {
                let engine = match bounded(self.limits.call, self.driver.engine(machine)).await {
                    Call::Done(e) => e,
                    Call::Error(e @ (Error::Input { .. } | Error::Unsupported { .. })) => {
                        let why = Call::<()>::Error(e).failure().unwrap_or_default();
                        return Look::Done(failed(rule, format!("engine({n}) {why}")));
                    }
                    other => return Look::not_yet(format!("engine({n}) {}", other.failure().unwrap_or_default())),
                };
                if engine.advertise_addr.trim().is_empty() {
                    return Look::Done(failed(rule, format!("engine({n}) answered an empty advertise address")));
                }
                match tokio::time::timeout(Duration::from_secs(5), engine.docker.ping()).await {
                    Ok(Ok(_)) => Look::Done(passed(
                        rule,
                        format!(
                            "{n}'s engine answered ping after {:.1}s; advertise address {}",
                            start.elapsed().as_secs_f64(),
                            engine.advertise_addr
                        ),
                    )),
                    Ok(Err(e)) => Look::not_yet(format!("ping: {}", crate::error::engine_message(&e))),
                    Err(_) => Look::not_yet("ping did not answer within 5s"),
                }
            })
            .await;
        match waited {
            Ok(verdict) => verdict,
            Err(e) => {
                let last =
                    std::error::Error::source(&e).map(|s| s.to_string()).unwrap_or_else(|| "no answer yet".into());
                failed(
                    rule,
                    format!("{n}'s engine never answered ping within {}s; last: {last}", self.limits.engine.as_secs()),
                )
            }
        }
    }

    /// An operation the driver does not claim must answer `Unsupported`.
    fn unclaimed<T>(&self, rule: &'static str, what: &str, call: Call<T>) -> RuleResult {
        match call {
            Call::Error(Error::Unsupported { .. }) => {
                skipped(rule, format!("not claimed, and {what} answers unsupported, as it must"))
            }
            Call::Done(_) => failed(
                rule,
                format!("the capability is not claimed, yet {what} succeeded; claim it, or answer unsupported"),
            ),
            other => failed(
                rule,
                format!(
                    "the capability is not claimed, so {what} must answer unsupported, but it {}",
                    other.failure().unwrap_or_default()
                ),
            ),
        }
    }

    /// `start` of a running machine returns it, running, and makes no second one.
    async fn start(&self, machine: Option<&Machine>) -> RuleResult {
        let rule = "start";
        let n = &self.node.name;
        let call = || bounded(self.limits.change, self.driver.start(n));
        if !self.caps.start {
            return self.unclaimed(rule, &format!("start({n})"), call().await);
        }
        if machine.is_none() {
            return skipped(rule, "needs a machine, and create made none");
        }
        match call().await {
            Call::Done(m) if m.name != *n => failed(rule, format!("start({n}) answered a machine named {:?}", m.name)),
            Call::Done(m) if m.state != MachineState::Running => {
                failed(rule, format!("start({n}) of a running machine answered it {}", state(&m)))
            }
            Call::Done(_) => match self.observe().await {
                Call::Done(after) => match self.ours(&after) {
                    Ok(m) if m.state == MachineState::Running => {
                        passed(rule, format!("start({n}) of a running machine: still one, running"))
                    }
                    Ok(m) => failed(rule, format!("after start({n}), observe reports it {}", state(m))),
                    Err(why) => failed(rule, format!("after start({n}), {why}")),
                },
                other => failed(rule, format!("observe after start {}", other.failure().unwrap_or_default())),
            },
            other => failed(rule, format!("start({n}) of a running machine {}", other.failure().unwrap_or_default())),
        }
    }

    async fn exec(&self, node: &str, argv: &[&str]) -> Call<crate::driver::ExecOutput> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        bounded(self.limits.call, self.driver.exec(node, &argv)).await
    }

    /// Each argument reaches the program as one argument, and nothing is read by a shell.
    async fn exec_rule(&self, machine: Option<&Machine>) -> RuleResult {
        let rule = "exec";
        let n = &self.node.name;
        if !self.caps.exec {
            return self.unclaimed(rule, &format!("exec({n}, ...)"), self.exec(n, &["true"]).await);
        }
        if machine.is_none() {
            return skipped(rule, "needs a machine, and create made none");
        }
        let mut problems = Vec::new();
        match self.exec(n, PRINTF).await {
            Call::Done(out) if out.stdout == PRINTED && matches!(out.status, Some(0) | None) => {}
            Call::Done(out) => problems.push(format!(
                "exec({n}, {PRINTF:?}) printed {:?} (status {}), not {PRINTED:?}: the arguments went through a shell or were split or joined{}",
                out.stdout,
                out.status.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
                if out.stderr.trim().is_empty() { String::new() } else { format!("; stderr: {}", out.stderr.trim()) }
            )),
            other => problems.push(format!("exec({n}, {PRINTF:?}) {}", other.failure().unwrap_or_default())),
        }
        let missing = format!("lab-conformance-no-such-program;echo {INJECTED}");
        match self.exec(n, &[&missing]).await {
            // The program's name is quoted in "not found" messages; only a shell prints
            // the word alone on a line.
            Call::Done(out) if out.stdout.lines().chain(out.stderr.lines()).any(|l| l.trim() == INJECTED) => {
                problems.push(format!("exec({n}, [{missing:?}]) ran echo: a shell read the program's name"))
            }
            Call::Done(out) if out.status == Some(127) => {}
            Call::Done(out) => problems.push(format!(
                "exec({n}, [{missing:?}]), a program that does not exist, answered status {} (must be 127, or an error){}",
                out.status.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
                if out.stderr.trim().is_empty() { String::new() } else { format!("; stderr: {}", out.stderr.trim()) }
            )),
            Call::Error(_) => {}
            other => problems.push(format!("exec({n}, [{missing:?}]) {}", other.failure().unwrap_or_default())),
        }
        if problems.is_empty() {
            passed(
                rule,
                format!("{PRINTED:?} printed exactly; a missing program is status 127 or an error, with no shell"),
            )
        } else {
            failed(rule, problems.join("; "))
        }
    }

    /// `destroy` of a machine that never existed succeeds, twice.
    async fn destroy_missing(&self, missing: &str) -> RuleResult {
        let rule = "destroy-missing";
        let call = || bounded(self.limits.change, self.driver.destroy(missing));
        if !self.caps.destroy {
            return self.unclaimed(rule, &format!("destroy({missing})"), call().await);
        }
        for which in ["first", "second"] {
            if let Some(why) = call().await.failure() {
                return failed(
                    rule,
                    format!("the {which} destroy({missing}), of a machine that does not exist, {why}"),
                );
            }
        }
        passed(rule, format!("destroy({missing}) of a machine that does not exist succeeds, twice"))
    }

    /// Capabilities do not change, and a shell command is offered exactly when claimed.
    fn capabilities(&self) -> RuleResult {
        let rule = "capabilities";
        let n = &self.node.name;
        let again = self.driver.capabilities();
        if again != self.caps {
            return failed(rule, format!("capabilities changed between calls: {:?}, then {again:?}", self.caps));
        }
        let shell = self.driver.shell_command(n, &[]);
        let with_args = self.driver.shell_command(n, &["true".to_string()]);
        match (self.caps.shell, &shell, &with_args) {
            (true, Some(a), Some(b)) if !a.is_empty() && !b.is_empty() && !a[0].is_empty() => {}
            (true, ..) => {
                return failed(
                    rule,
                    format!(
                        "shell is claimed, but shell_command({n}) answered {shell:?}, and with arguments {with_args:?}"
                    ),
                )
            }
            (false, None, None) => {}
            (false, ..) => {
                return failed(rule, format!("shell is not claimed, but shell_command({n}) answered {shell:?}"))
            }
        }
        let c = self.caps;
        let claimed: Vec<&str> =
            [("create", c.create), ("destroy", c.destroy), ("start", c.start), ("shell", c.shell), ("exec", c.exec)]
                .iter()
                .filter(|(_, yes)| *yes)
                .map(|(name, _)| *name)
                .collect();
        passed(
            rule,
            format!(
                "claims {}; stable across calls; shell command {}",
                if claimed.is_empty() { "nothing".to_string() } else { claimed.join(", ") },
                match shell {
                    Some(argv) => format!("{:?}", argv[0]),
                    None => "none, as claimed".into(),
                }
            ),
        )
    }

    /// Destroys the node and tears the cluster down where the driver can; says what is left.
    async fn cleanup(&self, before: &[Machine]) -> RuleResult {
        let rule = "cleanup";
        let n = &self.node.name;
        let mut problems = Vec::new();
        let made = !before.iter().any(|m| m.name == *n);
        if self.caps.destroy {
            // The node, and whatever else appeared since the suite began (a driver whose
            // create makes a machine each time leaves more than one).
            let mut doomed = vec![n.clone()];
            if let Call::Done(now) = self.observe().await {
                doomed
                    .extend(now.into_iter().map(|m| m.name).filter(|m| m != n && !before.iter().any(|b| &b.name == m)));
            }
            for name in &doomed {
                let call = bounded(self.limits.change, self.driver.destroy(name));
                if let Some(why) = call.await.failure() {
                    problems.push(format!("destroy({name}) {why}"));
                }
            }
        }
        if let Some(why) = bounded(self.limits.change, self.driver.teardown()).await.failure() {
            problems.push(format!("teardown {why}"));
        }
        let after = match self.observe().await {
            Call::Done(m) => m,
            other => {
                problems.push(format!("observe after cleanup {}", other.failure().unwrap_or_default()));
                Vec::new()
            }
        };
        let left: Vec<Machine> = after.iter().filter(|m| !before.iter().any(|b| b.name == m.name)).cloned().collect();
        if self.caps.destroy && (!left.is_empty() || after.iter().any(|m| m.name == *n)) {
            problems.push(format!("after destroy({n}) and teardown, observe still lists {}", names(&after)));
        }
        if !problems.is_empty() {
            return failed(rule, problems.join("; "));
        }
        match (self.caps.destroy, made, left.is_empty()) {
            (true, _, _) => passed(rule, format!("destroyed {n} and tore the cluster down; observe lists nothing the suite made")),
            (false, false, _) => skipped(
                rule,
                format!("the driver cannot destroy machines; {n} existed before the suite and is left as it was; teardown succeeded"),
            ),
            (false, true, true) => skipped(rule, "the driver cannot destroy machines; none is left; teardown succeeded"),
            (false, true, false) => skipped(
                rule,
                format!("the driver cannot destroy machines: left {} of driver {}, remove them yourself", names(&left), self.name),
            ),
        }
    }
}

/// `error-kinds`: the driver made again with an unknown key in its table refuses it, when made
/// or at preflight, as bad input naming the key.
async fn error_kinds(subject: &Subject) -> RuleResult {
    let rule = "error-kinds";
    let Some(remake) = &subject.remake else {
        return skipped(rule, "no way to make the driver again with another table");
    };
    let mut table = match &subject.config {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    table.insert(BAD_KEY.into(), Value::Bool(true));
    let limit = subject.limits.call;
    let judge = |e: &Error, when: &str| -> RuleResult {
        let text = oneline(e);
        match e {
            Error::Input { .. } if e.exit_code() == 2 && text.contains(BAD_KEY) => {
                passed(rule, format!("an unknown key is bad input (exit 2) {when}: {text}"))
            }
            Error::Input { .. } => failed(rule, format!("an unknown key is bad input {when}, but the message does not name {BAD_KEY}: {text}")),
            _ => failed(
                rule,
                format!("an unknown key {BAD_KEY} must be bad input (exit 2) naming it, but {when} it was a{} {} error (exit {}): {text}", an(kind(e)), kind(e), e.exit_code()),
            ),
        }
    };
    let driver = match bounded(limit, remake(Value::Object(table))).await {
        Call::Done(d) => d,
        Call::Error(e) => return judge(&e, "when the driver is made"),
        Call::TimedOut(d) => {
            return failed(rule, format!("making the driver with that table never answered within {d:?}"))
        }
    };
    match bounded(limit, driver.preflight(&subject.nodes)).await {
        Call::Done(()) => failed(
            rule,
            format!("a table with the unknown key {BAD_KEY} was accepted, when the driver was made and at preflight"),
        ),
        Call::Error(e) => judge(&e, "at preflight"),
        Call::TimedOut(d) => failed(rule, format!("preflight with that table never answered within {d:?}")),
    }
}

/// Runs every rule against the subject, in the order of [`RULES`], and cleans up.
///
/// `preflight` runs first, as `lab up` runs it: when it fails nothing was made, and its error
/// is returned as it is (bad input stays bad input), not as a rule.
pub async fn run(subject: Subject) -> Result<Vec<RuleResult>> {
    let node = subject.nodes.first().cloned().ok_or_else(|| Error::input("driver-test", "no node to test with"))?;
    let missing = missing_name(&subject.nodes);
    let mut results = vec![error_kinds(&subject).await];
    let suite = Suite {
        name: subject.name.clone(),
        caps: subject.driver.capabilities(),
        driver: subject.driver,
        node,
        limits: subject.limits,
    };
    match bounded(suite.limits.call, suite.driver.preflight(&subject.nodes)).await {
        Call::Done(()) => {}
        Call::Error(e) => return Err(e),
        Call::TimedOut(d) => {
            return Err(Error::Timeout {
                node: format!("driver {}", suite.name),
                what: "its preflight to answer".into(),
                secs: d.as_secs(),
                hint: None,
                source: None,
            })
        }
    }
    let before = (suite.observe().await, suite.observe().await);
    let base: Vec<Machine> = match &before.0 {
        Call::Done(m) => m.clone(),
        _ => Vec::new(),
    };
    let (create, machine) = suite.create(&base).await;
    results.push(suite.observe_rule(&before, machine.is_some()).await);
    results.push(create);
    results.push(match &machine {
        Some(m) => suite.engine(m).await,
        None => skipped("engine", "needs a machine, and create made none"),
    });
    results.push(suite.start(machine.as_ref()).await);
    results.push(suite.exec_rule(machine.as_ref()).await);
    results.push(suite.destroy_missing(&missing).await);
    results.push(suite.capabilities());
    results.push(suite.cleanup(&base).await);
    Ok(results)
}

#[cfg(test)]
mod tests {
    //! The suite against fakes: one that keeps the contract passes every rule; each way of
    //! breaking it fails the rule about it, and a driver that hangs fails within the limits.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::driver::{async_trait, ExecOutput, NodeEngine};
    use crate::topology::Role;

    /// What a fake gets wrong.
    #[derive(Default, Clone, Copy)]
    struct Flaws {
        /// `create` makes another machine each time.
        duplicates: bool,
        /// `exec` joins argv and runs it with `sh -c`.
        shell: bool,
        /// `destroy` of a missing machine fails.
        destroy_missing_fails: bool,
        /// Claims nothing optional, yet `start` succeeds.
        start_unclaimed: bool,
        /// `observe` never answers.
        hangs: bool,
        /// Accepts any table.
        lax_config: bool,
    }

    struct Fake {
        caps: Capabilities,
        flaws: Flaws,
        machines: Mutex<BTreeMap<String, Machine>>,
        socket: std::path::PathBuf,
    }

    fn running(name: &str) -> Machine {
        Machine {
            name: name.into(),
            role: Some(Role::Manager),
            state: MachineState::Running,
            address: Some("127.0.0.1".into()),
        }
    }

    #[async_trait]
    impl Driver for Fake {
        fn capabilities(&self) -> Capabilities {
            self.caps
        }
        async fn observe(&self) -> Result<Vec<Machine>> {
            if self.flaws.hangs {
                std::future::pending::<()>().await;
            }
            Ok(self.machines.lock().unwrap().values().cloned().collect())
        }
        async fn create(&self, node: &NodeSpec) -> Result<Machine> {
            let mut m = self.machines.lock().unwrap();
            if self.flaws.duplicates && m.contains_key(&node.name) {
                let n = m.len();
                m.insert(format!("{}-{n}", node.name), running(&format!("{}-{n}", node.name)));
            }
            Ok(m.entry(node.name.clone()).or_insert_with(|| running(&node.name)).clone())
        }
        async fn start(&self, node: &str) -> Result<Machine> {
            if !self.caps.start && !self.flaws.start_unclaimed {
                return Err(Error::unsupported("cannot start"));
            }
            self.machines
                .lock()
                .unwrap()
                .get(node)
                .cloned()
                .ok_or_else(|| Error::node(node, "start", "no such machine"))
        }
        async fn destroy(&self, node: &str) -> Result<()> {
            if !self.caps.destroy {
                return Err(Error::unsupported("cannot destroy"));
            }
            match self.machines.lock().unwrap().remove(node) {
                None if self.flaws.destroy_missing_fails => Err(Error::node(node, "destroy", "no such machine")),
                _ => Ok(()),
            }
        }
        async fn engine(&self, machine: &Machine) -> Result<NodeEngine> {
            let docker =
                bollard::Docker::connect_with_unix(&self.socket.to_string_lossy(), 5, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| Error::engine(&machine.name, "connect", e))?;
            Ok(NodeEngine { docker, advertise_addr: "127.0.0.1".into(), client_env: vec![] })
        }
        async fn exec(&self, _node: &str, argv: &[String]) -> Result<ExecOutput> {
            if !self.caps.exec {
                return Err(Error::unsupported("cannot exec"));
            }
            let out = if self.flaws.shell {
                std::process::Command::new("sh").arg("-c").arg(argv.join(" ")).output()
            } else {
                std::process::Command::new(&argv[0]).args(&argv[1..]).output()
            };
            match out {
                Ok(o) => Ok(ExecOutput {
                    status: o.status.code().map(i64::from),
                    stdout: String::from_utf8_lossy(&o.stdout).into(),
                    stderr: String::from_utf8_lossy(&o.stderr).into(),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(ExecOutput { status: Some(127), ..Default::default() })
                }
                Err(e) => Err(Error::io(_node, "exec", e)),
            }
        }
        fn shell_command(&self, node: &str, args: &[String]) -> Option<Vec<String>> {
            self.caps.shell.then(|| [vec!["fake-shell".to_string(), node.to_string()], args.to_vec()].concat())
        }
    }

    /// A unix socket that answers every HTTP request as an engine's `/_ping` does.
    fn ping_server(dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let reply = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOK";
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        path
    }

    fn node() -> NodeSpec {
        NodeSpec { name: "manager".into(), role: Role::Manager, labels: BTreeMap::new() }
    }

    async fn suite(caps: Capabilities, flaws: Flaws) -> Vec<RuleResult> {
        let dir = tempfile::tempdir().unwrap();
        let socket = ping_server(dir.path());
        let fake =
            move |flaws: Flaws, socket: std::path::PathBuf| Fake { caps, flaws, machines: Mutex::default(), socket };
        let remake_socket = socket.clone();
        let remake: Remake = Box::new(move |table: Value| {
            let ok = flaws.lax_config || table.get(BAD_KEY).is_none();
            let made = fake(flaws, remake_socket.clone());
            Box::pin(async move {
                if ok {
                    Ok(Box::new(made) as Box<dyn Driver>)
                } else {
                    Err(Error::input("lab.toml: [drivers.fake]", format!("unknown field `{BAD_KEY}`")))
                }
            })
        });
        let subject = Subject {
            name: "fake".into(),
            driver: Box::new(fake(flaws, socket)),
            nodes: vec![node()],
            config: serde_json::json!({}),
            remake: Some(remake),
            limits: Limits {
                call: Duration::from_millis(500),
                change: Duration::from_millis(500),
                engine: Duration::from_secs(5),
            },
        };
        run(subject).await.unwrap()
    }

    fn verdicts(results: &[RuleResult]) -> BTreeMap<&'static str, Verdict> {
        results.iter().map(|r| (r.rule, r.verdict)).collect()
    }

    fn failures(results: &[RuleResult]) -> Vec<&'static str> {
        results.iter().filter(|r| r.verdict == Verdict::Failed).map(|r| r.rule).collect()
    }

    #[tokio::test]
    async fn a_driver_that_keeps_the_contract_passes_every_rule() {
        let results = suite(Capabilities::all(), Flaws::default()).await;
        assert_eq!(results.iter().map(|r| r.rule).collect::<Vec<_>>(), RULES.iter().map(|r| r.0).collect::<Vec<_>>());
        assert!(results.iter().all(|r| r.verdict == Verdict::Passed), "{results:#?}");
    }

    #[tokio::test]
    async fn what_is_not_claimed_is_skipped_when_it_answers_unsupported() {
        let results = suite(Capabilities::none().create(true), Flaws::default()).await;
        let v = verdicts(&results);
        assert!(failures(&results).is_empty(), "{results:#?}");
        for rule in ["start", "exec", "destroy-missing"] {
            assert_eq!(v[rule], Verdict::Skipped, "{rule}: {results:#?}");
        }
        // It cannot destroy what create made: the cleanup says what it left.
        let cleanup = results.iter().find(|r| r.rule == "cleanup").unwrap();
        assert!(cleanup.detail.contains("left manager"), "{cleanup:?}");
    }

    #[tokio::test]
    async fn each_broken_promise_fails_its_rule() {
        let cases: &[(Flaws, &str, &str)] = &[
            (Flaws { duplicates: true, ..Default::default() }, "create", "made 2 machines"),
            (Flaws { shell: true, ..Default::default() }, "exec", "through a shell"),
            (Flaws { destroy_missing_fails: true, ..Default::default() }, "destroy-missing", "does not exist"),
            (Flaws { lax_config: true, ..Default::default() }, "error-kinds", BAD_KEY),
        ];
        for (flaws, rule, said) in cases {
            let results = suite(Capabilities::all(), *flaws).await;
            // Only that rule: the others still judge the machine create made.
            assert_eq!(failures(&results), vec![*rule], "{results:#?}");
            let r = results.iter().find(|r| r.rule == *rule).unwrap();
            assert!(r.detail.contains(said), "{r:?}");
        }
        let results =
            suite(Capabilities::none().create(true), Flaws { start_unclaimed: true, ..Default::default() }).await;
        assert_eq!(failures(&results), vec!["start"], "{results:#?}");
    }

    #[tokio::test]
    async fn a_driver_that_hangs_fails_saying_what_never_answered() {
        let started = Instant::now();
        let results = suite(Capabilities::all(), Flaws { hangs: true, ..Default::default() }).await;
        assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
        let observe = results.iter().find(|r| r.rule == "observe").unwrap();
        assert_eq!(observe.verdict, Verdict::Failed);
        assert!(observe.detail.contains("observe before create never answered: no answer within 500ms"), "{observe:?}");
    }
}
