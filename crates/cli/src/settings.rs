//! Configuration layers, lowest first: built-in defaults, what lab recorded for an existing
//! cluster, `lab.toml` (or `--config`), `LAB_*` environment variables (`__` separates
//! levels: `LAB_DRIVERS__DOCKER__NODE_IMAGE`), command-line flags. Unknown keys are errors.
//! Every error is bad input (exit 2) naming the file or variable, the field and the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use lab_core::state::{ClusterState, RegistryMode, RegistryTls};
use lab_core::topology::validate_label;
use lab_core::{ClusterName, Error, Result, Role};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::args::{ModeArg, TopologyArgs};

/// The default configuration file, read from the current directory if it exists.
pub const CONFIG_FILE: &str = "lab.toml";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    pub image: String,
    pub mode: Mode,
    /// Who may talk to the registry: `open` (anyone who reaches port 5000, as the seed) or
    /// `mutual` (only clients with a certificate from the cluster's CA).
    #[serde(default)]
    pub tls: RegistryTls,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Auto,
    Mesh,
    Fallback,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LabelSettings {
    pub manager: BTreeMap<String, String>,
    pub worker: BTreeMap<String, String>,
}

/// Everything configurable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub cluster: String,
    pub driver: String,
    pub managers: u32,
    pub workers: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<PathBuf>,
    pub registry: RegistrySettings,
    #[serde(default)]
    pub labels: LabelSettings,
    #[serde(default)]
    pub drivers: BTreeMap<String, Value>,
}

/// The registry image of a new cluster: distribution v3, the maintained line (`registry:latest`
/// on Docker Hub). A cluster keeps the image it was made with (the recorded state sits above
/// this default), so changing it never redeploys an existing registry. README, "Which registry
/// image".
pub const DEFAULT_REGISTRY_IMAGE: &str = "registry:3";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: "lab".into(),
            driver: "docker".into(),
            managers: 1,
            workers: 2,
            hosts: None,
            registry: RegistrySettings {
                image: DEFAULT_REGISTRY_IMAGE.into(),
                mode: Mode::Auto,
                tls: RegistryTls::Open,
            },
            labels: LabelSettings::default(),
            drivers: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// The validated cluster name.
    pub fn cluster_name(&self, source: &str) -> Result<ClusterName> {
        ClusterName::parse(&self.cluster, source)
    }

    /// The registry mode request.
    pub fn mode_request(&self) -> lab_core::plan::ModeRequest {
        use lab_core::plan::ModeRequest;
        match self.registry.mode {
            Mode::Auto => ModeRequest::Auto,
            Mode::Mesh => ModeRequest::Force(RegistryMode::Mesh),
            Mode::Fallback => ModeRequest::Force(RegistryMode::Fallback),
        }
    }

    /// Records in `st` the settings that shape the cluster and that `runtime` does not record
    /// itself (it records the counts and the driver table), so a later command given only
    /// `--cluster` wants the same cluster.
    pub fn record(&self, st: &mut ClusterState) {
        st.registry_image = self.registry.image.clone();
        st.registry_mode_request = match self.registry.mode {
            Mode::Auto => None,
            Mode::Mesh => Some(RegistryMode::Mesh),
            Mode::Fallback => Some(RegistryMode::Fallback),
        };
        st.registry_tls = self.registry.tls;
        st.manager_labels = self.labels.manager.clone();
        st.worker_labels = self.labels.worker.clone();
    }

    /// Labels by role, validated.
    pub fn role_labels(&self, role: Role) -> Result<&BTreeMap<String, String>> {
        let (what, labels) = match role {
            Role::Manager => ("labels.manager", &self.labels.manager),
            Role::Worker => ("labels.worker", &self.labels.worker),
        };
        for (k, v) in labels {
            validate_label(what, k, v)?;
        }
        Ok(labels)
    }
}

