//! Whether every node reaches the registry: the seed's `curl localhost:5000/v2/` from inside
//! every node, each node's dockerd asked through [`super::reach`], and, when a node fails,
//! what lab can tell of why.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::query_parameters::{InspectServiceOptions, ListTasksOptionsBuilder};
use futures_util::future::join_all;
use serde::Serialize;

use crate::cluster::probe;
use crate::cluster::Nodes;
use crate::driver::MachineState;
use crate::error::{Error, Result};
use crate::registry::forwarder::FORWARDER;
use crate::registry::mode::has_ipvs;
use crate::registry::observe_forwarder;
use crate::registry::task_running;
use crate::registry::PORT;
use crate::registry::SERVICE;
use crate::registry::TLS_PORT;
use crate::state::{RegistryMode, RegistryTls};
use crate::topology::REGISTRY_NODE_LABEL;
use crate::wait::{Look, Wait};

/// One URL's answer on one node.
#[derive(Debug, Clone, Serialize)]
pub struct UrlCheck {
    /// The URL, as fetched from inside the node.
    pub url: String,
    /// Whether it answered `{}`.
    pub ok: bool,
    /// What it answered, or why not.
    pub answer: String,
}

/// The registry check on one node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeCheck {
    /// The node.
    pub node: String,
    /// Every URL answered `{}`, and the node's dockerd reached the registry.
    pub ok: bool,
    /// One line per URL.
    pub urls: Vec<UrlCheck>,
    /// Whether the node's own dockerd reaches `localhost:5000` (what `docker push` and
    /// `pull` need; curl may get through where dockerd does not). `None`: not asked (the
    /// quick passes of [`wait_ready`], or an engine that does not answer).
    pub engine: Option<crate::registry::reach::EngineCheck>,
    /// Why not, when lab could tell.
    pub explanation: Option<String>,
}

impl NodeCheck {
    fn with_engine(mut self, engine: crate::registry::reach::EngineCheck) -> NodeCheck {
        self.ok = self.ok && engine.ok;
        self.engine = Some(engine);
        self
    }
}

/// How long a check waits for a node's engine to answer before it says it does not.
const ENGINE_WAIT: Duration = Duration::from_secs(5);

/// The URLs the seed checks on every node, and the `localhost` spelling that breaks when it
/// resolves to `::1` and nothing listens there.
pub const CHECK_URLS: [&str; 2] = ["http://127.0.0.1:5000/v2/", "http://localhost:5000/v2/"];

/// The cluster's CA as every node has it (mutual TLS): the refusal check trusts it, so a
/// refusal is for the missing client certificate, not for an unknown server.
pub(crate) const NODE_CA: &str = "/etc/docker/certs.d/localhost:5000/ca.crt";

/// curl's arguments for `urls` (busybox `wget` where there is no curl). In mutual TLS too:
/// the node's relay answers them.
pub(crate) fn curl_commands(urls: &[&str]) -> Vec<Vec<String>> {
    let mut curl: Vec<String> = ["curl", "-s", "-m", "5"].map(String::from).to_vec();
    curl.extend(urls.iter().map(|u| u.to_string()));
    let mut wget: Vec<String> = ["wget", "-q", "-O-"].map(String::from).to_vec();
    wget.extend(urls.iter().map(|u| u.to_string()));
    vec![curl, wget]
}

/// Runs the first of `commands` the node has (see [`probe::on_node`]).
pub(crate) async fn fetch(
    rt: &dyn Nodes,
    node: &str,
    commands: &[Vec<String>],
) -> std::result::Result<probe::ProbeOutput, String> {
    let argvs: Vec<Vec<&str>> = commands.iter().map(|c| c.iter().map(String::as_str).collect()).collect();
    let refs: Vec<&[&str]> = argvs.iter().map(Vec::as_slice).collect();
    probe::on_node(rt, node, &refs, &rt.desired().registry_image, Duration::from_secs(20)).await
}