/// Where the driver's table came from, for its error messages: the layers [`load`] found
/// giving it keys (see [`driver_layers`]), else the file.
pub fn driver_source() -> String {
    let found = DRIVER_SOURCE.lock().ok().and_then(|s| s.clone());
    found.unwrap_or_else(|| CONFIG_PATH.get().cloned().unwrap_or_else(|| CONFIG_FILE.into()))
}

static CONFIG_PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static DRIVER_SOURCE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The layers that gave keys to `driver`'s table, as the user wrote them: the file, each
/// `LAB_DRIVERS__<DRIVER>__*` variable, each of the driver's flags, `--driver-opt`. So a typo
/// is named where it is, not in a file that may not exist (issue 18, item 19). `None` when no
/// layer did (the table is the cluster's record, or a top-level `hosts`).
fn driver_layers(config: Option<&Path>, driver: &str, flags: &TopologyArgs, opts: bool) -> Option<String> {
    let mut from = Vec::new();
    if file_layer(Figment::new(), config).find_value(&format!("drivers.{driver}")).is_ok() {
        from.push(config.map(|p| p.display().to_string()).unwrap_or_else(|| CONFIG_FILE.into()));
    }
    let prefix = format!("LAB_DRIVERS__{}__", driver.to_uppercase());
    let mut vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.to_uppercase().starts_with(&prefix))
        .collect();
    vars.sort();
    from.extend(vars);
    from.extend(
        flags.driver_flags.iter().filter(|f| f.drivers.iter().any(|(d, _)| d == driver)).map(|f| f.flag.clone()),
    );
    if opts {
        from.push("--driver-opt".into());
    }
    (!from.is_empty()).then(|| from.join(" or "))
}

/// The flag layer: only flags that were given.
fn flag_layer(flags: &TopologyArgs) -> Result<Value> {
    let mut m = Map::new();
    if let Some(c) = &flags.cluster.cluster {
        m.insert("cluster".into(), json!(c));
    }
    if let Some(d) = &flags.driver {
        m.insert("driver".into(), json!(d));
    }
    if let Some(n) = flags.managers {
        m.insert("managers".into(), json!(n));
    }
    if let Some(n) = flags.workers {
        m.insert("workers".into(), json!(n));
    }
    let mut registry = Map::new();
    if let Some(i) = &flags.registry_image {
        registry.insert("image".into(), json!(i));
    }
    if let Some(mode) = flags.registry_mode {
        let s = match mode {
            ModeArg::Auto => "auto",
            ModeArg::Mesh => "mesh",
            ModeArg::Fallback => "fallback",
        };
        registry.insert("mode".into(), json!(s));
    }
    if let Some(tls) = flags.registry_tls {
        let s = match tls {
            crate::args::TlsArg::Open => "open",
            crate::args::TlsArg::Mutual => "mutual",
        };
        registry.insert("tls".into(), json!(s));
    }
    if !registry.is_empty() {
        m.insert("registry".into(), Value::Object(registry));
    }
    let mut labels = Map::new();
    for (key, list) in [("worker", &flags.worker_labels), ("manager", &flags.manager_labels)] {
        if list.is_empty() {
            continue;
        }
        let mut l = Map::new();
        for kv in list {
            let flag = format!("--{key}-label");
            let (k, v) = kv.split_once('=').ok_or_else(|| Error::input(&flag, format!("{kv:?} is not KEY=VALUE")))?;
            validate_label(&flag, k, v)?;
            l.insert(k.into(), json!(v));
        }
        labels.insert(key.into(), Value::Object(l));
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    let mut drivers = Map::new();
    let mut set = |driver: &str, path: &[&str], v: Value| {
        let mut cur = drivers.entry(driver.to_string()).or_insert_with(|| json!({}));
        for key in &path[..path.len() - 1] {
            cur = cur.as_object_mut().expect("tables").entry(key.to_string()).or_insert_with(|| json!({}));
            if !cur.is_object() {
                *cur = json!({});
            }
        }
        cur.as_object_mut().expect("tables").insert(path[path.len() - 1].to_string(), v);
    };
    if !flags.driver_opts.is_empty() {
        // --driver-opt applies to the driver chosen by flag, or else by the lower layers;
        // the caller moves this table there (see `load`).
        for opt in &flags.driver_opts {
            let (k, v) = opt
                .split_once('=')
                .filter(|(k, _)| !k.is_empty() && k.split('.').all(|p| !p.is_empty()))
                .ok_or_else(|| Error::input("--driver-opt", format!("{opt:?} is not KEY=VALUE")))?;
            let value = toml_scalar(v);
            let path: Vec<&str> = k.split('.').collect();
            set(DRIVER_OPTS, &path, value);
        }
    }
    if !drivers.is_empty() {
        m.insert("drivers".into(), Value::Object(drivers));
    }
    Ok(Value::Object(m))
}

/// Placeholder table name for `--driver-opt` values until the driver is known.
const DRIVER_OPTS: &str = "\u{0}driver-opt";

/// A `--driver-opt` value: TOML if it parses as a TOML value, else the string itself.
fn toml_scalar(v: &str) -> Value {
    toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| json!(v))
}

/// The layer made from a cluster's recorded state: everything that shapes the cluster.
fn state_layer(st: &ClusterState) -> Value {
    let mut drivers = Map::new();
    drivers.insert(st.driver.clone(), st.driver_config.clone());
    json!({
        "driver": st.driver,
        "managers": st.managers,
        "workers": st.workers,
        "registry": {
            "image": st.registry_image,
            "mode": st.registry_mode_request.map(|m| m.to_string()).unwrap_or_else(|| "auto".into()),
            "tls": st.registry_tls.to_string(),
        },
        "labels": { "manager": st.manager_labels, "worker": st.worker_labels },
        "drivers": drivers,
    })
}

fn base(config: Option<&Path>) -> Result<Figment> {
    if let Some(p) = config {
        let _ = CONFIG_PATH.set(p.display().to_string());
    }
    let mut fig = Figment::from(Serialized::defaults(Settings::default()));
    match config {
        Some(path) => {
            if !path.is_file() {
                return Err(Error::input("--config", format!("no such file: {}", path.display())));
            }
            fig = fig.merge(Toml::file(path));
        }
        None => {
            if Path::new(CONFIG_FILE).is_file() {
                fig = fig.merge(Toml::file(CONFIG_FILE));
            }
        }
    }
    Ok(fig)
}

fn env() -> Env {
    Env::prefixed("LAB_").split("__")
}

fn extract(fig: Figment) -> Result<Settings> {
    fig.extract::<Settings>().map_err(render_figment)
}

/// The file layer alone, if there is a file.
fn file_layer(fig: Figment, config: Option<&Path>) -> Figment {
    match config {
        Some(p) => fig.merge(Toml::file(p)),
        None if Path::new(CONFIG_FILE).is_file() => fig.merge(Toml::file(CONFIG_FILE)),
        None => fig,
    }
}