/// Mutual TLS: a client on the nodes' network without the certificate must get nothing, from
/// `node`: not from the registry's TLS port at the registry node's address (in TLS, trusting
/// the CA and presenting nothing, nor in plain HTTP), and not from port 5000 at this node's
/// own address, which only the node itself reaches through its loopback.
pub(crate) async fn check_refusal(rt: &dyn Nodes, node: &str) -> Vec<UrlCheck> {
    let reg = rt.desired().topology.registry_node().name.clone();
    let (Ok(here), Ok(there)) = (rt.engine(node).await, rt.engine(&reg).await) else {
        return vec![UrlCheck {
            url: "the registry without a client certificate".into(),
            ok: false,
            answer: "could not ask: an engine does not answer".into(),
        }];
    };
    let reg_addr = crate::registry::bracket(&there.advertise_addr);
    let tls_url = format!("https://{reg_addr}:{TLS_PORT}/v2/");
    let plain_tls = tls_url.replacen("https://", "http://", 1);
    // curl asks for `localhost` (a name the registry's certificate has) at the registry node's
    // address, so what refuses is the missing client certificate, not the name.
    let resolve = format!("localhost:{TLS_PORT}:{}", there.advertise_addr);
    let by_name = format!("https://localhost:{TLS_PORT}/v2/");
    let relay_url = format!("http://{}:{PORT}/v2/", crate::registry::bracket(&here.advertise_addr));
    let curl = |args: &[&str]| -> Vec<String> {
        ["curl", "-s", "-m", "5"].iter().chain(args).map(|a| a.to_string()).collect()
    };
    // No `-T`: Debian's busybox wget crashes on it, which would read as a refusal; the
    // timeout around the probe bounds it.
    let wget = |url: &str| -> Vec<String> { ["wget", "-q", "-O-", url].map(String::from).to_vec() };
    let mut out = Vec::new();
    for (what, argvs) in [
        (
            format!("{tls_url} without a client certificate"),
            vec![curl(&["--cacert", NODE_CA, "--resolve", &resolve, &by_name]), wget(&tls_url)],
        ),
        (format!("{plain_tls} (plain HTTP)"), vec![curl(&[&plain_tls]), wget(&plain_tls)]),
        (format!("{relay_url} (the relay, from off the node's loopback)"), vec![curl(&[&relay_url]), wget(&relay_url)]),
    ] {
        let r = fetch(rt, node, &argvs).await;
        let (ok, answer) = match r {
            Ok(o) if o.output.contains("\"repositories\"") || o.output.trim() == "{}" => {
                (false, format!("served a client without the certificate: {}", o.output.trim()))
            }
            Ok(o) if o.code == 0 && o.output.contains("HTTP request to an HTTPS server") => {
                (true, "refused: the registry speaks only TLS".into())
            }
            Ok(o) if o.code == 127 => {
                (false, format!("could not ask: no curl or wget on the node ({})", o.output.trim()))
            }
            Ok(o) if o.code != 0 => {
                (true, format!("refused: {}", crate::registry::curl::describe_exit(o.code, &o.output)))
            }
            Ok(o) => (false, format!("exit 0 with an unexpected answer: {}", o.output.trim())),
            Err(e) => (false, format!("could not run the probe: {e}")),
        };
        out.push(UrlCheck { url: what, ok, answer });
    }
    out
}

/// Fetches [`CHECK_URLS`] from inside `node`, and asks the node's dockerd to reach
/// `localhost:5000` ([`crate::registry::reach`]), both at once. In mutual TLS, also checks that a
/// client without the certificate is refused.
pub async fn check_node(rt: &dyn Nodes, node: &str) -> NodeCheck {
    // An engine that does not answer is asked once, for a few seconds, not by each check.
    if let Err(e) = rt.try_engine(node, ENGINE_WAIT).await {
        return not_asked(node, without_node(node, &e));
    }
    let refusal = async {
        match rt.desired().tls {
            RegistryTls::Mutual => check_refusal(rt, node).await,
            RegistryTls::Open => Vec::new(),
        }
    };
    let (mut urls, engine, refused) = tokio::join!(check_node_with(rt, node), check_engine(rt, node), refusal);
    if !urls.urls.is_empty() {
        urls.ok = urls.ok && refused.iter().all(|u| u.ok);
        urls.urls.extend(refused);
    }
    match engine {
        Some(engine) => urls.with_engine(engine),
        None => urls,
    }
}

/// The engine-level check on `node`; `None` if its engine does not answer (the URL check
/// says so already).
pub(crate) async fn check_engine(rt: &dyn Nodes, node: &str) -> Option<crate::registry::reach::EngineCheck> {
    let docker = rt.engine(node).await.ok()?.docker;
    Some(crate::registry::reach::check(&docker).await)
}