/// Loads settings. `recorded` gives an existing cluster's state, which sits between the
/// built-in defaults and the user's layers.
///
/// For an existing cluster: the driver cannot change; a role's labels given by any user
/// layer replace the recorded ones for that role (so a label can be dropped by giving the
/// role's labels again, or `[labels] worker = {}`); `--driver-opt` goes to the cluster's
/// driver; and a flag of another driver than the cluster's is bad input.
pub fn load(
    config: Option<&Path>,
    flags: &TopologyArgs,
    recorded: impl FnOnce(&ClusterName) -> Result<Option<ClusterState>>,
) -> Result<(Settings, Option<ClusterState>)> {
    let mut flag_values = flag_layer(flags)?;
    let opts = flag_values.get_mut("drivers").and_then(|d| d.as_object_mut()).and_then(|d| d.remove(DRIVER_OPTS));
    let user = |fig: Figment| fig.merge(env()).merge(Serialized::globals(flag_values.clone()));
    // The cluster name decides which recorded state applies, so it is read first.
    let first = extract(user(base(config)?))?;
    let cluster = first.cluster_name(&cluster_source(config, &flag_values))?;
    let state = recorded(&cluster)?;
    let mut settings = match &state {
        Some(st) => {
            let fig =
                Figment::from(Serialized::defaults(Settings::default())).merge(Serialized::defaults(state_layer(st)));
            let mut s = extract(user(file_layer(fig, config)))?;
            if s.driver != st.driver {
                return Err(Error::input(
                    source_of("driver", config, &flag_values),
                    format!(
                        "cluster {cluster} was made with driver {:?}, not {:?}; run `lab down --cluster {cluster}` first, or use another --cluster",
                        st.driver, s.driver
                    ),
                ));
            }
            // Maps merge key by key across layers; labels the user gives for a role are the
            // whole set for that role, not additions to what was recorded.
            let mine = user(file_layer(Figment::new(), config));
            for (role, slot) in [("manager", &mut s.labels.manager), ("worker", &mut s.labels.worker)] {
                let key = format!("labels.{role}");
                if mine.find_value(&key).is_ok() {
                    *slot = mine.extract_inner(&key).map_err(render_figment)?;
                }
            }
            s
        }
        None => first,
    };
    // The flags the drivers declare go to the cluster's driver's table, above every other
    // layer; given for a cluster of another driver, they would be silently ignored, so they
    // are bad input instead.
    for f in &flags.driver_flags {
        let Some((_, key)) = f.drivers.iter().find(|(d, _)| *d == settings.driver) else {
            let how = if state.is_some() { "uses" } else { "would use (give --driver to choose another)" };
            let owners: Vec<&str> = f.drivers.iter().map(|(d, _)| d.as_str()).collect();
            return Err(Error::input(
                &f.flag,
                format!(
                    "is an option of the {} driver, but cluster {cluster} {how} the {} driver",
                    owners.join(", "),
                    settings.driver
                ),
            ));
        };
        let table = settings.drivers.entry(settings.driver.clone()).or_insert_with(|| json!({}));
        if !table.is_object() {
            *table = json!({});
        }
        table.as_object_mut().expect("made an object above").insert(key.clone(), f.value.clone());
    }
    *DRIVER_SOURCE.lock().unwrap_or_else(|e| e.into_inner()) =
        driver_layers(config, &settings.driver, flags, opts.is_some());
    if let Some(opts) = opts {
        // `--driver-opt` applies to the cluster's driver, whichever layer chose it.
        let table = settings.drivers.entry(settings.driver.clone()).or_insert_with(|| json!({}));
        if !table.is_object() {
            *table = json!({});
        }
        merge_json(table, opts);
    }
    Ok((settings, state))
}