/// [`CHECK_URLS`] on `node`, fetched by curl run there.
pub(crate) async fn check_node_with(rt: &dyn Nodes, node: &str) -> NodeCheck {
    let failed = |explanation: Option<String>| NodeCheck {
        node: node.into(),
        ok: false,
        urls: Vec::new(),
        engine: None,
        explanation,
    };
    if let Err(e) = rt.try_engine(node, ENGINE_WAIT).await {
        return failed(Some(without_node(node, &e)));
    }
    // Both URLs in one command first (the common, healthy case: one exec per node); one
    // command per URL only to tell which fails.
    let both = fetch(rt, node, &curl_commands(&CHECK_URLS)).await;
    if matches!(&both, Ok(out) if out.code == 0 && out.output.trim() == "{}{}") {
        let urls = CHECK_URLS.iter().map(|u| UrlCheck { url: u.to_string(), ok: true, answer: "{}".into() }).collect();
        return NodeCheck { node: node.into(), ok: true, urls, engine: None, explanation: None };
    }
    let urls = join_all(CHECK_URLS.iter().map(|url| async move {
        // curl as in the seed, else busybox wget (no `-T`: Debian's busybox wget crashes on
        // it; the timeout around the probe bounds it).
        let r = fetch(rt, node, &curl_commands(&[url])).await;
        let (ok, answer) = match r {
            Ok(out) if out.code == 0 && out.output.trim() == "{}" => (true, "{}".to_string()),
            Ok(out) => (false, crate::registry::curl::describe_exit(out.code, &out.output)),
            Err(e) => (false, format!("could not run the probe: {e}")),
        };
        UrlCheck { url: url.to_string(), ok, answer }
    }))
    .await;
    let ok = urls.iter().all(|u| u.ok);
    NodeCheck { node: node.into(), ok, urls, engine: None, explanation: None }
}

/// The nodes of the topology whose machine does not run, by node, in a word or two for the
/// user ("stopped", "broken: ...", "missing"), as the driver reports them now. Empty when the
/// driver cannot say: then every node is asked.
pub(crate) async fn machines_down(rt: &dyn Nodes) -> BTreeMap<String, String> {
    let Ok(machines) = rt.machines().await else { return BTreeMap::new() };
    rt.desired()
        .topology
        .nodes
        .iter()
        .filter_map(|n| {
            let why = match machines.iter().find(|m| m.name == n.name).map(|m| &m.state) {
                Some(MachineState::Running) => return None,
                Some(MachineState::Stopped) => "stopped".to_string(),
                Some(MachineState::Broken(why)) => format!("broken: {why}"),
                None => "missing".to_string(),
            };
            Some((n.name.clone(), why))
        })
        .collect()
}

/// A check that asked nothing, and why.
fn not_asked(node: &str, explanation: String) -> NodeCheck {
    NodeCheck { node: node.into(), ok: false, urls: Vec::new(), engine: None, explanation: Some(explanation) }
}

/// An error about `node`, without the node's name in front (the check's lines start with it).
fn without_node(node: &str, e: &Error) -> String {
    let text = e.to_string();
    text.strip_prefix(&format!("{node}: ")).unwrap_or(&text).to_string()
}

/// Checks every node concurrently and explains each failure.
///
/// A node whose machine does not run is asked nothing: its engine cannot answer, and waiting
/// for it to is what made a check of a stopped node take most of a minute. Where that node
/// is the registry's, no other node can reach the registry either, so they are not asked
/// (each would wait for curl's and dockerd's timeouts), and each says why.
pub async fn check_all(rt: &dyn Nodes) -> Vec<NodeCheck> {
    let nodes: Vec<String> = rt.desired().topology.nodes.iter().map(|n| n.name.clone()).collect();
    let down = machines_down(rt).await;
    let reg = rt.desired().topology.registry_node().name.clone();
    let reg_down = down.get(&reg).map(|why| {
        let start = if why == "missing" { "`lab up` makes it" } else { "`lab up` starts it" };
        format!("the registry's node {reg} is {why}: {start}")
    });
    let mut checks = join_all(nodes.iter().map(|n| {
        let (down, reg_down) = (&down, &reg_down);
        async move {
            match (down.get(n), reg_down) {
                (Some(why), _) => not_asked(n, why.clone()),
                (None, Some(why)) => not_asked(n, why.clone()),
                (None, None) => check_node(rt, n).await,
            }
        }
    }))
    .await;
    if checks.iter().any(|c| !c.ok) {
        let why = diagnose_service(rt).await;
        for c in checks.iter_mut().filter(|c| !c.ok) {
            if c.explanation.is_some() {
                continue;
            }
            // Where curl gets `{}` and only dockerd fails, the registry and the forwarder
            // are fine: the engine check's own explanation is the one that holds.
            let engine_only = !c.urls.is_empty() && c.urls.iter().all(|u| u.ok);
            c.explanation = match c.engine.as_ref().and_then(|e| e.explanation()) {
                Some(e) if engine_only => Some(e),
                _ => Some(explain_node(rt, &c.node, why.as_deref()).await),
            };
        }
    }
    checks
}

/// `up`'s look at `node`: its dockerd asked for the registry at `localhost:5000` (and, when
/// that fails, at each of localhost's addresses, to say which is at fault) and at
/// `127.0.0.1:5000`, the two addresses the seed's curl fetches. That is what `docker push` and
/// `pull` on the node need, asked of the engine's API: nothing runs on the node.
///
/// On a node without IPv6 loopback (dockerd says so at once, dialling `::1`), `localhost` can
/// only have been reached at 127.0.0.1, so that one answer is both: each question is a few
/// requests to the one registry, which every node asks at once.
pub(crate) async fn engine_look(rt: &dyn Nodes, node: &str) -> NodeCheck {
    // An engine that does not answer is asked once, for a few seconds, and its own error is
    // the explanation.
    let e = match rt.try_engine(node, ENGINE_WAIT).await {
        Ok(e) => e,
        Err(err) => return not_asked(node, without_node(node, &err)),
    };
    let v4 = format!("127.0.0.1:{PORT}");
    let (mut engine, no_ipv6) = tokio::join!(
        crate::registry::reach::check(&e.docker),
        crate::registry::forwarder::lacks_ipv6_loopback(&e.docker)
    );
    if engine.ipv4.is_none() {
        engine.ipv4 = Some(if no_ipv6 && engine.ok {
            crate::registry::reach::Answer::new(&v4, engine.reach, &engine.answer)
        } else {
            crate::registry::reach::ask(&e.docker, &v4).await
        });
    }
    let ok = engine.ok && ipv4_answers_in(&engine);
    NodeCheck { node: node.into(), ok, urls: Vec::new(), engine: Some(engine), explanation: None }
}

/// Whether dockerd reached the registry at `127.0.0.1:5000` in `engine`.
fn ipv4_answers_in(engine: &crate::registry::reach::EngineCheck) -> bool {
    engine.ipv4.as_ref().is_some_and(|a| a.reach == crate::registry::reach::Reach::Answers)
}

/// Whether dockerd on the node of `check` reaches the registry at `127.0.0.1:5000`: the
/// registry and its path there work, whatever `localhost` does.
fn ipv4_answers(check: &NodeCheck) -> bool {
    check.engine.as_ref().is_some_and(ipv4_answers_in)
}