fn merge_json(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge_json(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Just the cluster name, for commands that act on an existing cluster.
pub fn cluster_only(config: Option<&Path>, flag: Option<&str>) -> Result<ClusterName> {
    let mut flags = Map::new();
    if let Some(c) = flag {
        flags.insert("cluster".into(), json!(c));
    }
    let flags = Value::Object(flags);
    let s = extract(base(config)?.merge(env()).merge(Serialized::globals(flags.clone())))?;
    s.cluster_name(&cluster_source(config, &flags))
}

fn cluster_source(config: Option<&Path>, flags: &Value) -> String {
    source_of("cluster", config, flags)
}

/// Which layer gave the top-level `key`: its flag, its variable, else the file.
fn source_of(key: &str, config: Option<&Path>, flags: &Value) -> String {
    let var = format!("LAB_{}", key.to_uppercase());
    if flags.get(key).is_some() {
        format!("--{key}")
    } else if std::env::var_os(&var).is_some() {
        var
    } else {
        format!("{}: {key}", config.map(|p| p.display().to_string()).unwrap_or_else(|| CONFIG_FILE.into()))
    }
}

/// Renders a figment error as one line: where (file and field, or variable), and what.
fn render_figment(e: figment::Error) -> Error {
    let e = e.into_iter().next().expect("a figment error has at least one cause");
    // For an unknown key the path ends with the key itself; the message names it, so the
    // place is its table.
    let mut path = e.path.clone();
    if matches!(e.kind, figment::error::Kind::UnknownField(..)) {
        path.pop();
    }
    let from_env = e.metadata.as_ref().is_some_and(|md| md.name.contains("environment"));
    let message = match &e.kind {
        figment::error::Kind::UnknownField(key, expected) => {
            let spell = |k: &str| {
                if from_env {
                    let mut p = path.clone();
                    p.push(k.to_string());
                    format!("LAB_{}", p.join("__").to_uppercase())
                } else {
                    k.to_string()
                }
            };
            let what = if from_env { "variable" } else { "key" };
            unknown(what, &spell(key), &expected.iter().map(|k| spell(k)).collect::<Vec<_>>())
        }
        figment::error::Kind::UnknownVariant(value, expected) => {
            unknown("value", value, &expected.iter().map(|k| k.to_string()).collect::<Vec<_>>())
        }
        kind => kind.to_string(),
    };
    let source = match &e.metadata {
        Some(md) => match &md.source {
            Some(figment::Source::File(p)) => p.display().to_string(),
            _ if from_env => {
                let var = format!("LAB_{}", e.path.join("__").to_uppercase());
                return Error::input(var, message);
            }
            _ if md.name.contains("Serialized") => "flags".into(),
            _ => md.name.to_string(),
        },
        None => "configuration".into(),
    };
    let path = path.join(".");
    let what = if path.is_empty() { source } else { format!("{source}: {path}") };
    Error::input(what, message)
}

/// "unknown key `worker` (did you mean `workers`?)", or with the valid choices listed when
/// none is near, as clap does for flags.
fn unknown(what: &str, found: &str, expected: &[String]) -> String {
    let nearest = expected
        .iter()
        .map(|k| (edit_distance(&found.to_lowercase(), &k.to_lowercase()), k))
        .filter(|(d, k)| *d <= 2 && d * 2 < k.chars().count())
        .min_by_key(|(d, _)| *d);
    match nearest {
        Some((_, k)) => format!("unknown {what} `{found}` (did you mean `{k}`?)"),
        None if expected.is_empty() => format!("unknown {what} `{found}`"),
        None => format!(
            "unknown {what} `{found}`; expected one of {}",
            expected.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Edit distance counting an insertion, a deletion, a substitution or a swap of two
/// neighbouring characters as one edit (so `imgae` is one edit from `image`).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
// figment's `Jail` closures return its own large error type; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    /// A driver flag as the command line gives it.
    fn df(flag: &str, driver: &str, key: &str, value: Value) -> Vec<crate::args::DriverFlag> {
        vec![crate::args::DriverFlag {
            flag: format!("--{flag}"),
            drivers: vec![(driver.to_string(), key.to_string())],
            value,
        }]
    }

    fn load_in_jail(flags: TopologyArgs) -> std::result::Result<Settings, Error> {
        load(None, &flags, |_| Ok(None)).map(|(s, _)| s)
    }

    #[test]
    fn layers_in_order() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "lab.toml",
                "workers = 3\nmanagers = 3\n[registry]\nimage = \"file:1\"\n[drivers.docker]\nnode_image = \"from-file\"\n",
            )?;
            jail.set_env("LAB_WORKERS", "4");
            jail.set_env("LAB_DRIVERS__DOCKER__NODE_IMAGE", "from-env");
            let s = load_in_jail(TopologyArgs { workers: Some(5), ..Default::default() }).unwrap();
            assert_eq!(s.workers, 5, "flag beats env");
            assert_eq!(s.managers, 3, "file beats default, unset flag leaves it");
            assert_eq!(s.registry.image, "file:1");
            assert_eq!(s.registry.mode, Mode::Auto, "default survives a partial table");
            assert_eq!(s.drivers["docker"]["node_image"], "from-env", "env beats file");
            let s = load_in_jail(TopologyArgs {
                driver_opts: vec!["privileged=\"never\"".into(), "nested.memory=8192".into(), "name=plain".into()],
                ..Default::default()
            })
            .unwrap();
            assert_eq!(s.drivers["docker"]["privileged"], "never");
            assert_eq!(s.drivers["docker"]["nested"]["memory"], 8192);
            assert_eq!(s.drivers["docker"]["name"], "plain");
            assert_eq!(s.drivers["docker"]["node_image"], "from-env", "driver-opt keeps other keys");
            let s = load_in_jail(TopologyArgs {
                driver_flags: df("node-image", "docker", "node_image", json!("flag")),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(s.drivers["docker"]["node_image"], "flag");
            assert_eq!(s.workers, 4);
            Ok(())
        });
    }

    #[test]
    fn recorded_state_sits_under_user_layers() {
        Jail::expect_with(|_jail| {
            let st: ClusterState = serde_json::from_value(json!({
                "version": 1, "cluster": "lab", "driver": "docker",
                "driver_config": {"node_image": "recorded"}, "managers": 1, "workers": 6,
                "registry_image": "rec:2", "registry_mode": null, "registry_secret": "x",
                "swarm": null, "nodes": {}, "completed": []
            }))
            .unwrap();
            let (s, _) =
                load(None, &TopologyArgs { workers: Some(1), ..Default::default() }, |_| Ok(Some(st.clone()))).unwrap();
            assert_eq!(s.workers, 1);
            assert_eq!(s.registry.image, "rec:2");
            assert_eq!(s.drivers["docker"]["node_image"], "recorded");
            Ok(())
        });
    }

    /// A new cluster gets registry:3; one made when the default was registry:2 keeps it.
    #[test]
    fn new_clusters_get_registry_3_and_old_ones_keep_their_image() {
        Jail::expect_with(|_jail| {
            let (s, _) = load(None, &TopologyArgs::default(), |_| Ok(None)).unwrap();
            assert_eq!(s.registry.image, "registry:3");
            let st = recorded("docker", json!({"registry_image": "registry:2"}));
            assert_eq!(load_recorded(only_cluster(), &st).unwrap().registry.image, "registry:2");
            Ok(())
        });
    }

    fn recorded(driver: &str, extra: Value) -> ClusterState {
        let mut v = json!({
            "version": 1, "cluster": "lab", "driver": driver,
            "driver_config": {}, "managers": 1, "workers": 3,
            "registry_image": "rec:2", "registry_mode": "fallback", "registry_secret": "x",
            "swarm": null, "nodes": {}, "completed": []
        });
        merge_json(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn load_recorded(flags: TopologyArgs, st: &ClusterState) -> std::result::Result<Settings, Error> {
        load(None, &flags, |_| Ok(Some(st.clone()))).map(|(s, _)| s)
    }

    fn only_cluster() -> TopologyArgs {
        TopologyArgs { cluster: crate::args::ClusterArg { cluster: Some("lab".into()) }, ..Default::default() }
    }

    /// Issue 7, item 3: a plain `up`/`plan` with only `--cluster` wants what the cluster was
    /// made with, labels and registry mode request included.
    #[test]
    fn plain_load_keeps_every_recorded_setting() {
        Jail::expect_with(|_jail| {
            let st = recorded(
                "docker",
                json!({
                    "driver_config": {"node_image": "rec-node", "privileged": "never"},
                    "worker_labels": {"tier": "gpu"},
                    "manager_labels": {"zone": "a"},
                    "registry_mode_request": "mesh",
                }),
            );
            let s = load_recorded(only_cluster(), &st).unwrap();
            assert_eq!(s.workers, 3);
            assert_eq!(s.managers, 1);
            assert_eq!(s.registry.image, "rec:2");
            assert_eq!(s.registry.mode, Mode::Mesh, "the recorded request, not the default");
            assert_eq!(s.labels.worker, BTreeMap::from([("tier".to_string(), "gpu".to_string())]));
            assert_eq!(s.labels.manager, BTreeMap::from([("zone".to_string(), "a".to_string())]));
            assert_eq!(s.drivers["docker"], json!({"node_image": "rec-node", "privileged": "never"}));
            Ok(())
        });
    }

    /// Issue 7, item 3: what `up` records (`Settings::record`, plus the counts and driver
    /// table `runtime` records) loads back, with only `--cluster`, as the settings `up` used.
    #[test]
    fn recorded_settings_round_trip() {
        Jail::expect_with(|_jail| {
            let flags = TopologyArgs {
                workers: Some(4),
                registry_image: Some("img:3".into()),
                registry_mode: Some(crate::args::ModeArg::Fallback),
                registry_tls: Some(crate::args::TlsArg::Mutual),
                driver_flags: df("node-image", "docker", "node_image", json!("node:1")),
                driver_opts: vec!["privileged=\"never\"".into()],
                worker_labels: vec!["tier=gpu".into()],
                manager_labels: vec!["zone=a".into()],
                ..only_cluster()
            };
            let first = load_in_jail(flags).unwrap();
            let mut st = recorded("docker", json!({}));
            st.managers = first.managers;
            st.workers = first.workers;
            st.driver_config = first.drivers["docker"].clone();
            first.record(&mut st);
            let again = load_recorded(only_cluster(), &st).unwrap();
            assert_eq!(again, first);
            assert_eq!(again.registry.tls, RegistryTls::Mutual);
            Ok(())
        });
    }

    /// Labels given again for a role replace that role's recorded labels (the issue is
    /// silent; this is how a label is dropped), and leave the other role's alone.
    #[test]
    fn labels_given_again_replace_the_recorded_set() {
        Jail::expect_with(|jail| {
            let st = recorded("docker", json!({"worker_labels": {"tier": "gpu"}, "manager_labels": {"zone": "a"}}));
            let s =
                load_recorded(TopologyArgs { worker_labels: vec!["disk=ssd".into()], ..only_cluster() }, &st).unwrap();
            assert_eq!(s.labels.worker, BTreeMap::from([("disk".to_string(), "ssd".to_string())]));
            assert_eq!(s.labels.manager, BTreeMap::from([("zone".to_string(), "a".to_string())]));
            jail.create_file("lab.toml", "[labels]\nworker = {}\n")?;
            let s = load_recorded(only_cluster(), &st).unwrap();
            assert!(s.labels.worker.is_empty(), "{:?}", s.labels);
            assert_eq!(s.labels.manager.len(), 1);
            Ok(())
        });
    }

    /// Issue 7, item 3: `--driver-opt` without `--driver` applies to the cluster's recorded
    /// driver, not to the default driver's table.
    #[test]
    fn driver_opt_applies_to_the_recorded_driver() {
        Jail::expect_with(|_jail| {
            let st = recorded("virtualbox", json!({"driver_config": {"memory": 1024}}));
            let flags = TopologyArgs { driver_opts: vec!["memory=4096".into(), "cpus=2".into()], ..only_cluster() };
            let s = load_recorded(flags, &st).unwrap();
            assert_eq!(s.driver, "virtualbox");
            assert_eq!(s.drivers["virtualbox"], json!({"memory": 4096, "cpus": 2}));
            assert!(!s.drivers.contains_key("docker"), "{:?}", s.drivers);
            Ok(())
        });
    }

    /// Issue 7, item 3: a flag of another driver than the cluster's is bad input naming the
    /// flag and the driver, for a recorded cluster and for a new one.
    #[test]
    fn flags_of_another_driver_are_bad_input() {
        Jail::expect_with(|_jail| {
            let docker = recorded("docker", json!({}));
            let ssh = recorded("ssh", json!({"driver_config": {"hosts": "/h.toml"}}));
            let cases: Vec<(TopologyArgs, &ClusterState, &str, &str)> = vec![
                (
                    TopologyArgs { driver_flags: df("hosts", "ssh", "hosts", json!("/h.toml")), ..only_cluster() },
                    &docker,
                    "--hosts",
                    "docker",
                ),
                (
                    TopologyArgs {
                        driver_flags: df("known-hosts", "ssh", "known_hosts", json!("/k")),
                        ..only_cluster()
                    },
                    &docker,
                    "--known-hosts",
                    "docker",
                ),
                (
                    TopologyArgs {
                        driver_flags: df("host-key-policy", "ssh", "host_key_policy", json!("strict")),
                        ..only_cluster()
                    },
                    &docker,
                    "--host-key-policy",
                    "docker",
                ),
                (
                    TopologyArgs {
                        driver_flags: df("node-image", "docker", "node_image", json!("img")),
                        ..only_cluster()
                    },
                    &ssh,
                    "--node-image",
                    "ssh",
                ),
            ];
            for (flags, st, flag, driver) in cases {
                let e = load_recorded(flags, st).unwrap_err();
                assert_eq!(e.exit_code(), 2, "{e}");
                let msg = e.to_string();
                assert!(msg.starts_with(flag) && msg.contains(driver), "{msg}");
            }
            // A new cluster: the driver is the default one.
            let e = load_in_jail(TopologyArgs {
                driver_flags: df("hosts", "ssh", "hosts", json!("/h.toml")),
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().starts_with("--hosts") && e.to_string().contains("docker"), "{e}");
            Ok(())
        });
    }

    /// Issue 7, item 3: an existing cluster keeps its driver.
    #[test]
    fn changing_a_clusters_driver_is_bad_input() {
        Jail::expect_with(|jail| {
            let st = recorded("docker", json!({}));
            let e =
                load_recorded(TopologyArgs { driver: Some("virtualbox".into()), ..only_cluster() }, &st).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().starts_with("--driver") && e.to_string().contains("\"docker\""), "{e}");
            jail.set_env("LAB_DRIVER", "virtualbox");
            let e = load_recorded(only_cluster(), &st).unwrap_err();
            assert!(e.to_string().starts_with("LAB_DRIVER"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn errors_name_file_field_and_value() {
        Jail::expect_with(|jail| {
            jail.create_file("lab.toml", "wrokers = 3\n")?;
            let e = load_in_jail(TopologyArgs::default()).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(msg.contains("lab.toml") && msg.contains("wrokers"), "{msg}");

            jail.create_file("lab.toml", "workers = \"many\"\n")?;
            let msg = load_in_jail(TopologyArgs::default()).unwrap_err().to_string();
            assert!(msg.contains("lab.toml: workers") && msg.contains("many"), "{msg}");

            jail.create_file("lab.toml", "[registry]\nmode = \"magic\"\n")?;
            let msg = load_in_jail(TopologyArgs::default()).unwrap_err().to_string();
            assert!(msg.contains("registry.mode") && msg.contains("magic"), "{msg}");

            jail.create_file("lab.toml", "[registry]\ntls = \"closed\"\n")?;
            let e = load_in_jail(TopologyArgs::default()).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            let msg = e.to_string();
            assert!(msg.contains("lab.toml") && msg.contains("registry.tls") && msg.contains("closed"), "{msg}");

            jail.create_file("lab.toml", "")?;
            jail.set_env("LAB_WORKERS", "lots");
            let msg = load_in_jail(TopologyArgs::default()).unwrap_err().to_string();
            assert!(msg.contains("LAB_WORKERS") && msg.contains("lots"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn bad_cluster_and_labels() {
        Jail::expect_with(|_| {
            let e = load_in_jail(TopologyArgs {
                cluster: crate::args::ClusterArg { cluster: Some("Bad Name".into()) },
                ..Default::default()
            })
            .unwrap_err();
            assert!(e.to_string().starts_with("--cluster: invalid cluster name \"Bad Name\""), "{e}");
            let e =
                load_in_jail(TopologyArgs { worker_labels: vec!["novalue".into()], ..Default::default() }).unwrap_err();
            assert!(e.to_string().starts_with("--worker-label"), "{e}");
            Ok(())
        });
    }
}