/// Waits, at most `timeout`, until every node's dockerd reaches the registry at
/// `localhost:5000` and `127.0.0.1:5000` ([`engine_look`]); the error names the nodes that
/// never did and why.
///
/// It asks the engines' API only, which costs a few milliseconds a node where a command run
/// in each node (the seed's curl) cost a process each: curl runs only at the end of a wait
/// that failed, to say which URL fails where ([`check_all`], as `lab check` does). A node
/// where `127.0.0.1:5000` works and dockerd's `localhost` hangs, or where dockerd is refused
/// for want of a client certificate, fails at once: neither heals by waiting, and a hang
/// costs dockerd's own timeout (25 s on Docker 20.10) per question.
pub async fn wait_ready(rt: &dyn Nodes, timeout: Duration) -> Result<Vec<NodeCheck>> {
    let start = Instant::now();
    let nodes: Vec<String> = rt.desired().topology.nodes.iter().map(|n| n.name.clone()).collect();
    let what = format!("each node's dockerd to reach the registry at localhost:{PORT} and 127.0.0.1:{PORT}");
    // Until the registry's task runs, asking the nodes only loads a machine that is busy
    // starting it; a manager's task list is cheap to poll. Not running yet is not a failure
    // here: the checks below say what is wrong.
    if let Ok((mgr_name, mgr)) = rt.manager().await {
        let _ = Wait::new(mgr_name, "the registry's task to run", timeout)
            .every(Duration::from_millis(200))
            .holds("its task is not running yet", || task_running(&mgr))
            .await;
        tracing::debug!(elapsed = ?start.elapsed(), "the registry's task runs");
    }
    let waited = Wait::new(nodes.join(", "), what.clone(), timeout.saturating_sub(start.elapsed()))
        .every(Duration::from_millis(250))
        .poll(|| async {
            let checks = join_all(nodes.iter().map(|n| engine_look(rt, n))).await;
            if checks.iter().all(|c| c.ok) {
                return Look::Done(checks);
            }
            for c in checks.iter().filter(|c| !c.ok) {
                let answer = c.engine.as_ref().map(|e| e.answer.as_str()).or(c.explanation.as_deref());
                tracing::debug!(node = %c.node, elapsed = ?start.elapsed(), answer, "dockerd does not reach the registry yet");
            }
            let failing = || checks.iter().filter(|c| !c.ok).filter_map(|c| c.engine.as_ref().map(|e| (c, e)));
            let hangs = failing().any(|(c, e)| ipv4_answers(c) && e.reach == crate::registry::reach::Reach::Hangs);
            // A dockerd refused for want of a client certificate will not get one by waiting.
            let no_cert = failing().any(|(_, e)| crate::tls::engine_refused(&e.answer));
            if hangs || no_cert {
                return Look::Fail(engine_error(&checks));
            }
            // Where 127.0.0.1:5000 answers on every failing node, the registry and its paths
            // work, and what fails is dockerd's `localhost`: that is the error if it lasts.
            if checks.iter().filter(|c| !c.ok).all(|c| c.engine.is_some() && ipv4_answers(c)) {
                return Look::not_yet(NotReady::Engine(engine_error(&checks)));
            }
            Look::not_yet(NotReady::Registry)
        })
        .await;
    let timeout_error = match waited {
        Ok(checks) => return Ok(checks),
        Err(Error::Timeout { source: Some(last), .. }) if last.is::<NotReady>() => last,
        Err(e) => return Err(e),
    };
    match *timeout_error.downcast::<NotReady>().expect("checked above") {
        // 127.0.0.1:5000 works everywhere and dockerd's localhost still does not: that is the
        // error, as it would be had it failed at once.
        NotReady::Engine(e) => Err(e),
        NotReady::Registry => {
            // One detailed pass, curl included, to say which URL fails where and why.
            let checks = check_all(rt).await;
            if checks.iter().all(|c| c.ok) {
                return Ok(checks);
            }
            let bad: Vec<&NodeCheck> = checks.iter().filter(|c| !c.ok).collect();
            let names: Vec<&str> = bad.iter().map(|c| c.node.as_str()).collect();
            let why: Vec<String> =
                bad.iter().map(|c| format!("{}: {}", c.node, c.explanation.clone().unwrap_or_default())).collect();
            Err(Error::Timeout {
                node: names.join(", "),
                what,
                secs: timeout.as_secs(),
                hint: Some(why.join("; ")),
                source: None,
            })
        }
    }
}

/// Why [`wait_ready`] looks again.
#[derive(Debug, thiserror::Error)]
enum NotReady {
    /// Some node's dockerd does not reach the registry at `127.0.0.1:5000` yet.
    #[error("some node's dockerd does not reach the registry yet")]
    Registry,
    /// Every node's does at `127.0.0.1:5000`, and some node's not at `localhost:5000`.
    #[error(transparent)]
    Engine(Error),
}

/// The error for nodes where dockerd does not reach the registry at `localhost:5000` (while
/// curl, or dockerd itself at `127.0.0.1:5000`, gets there): names them, with each one's
/// explanation, and a hint where the cause is known (issue 8).
pub(crate) fn engine_error(checks: &[NodeCheck]) -> Error {
    let bad: Vec<(&str, &crate::registry::reach::EngineCheck, String)> = checks
        .iter()
        .filter_map(|c| {
            let e = c.engine.as_ref()?;
            Some((c.node.as_str(), e, e.explanation()?))
        })
        .collect();
    let names: Vec<&str> = bad.iter().map(|(n, _, _)| *n).collect();
    let message = match bad.as_slice() {
        [(_, _, why)] => why.clone(),
        _ => bad.iter().map(|(n, _, why)| format!("{n}: {why}")).collect::<Vec<_>>().join("; "),
    };
    let err = Error::node(names.join(", "), format!("ask the node's dockerd for localhost:{PORT}"), message);
    if bad.iter().any(|(_, e, _)| crate::tls::engine_refused(&e.answer)) {
        err.with_hint(crate::tls::ENGINE_HINT)
    } else if bad.iter().any(|(_, e, _)| e.ipv6_hangs()) {
        err.with_hint(format!(
            "dockerd dials ::1 first for localhost, and something on the node's [::1]:{PORT} accepts connections \
             and never answers (with the ingress routing mesh, dockerd's own listener before Docker 29.8: moby \
             issue 53091); docker push and pull to localhost:{PORT} fail there, while 127.0.0.1:{PORT} works. \
             With the mesh, `--registry-mode fallback` (or `auto`, which picks it on such engines) avoids it; \
             otherwise upgrade Docker on the node or free [::1]:{PORT}, and meanwhile tag images 127.0.0.1:{PORT}/..."
        ))
    } else {
        err
    }
}

/// Why the service is not serving, if it is not: missing, or its task not running (with the
/// task's own error, e.g. an image the node does not have).
pub(crate) async fn diagnose_service(rt: &dyn Nodes) -> Option<String> {
    let (_, mgr) = match rt.manager().await {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if mgr.inspect_service(SERVICE, None::<InspectServiceOptions>).await.is_err() {
        return Some(format!("service {SERVICE} does not exist (run lab up)"));
    }
    if task_running(&mgr).await {
        return None;
    }
    // Every task, not only those meant to run: a task that failed ("bind: address already in
    // use") is shut down and replaced, and its error is the one worth quoting.
    let filters = HashMap::from([("service", vec![SERVICE])]);
    let mut tasks = mgr.list_tasks(Some(ListTasksOptionsBuilder::new().filters(&filters).build())).await.ok()?;
    tasks.sort_by_key(|t| std::cmp::Reverse(t.updated_at.clone().unwrap_or_default()));
    let with_error =
        tasks.iter().filter_map(|t| t.status.as_ref()).find(|s| s.err.as_deref().is_some_and(|e| !e.is_empty()));
    let latest = tasks.iter().filter_map(|t| t.status.as_ref()).next();
    let detail = match (with_error, latest) {
        (Some(s), _) => {
            format!("{}: {}", s.state.map(|st| st.to_string()).unwrap_or_default(), s.err.clone().unwrap_or_default())
        }
        (None, Some(s)) => format!(
            "{}: {}",
            s.state.map(|st| st.to_string()).unwrap_or_default(),
            s.message.clone().unwrap_or_default()
        ),
        (None, None) => "the swarm scheduled no task for it (docker service ps registry_registry shows none)".into(),
    };
    Some(format!("the registry task is not running ({detail})"))
}

pub(crate) async fn explain_node(rt: &dyn Nodes, node: &str, service: Option<&str>) -> String {
    if let Some(s) = service {
        return s.to_string();
    }
    let Ok(e) = rt.engine(node).await else { return "its Docker engine does not answer".into() };
    if e.docker.inspect_image(&rt.desired().registry_image).await.is_err() {
        return format!("image {} is missing on this node (run lab up)", rt.desired().registry_image);
    }
    let reg = &rt.desired().topology.registry_node().name;
    if rt.desired().tls == RegistryTls::Mutual {
        return match observe_forwarder(&e.docker).await {
            None => format!("the relay container {FORWARDER} is not running (run lab up)"),
            Some(t) => format!(
                "the relay points at {t}, which does not answer with the registry (`docker logs {FORWARDER}` on \
                 {node} says why)"
            ),
        };
    }
    match rt.state().registry_mode {
        Some(RegistryMode::Mesh) => match has_ipvs(rt, node).await {
            Ok(false) => "no IPVS in this node's kernel, so the ingress routing mesh cannot answer; \
                          use --registry-mode fallback"
                .into(),
            _ => "the ingress routing mesh does not answer on this node".into(),
        },
        Some(RegistryMode::Fallback) if node != reg => match observe_forwarder(&e.docker).await {
            None => format!("the forwarder container {FORWARDER} is not running (run lab up)"),
            Some(t) => format!("the forwarder relays to {t}, which does not answer with the registry"),
        },
        Some(RegistryMode::Fallback) => {
            format!("the registry runs here ({REGISTRY_NODE_LABEL}) but its host-mode port does not answer yet")
        }
        None => "no registry mode recorded (run lab up)".into(),
    }
}
