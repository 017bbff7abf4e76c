//! Configuration layers, lowest first: built-in defaults, what lab recorded for an existing
//! cluster, `lab.toml` (or `--config`), `LAB_*` environment variables (`__` separates
//! levels: `LAB_DRIVERS__DOCKER__NODE_IMAGE`), command-line flags. Unknown keys are errors.
//! Every error is bad input (exit 2) naming the file or variable, the field and the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use lab_core::state::{ClusterState, RegistryMode, RegistryTls};
use lab_core::topology::{validate_label, Availability};
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
    #[serde(default)]
    pub manager_availability: Availability,
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
            manager_availability: Availability::Drain,
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
    pub fn mode_request(&self) -> lab_core::cluster::ModeRequest {
        use lab_core::cluster::ModeRequest;
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
        st.manager_availability = self.manager_availability;
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
    if let Some(a) = flags.manager_availability {
        let a = match a {
            crate::args::AvailabilityArg::Drain => Availability::Drain,
            crate::args::AvailabilityArg::Active => Availability::Active,
        };
        m.insert("manager_availability".into(), json!(a));
    }
    for (key, table) in
        [("registry", registry_flags(flags)), ("labels", label_flags(flags)?), ("drivers", driver_opts(flags)?)]
    {
        if !table.is_empty() {
            m.insert(key.into(), Value::Object(table));
        }
    }
    Ok(Value::Object(m))
}

/// The `[registry]` table of the flag layer: `--registry-image`, `--registry-mode`, `--registry-tls`.
fn registry_flags(flags: &TopologyArgs) -> Map<String, Value> {
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
    registry
}

/// The `[labels]` table of the flag layer: `--worker-label` and `--manager-label`, each KEY=VALUE.
fn label_flags(flags: &TopologyArgs) -> Result<Map<String, Value>> {
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
    Ok(labels)
}

/// The `[drivers]` table of the flag layer: each `--driver-opt KEY=VALUE`, a dotted KEY making
/// nested tables.
fn driver_opts(flags: &TopologyArgs) -> Result<Map<String, Value>> {
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
    // --driver-opt applies to the driver chosen by flag, or else by the lower layers; the
    // caller moves this table there (see `load`).
    for opt in &flags.driver_opts {
        let (k, v) = opt
            .split_once('=')
            .filter(|(k, _)| !k.is_empty() && k.split('.').all(|p| !p.is_empty()))
            .ok_or_else(|| Error::input("--driver-opt", format!("{opt:?} is not KEY=VALUE")))?;
        let value = toml_scalar(v);
        let path: Vec<&str> = k.split('.').collect();
        set(DRIVER_OPTS, &path, value);
    }
    Ok(drivers)
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
        "manager_availability": st.manager_availability,
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

/// What [`load`] found.
#[derive(Debug)]
pub struct Loaded {
    /// The settings, normalised as they are recorded ([`normalise`]).
    pub settings: Settings,
    /// The cluster's recorded state, if it exists.
    pub recorded: Option<ClusterState>,
    /// One line for each setting of a configuration file that was ignored because the file
    /// does not name the existing cluster and the setting would change how the cluster is
    /// reached or secured ([`reaches_or_secures`]).
    pub warnings: Vec<String>,
    /// For an existing cluster: how these settings change the way it is reached or secured,
    /// one `key: old -> new` each, for `lab plan` to show before `lab up` records them.
    pub changes: Vec<String>,
}

/// Loads settings. `recorded` gives an existing cluster's state, which sits between the
/// built-in defaults and the user's layers.
///
/// For an existing cluster: the driver cannot change; a role's labels given by any user
/// layer replace the recorded ones for that role (so a label can be dropped by giving the
/// role's labels again, or `[labels] worker = {}`); `--driver-opt` goes to the cluster's
/// driver; a flag of another driver than the cluster's is bad input; and a setting that
/// changes how the cluster is reached or secured is taken from a configuration file only if
/// the file speaks for the cluster ([`file_speaks_for`]), else it is ignored with a warning.
pub fn load(
    config: Option<&Path>,
    flags: &TopologyArgs,
    recorded: impl FnOnce(&ClusterName) -> Result<Option<ClusterState>>,
) -> Result<Loaded> {
    let mut flag_values = flag_layer(flags)?;
    let opts = flag_values.get_mut("drivers").and_then(|d| d.as_object_mut()).and_then(|d| d.remove(DRIVER_OPTS));
    let user = |fig: Figment| fig.merge(env()).merge(Serialized::globals(flag_values.clone()));
    // The cluster name decides which recorded state applies, so it is read first.
    let first = extract(user(base(config)?))?;
    let cluster = first.cluster_name(&cluster_source(config, &flag_values))?;
    let state = recorded(&cluster)?;
    let Some(st) = &state else {
        let settings = with_driver_flags(first, flags, opts.as_ref(), &cluster, false)?;
        *DRIVER_SOURCE.lock().unwrap_or_else(|e| e.into_inner()) =
            driver_layers(config, &settings.driver, flags, opts.is_some());
        return Ok(Loaded { settings, recorded: None, warnings: vec![], changes: vec![] });
    };
    let fig = Figment::from(Serialized::defaults(Settings::default())).merge(Serialized::defaults(state_layer(st)));
    let mut s = extract(user(file_layer(fig.clone(), config)))?;
    if s.driver != st.driver {
        return Err(Error::input(
            source_of("driver", config, &flag_values),
            format!(
                "cluster {cluster} was made with driver {:?}, not {:?}; run `lab down --cluster {cluster}` first, or use another --cluster",
                st.driver, s.driver
            ),
        ));
    }
    // Maps merge key by key across layers; labels the user gives for a role are the whole set
    // for that role, not additions to what was recorded.
    let mine = user(file_layer(Figment::new(), config));
    for (role, slot) in [("manager", &mut s.labels.manager), ("worker", &mut s.labels.worker)] {
        let key = format!("labels.{role}");
        if mine.find_value(&key).is_ok() {
            *slot = mine.extract_inner(&key).map_err(render_figment)?;
        }
    }
    let mut settings = with_driver_flags(s, flags, opts.as_ref(), &cluster, true)?;
    *DRIVER_SOURCE.lock().unwrap_or_else(|e| e.into_inner()) =
        driver_layers(config, &settings.driver, flags, opts.is_some());
    let built_in = lab_core::driver::lookup(&settings.driver).is_ok();
    let mut warnings = Vec::new();
    if let Some(file) = unnamed_file(config, &cluster) {
        // The same layers without the file: where they differ on a guarded setting, the file
        // would have changed it.
        let without = with_driver_flags(extract(user(fig.clone()))?, flags, opts.as_ref(), &cluster, true)?;
        let ignored;
        (settings, ignored) = keep_out(&settings, &without, built_in)?;
        warnings = ignored.iter().map(|key| ignored_warning(&file, key, &cluster)).collect();
    }
    let before = with_driver_flags(extract(fig)?, &TopologyArgs::default(), None, &cluster, true)?;
    let changes = reach_changes(&before, &settings, built_in);
    Ok(Loaded { settings, recorded: state, warnings, changes })
}

/// `s` with the flags the drivers declare and `--driver-opt` (`opts`) put in the cluster's
/// driver's table, above every other layer, then [`normalise`]d. A driver flag given for a
/// cluster of another driver would be silently ignored, so it is bad input instead.
fn with_driver_flags(
    mut s: Settings,
    flags: &TopologyArgs,
    opts: Option<&Value>,
    cluster: &ClusterName,
    existing: bool,
) -> Result<Settings> {
    for f in &flags.driver_flags {
        let Some((_, key)) = f.drivers.iter().find(|(d, _)| *d == s.driver) else {
            let how = if existing { "uses" } else { "would use (give --driver to choose another)" };
            let owners: Vec<&str> = f.drivers.iter().map(|(d, _)| d.as_str()).collect();
            return Err(Error::input(
                &f.flag,
                format!(
                    "is an option of the {} driver, but cluster {cluster} {how} the {} driver",
                    owners.join(", "),
                    s.driver
                ),
            ));
        };
        driver_table(&mut s).insert(key.clone(), f.value.clone());
    }
    if let Some(opts) = opts {
        // `--driver-opt` applies to the cluster's driver, whichever layer chose it.
        let mut table = Value::Object(std::mem::take(driver_table(&mut s)));
        merge_json(&mut table, opts.clone());
        if let Value::Object(t) = table {
            *driver_table(&mut s) = t;
        }
    }
    normalise(&mut s);
    Ok(s)
}

/// The cluster's driver's table in `s`, made an empty table if it is missing or not a table.
fn driver_table(s: &mut Settings) -> &mut Map<String, Value> {
    let table = s.drivers.entry(s.driver.clone()).or_insert_with(|| json!({}));
    if !table.is_object() {
        *table = json!({});
    }
    table.as_object_mut().expect("made an object above")
}

/// Settings as lab uses and records them, so that a later command from another directory means
/// the same thing, and settings compare equal when they name the same file:
/// - the top-level `hosts` of older lab.toml files goes into the ssh driver's table;
/// - `[drivers.X] command` becomes the absolute path of the program lab will run
///   ([`lab_core::external::resolve_command`]; left as written when it leads nowhere, and
///   `external::find` then says why);
/// - a built-in driver's path settings (`OptionKind::Path`) become absolute, against the
///   directory lab runs in (what they meant when given).
fn normalise(s: &mut Settings) {
    if s.driver == "ssh" {
        if let Some(hosts) = s.hosts.take() {
            driver_table(s).insert("hosts".into(), json!(hosts));
        }
    }
    let options = lab_core::driver::lookup(&s.driver).map(|r| r.options).unwrap_or_default();
    let Some(Value::Object(table)) = s.drivers.get_mut(&s.driver) else { return };
    if let Some(path) = table.get("command").and_then(Value::as_str).and_then(lab_core::external::resolve_command) {
        table.insert("command".into(), json!(path));
    }
    for o in options.iter().filter(|o| matches!(o.kind, lab_core::driver::OptionKind::Path)) {
        if let Some(Value::String(p)) = table.get_mut(o.key) {
            if let Ok(abs) = std::path::absolute(&*p) {
                *p = abs.display().to_string();
            }
        }
    }
}

/// The settings of built-in drivers' tables that say where a cluster's machines are, or how
/// lab trusts them: the engine the docker driver's nodes run on; the ssh driver's hosts file,
/// known-hosts files and host-key policy; the docker-machine program the virtualbox driver
/// runs. (The qemu driver's settings only shape new VMs.)
pub const REACH_KEYS: &[(&str, &str)] = &[
    ("docker", "host"),
    ("ssh", "hosts"),
    ("ssh", "known_hosts"),
    ("ssh", "global_known_hosts"),
    ("ssh", "host_key_policy"),
    ("virtualbox", "docker_machine"),
];

/// Whether the setting at `key` (its path: `["registry", "tls"]`, `["drivers", "ssh",
/// "hosts"]`) changes how an existing cluster of driver `driver` is reached or secured, so that
/// only an explicit source may change it ([`file_speaks_for`]): who may talk to the registry
/// (`registry.tls`); the program an external driver runs (`command`); the [`REACH_KEYS`] of a
/// built-in driver; and every key of an external driver's table but lab's own limits
/// (`timeout`, `create_timeout`), since lab cannot tell which of them say where the engines
/// are or hold credentials.
pub fn reaches_or_secures(driver: &str, built_in: bool, key: &[&str]) -> bool {
    match key {
        ["registry", "tls"] => true,
        ["drivers", d, k, ..] if *d == driver => {
            *k == "command"
                || if built_in {
                    REACH_KEYS.contains(&(driver, *k))
                } else {
                    !matches!(*k, "timeout" | "create_timeout")
                }
        }
        _ => false,
    }
}

/// Whether a configuration file may change how existing cluster `cluster` is reached or
/// secured: when the user gave it with `--config`, or it names the cluster (`cluster = "X"`,
/// `names`). A `lab.toml` that happens to be in the current directory does not.
pub fn file_speaks_for(cluster: &ClusterName, given_with_config: bool, names: Option<&str>) -> bool {
    given_with_config || names == Some(cluster.as_str())
}

/// The configuration file in use, if there is one and it does not speak for `cluster`.
fn unnamed_file(config: Option<&Path>, cluster: &ClusterName) -> Option<String> {
    if config.is_some() || !Path::new(CONFIG_FILE).is_file() {
        return None;
    }
    let names = Figment::from(Toml::file(CONFIG_FILE)).find_value("cluster").ok();
    (!file_speaks_for(cluster, false, names.as_ref().and_then(|v| v.as_str()))).then(|| CONFIG_FILE.to_string())
}

/// The guarded keys ([`reaches_or_secures`]) either of `values` (settings as JSON) has.
fn guarded_keys(driver: &str, built_in: bool, values: &[&Value]) -> Vec<Vec<String>> {
    let mut keys = vec![vec!["registry".to_string(), "tls".to_string()]];
    let mut table_keys: Vec<&String> =
        values.iter().filter_map(|v| v["drivers"][driver].as_object()).flat_map(|t| t.keys()).collect();
    table_keys.sort();
    table_keys.dedup();
    for k in table_keys {
        if reaches_or_secures(driver, built_in, &["drivers", driver, k]) {
            keys.push(vec!["drivers".into(), driver.into(), k.clone()]);
        }
    }
    keys
}

fn value_at<'a>(v: &'a Value, key: &[String]) -> Option<&'a Value> {
    key.iter().try_fold(v, |v, k| v.get(k))
}

/// `with`, but where it differs from `without` on a guarded setting, `without`'s value
/// (absent if `without` has none); and the dotted keys that were so kept out.
fn keep_out(with: &Settings, without: &Settings, built_in: bool) -> Result<(Settings, Vec<String>)> {
    let json = |s: &Settings| serde_json::to_value(s).map_err(|e| Error::op_caused("read the settings", e));
    let (mut kept, without) = (json(with)?, json(without)?);
    let mut ignored = Vec::new();
    for key in guarded_keys(&with.driver, built_in, &[&kept, &without]) {
        let theirs = value_at(&without, &key).cloned();
        if value_at(&kept, &key) == theirs.as_ref() {
            continue;
        }
        let (last, parents) = key.split_last().expect("keys have a name");
        if let Some(Value::Object(t)) = parents.iter().try_fold(&mut kept, |v, k| v.get_mut(k)) {
            match theirs {
                Some(v) => t.insert(last.clone(), v),
                None => t.remove(last),
            };
        }
        ignored.push(key.join("."));
    }
    let kept = serde_json::from_value(kept).map_err(|e| Error::op_caused("read the settings", e))?;
    Ok((kept, ignored))
}

/// The warning for `key`, ignored in `file` for existing cluster `cluster`: one line, with
/// how to apply it.
fn ignored_warning(file: &str, key: &str, cluster: &ClusterName) -> String {
    let flag = match key {
        "registry.tls" => "--registry-tls".to_string(),
        k => format!("--driver-opt {}=...", k.rsplit('.').next().unwrap_or(k)),
    };
    format!(
        "{file}: ignored {key}: it would change how the existing cluster {cluster} is reached or secured, \
         and {file} does not name it; to apply it, add cluster = \"{cluster}\" to {file}, give the file \
         with --config {file}, or pass {flag}"
    )
}

/// How `after` changes the way the cluster is reached or secured from `before`: one
/// `key: old -> new` for each guarded setting that differs. The values of an external driver's
/// settings are not shown (lab cannot tell a secret from an address), but for `command`.
pub fn reach_changes(before: &Settings, after: &Settings, built_in: bool) -> Vec<String> {
    let (Ok(b), Ok(a)) = (serde_json::to_value(before), serde_json::to_value(after)) else { return vec![] };
    let shown = |key: &[String], v: Option<&Value>| match v {
        None => "(unset)".to_string(),
        Some(_) if !built_in && key[0] == "drivers" && key[2] != "command" => "(value not shown)".to_string(),
        Some(v) => v.to_string(),
    };
    guarded_keys(&after.driver, built_in, &[&b, &a])
        .into_iter()
        .filter(|key| value_at(&b, key) != value_at(&a, key))
        .map(|key| {
            let (old, new) = (shown(&key, value_at(&b, &key)), shown(&key, value_at(&a, &key)));
            let change = if old == new { "changed".to_string() } else { format!("{old} -> {new}") };
            format!("{}: {change}", key.join("."))
        })
        .collect()
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
        load(None, &flags, |_| Ok(None)).map(|l| l.settings)
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
            let s = load(None, &TopologyArgs { workers: Some(1), ..Default::default() }, |_| Ok(Some(st.clone())))
                .unwrap()
                .settings;
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
            let s = load(None, &TopologyArgs::default(), |_| Ok(None)).unwrap().settings;
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
        load(None, &flags, |_| Ok(Some(st.clone()))).map(|l| l.settings)
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

    /// Issue 18, item 6: a driver's `command` is an absolute path from whichever layer.
    #[test]
    fn a_driver_command_is_made_absolute() {
        Jail::expect_with(|jail| {
            let dir = jail.directory().to_path_buf();
            let flags = TopologyArgs {
                driver: Some("rel".into()),
                driver_opts: vec!["command=./bin/lab-driver-rel".into()],
                ..Default::default()
            };
            let s = load_in_jail(flags).unwrap();
            assert_eq!(s.drivers["rel"]["command"], json!(dir.join("bin/lab-driver-rel")));
            jail.create_file("lab.toml", "driver = \"rel\"\n[drivers.rel]\ncommand = \"../lab-driver-up\"\n")?;
            let s = load_in_jail(TopologyArgs::default()).unwrap();
            assert_eq!(s.drivers["rel"]["command"], json!(dir.join("../lab-driver-up")));
            Ok(())
        });
    }

    /// Issue 18, item 7: for an existing cluster, a configuration file that does not name it
    /// (`lab.toml` in the current directory without `cluster = "lab"`) changes nothing about
    /// how it is reached or secured; its other settings apply as before.
    #[test]
    fn an_unnamed_file_does_not_change_how_a_cluster_is_reached() {
        Jail::expect_with(|jail| {
            let st = recorded(
                "static",
                json!({
                    "driver_config": {"command": "/a/lab-driver-static", "engines": {"manager": "unix:///a.sock"}, "timeout": 5},
                    "registry_tls": "open",
                }),
            );
            let file = "workers = 5\n[registry]\ntls = \"mutual\"\n[drivers.static]\ncommand = \"/b/lab-driver-static\"\n\
                        engines = { manager = \"unix:///b.sock\", worker1 = \"unix:///w.sock\" }\ntimeout = 9\nregion = \"eu\"\n";
            jail.create_file("lab.toml", file)?;
            let loaded = load(None, &only_cluster(), |_| Ok(Some(st.clone()))).unwrap();
            let s = loaded.settings;
            assert_eq!(s.workers, 5, "the file's other settings apply");
            assert_eq!(s.drivers["static"]["timeout"], 9, "lab's own limits are not how it is reached");
            assert_eq!(s.registry.tls, RegistryTls::Open);
            assert_eq!(
                s.drivers["static"],
                json!({"command": "/a/lab-driver-static", "engines": {"manager": "unix:///a.sock"}, "timeout": 9}),
                "an external driver's keys may all say where its engines are"
            );
            // One line per key ignored, naming the file and the key and saying how to apply it.
            let keys = ["registry.tls", "drivers.static.command", "drivers.static.engines", "drivers.static.region"];
            assert_eq!(loaded.warnings.len(), keys.len(), "{:#?}", loaded.warnings);
            for (w, key) in loaded.warnings.iter().zip(keys) {
                assert!(w.starts_with(&format!("lab.toml: ignored {key}: ")), "{w}");
                assert!(!w.contains('\n') && w.contains("cluster = \"lab\"") && w.contains("--config lab.toml"), "{w}");
                assert!(!w.contains("unix:///b.sock") && !w.contains("\"eu\""), "a value is shown: {w}");
            }
            assert!(loaded.warnings[0].ends_with("--registry-tls"), "{}", loaded.warnings[0]);
            assert!(loaded.warnings[1].ends_with("--driver-opt command=..."), "{}", loaded.warnings[1]);
            assert_eq!(loaded.changes, Vec::<String>::new(), "nothing it is reached by changes");
            // A file that says what was recorded changes nothing, and warns of nothing.
            jail.create_file(
                "lab.toml",
                "[drivers.static]\ncommand = \"/a/lab-driver-static\"\nengines = { manager = \"unix:///a.sock\" }\n",
            )?;
            let loaded = load(None, &only_cluster(), |_| Ok(Some(st.clone()))).unwrap();
            assert_eq!((loaded.warnings, loaded.changes), (vec![], vec![]));

            // A built-in driver: only the keys that say where its machines are, or how lab
            // trusts them, are held back.
            let ssh = recorded(
                "ssh",
                json!({"driver_config": {"hosts": "/h/hosts.toml", "known_hosts": "/h/kh", "connect_timeout": 10}}),
            );
            jail.create_file(
                "lab.toml",
                "[drivers.ssh]\nhosts = \"/evil/hosts.toml\"\nknown_hosts = \"/evil/kh\"\n\
                 host_key_policy = \"accept-new\"\nconnect_timeout = 20\n",
            )?;
            let s = load_recorded(only_cluster(), &ssh).unwrap();
            assert_eq!(
                s.drivers["ssh"],
                json!({"hosts": "/h/hosts.toml", "known_hosts": "/h/kh", "connect_timeout": 20})
            );
            let docker = recorded("docker", json!({"driver_config": {"node_image": "n:1"}}));
            jail.create_file("lab.toml", "[drivers.docker]\nhost = \"tcp://10.0.0.1:2375\"\nnode_image = \"n:2\"\n")?;
            let s = load_recorded(only_cluster(), &docker).unwrap();
            assert_eq!(s.drivers["docker"], json!({"node_image": "n:2"}));

            // A file naming another cluster does not speak for this one either.
            jail.create_file("lab.toml", "cluster = \"other\"\n[drivers.docker]\nhost = \"tcp://10.0.0.1:2375\"\n")?;
            let s = load_recorded(only_cluster(), &docker).unwrap();
            assert_eq!(s.drivers["docker"], json!({"node_image": "n:1"}));
            Ok(())
        });
    }

    /// Issue 18, item 7: which settings say how a cluster is reached or secured, and which
    /// files speak for a cluster. Each built-in key named is one its driver declares.
    #[test]
    fn the_rule_for_how_a_cluster_is_reached() {
        let yes: &[(&str, bool, &[&str])] = &[
            ("docker", true, &["registry", "tls"]),
            ("docker", true, &["drivers", "docker", "host"]),
            ("ssh", true, &["drivers", "ssh", "hosts"]),
            ("ssh", true, &["drivers", "ssh", "known_hosts"]),
            ("ssh", true, &["drivers", "ssh", "host_key_policy"]),
            ("virtualbox", true, &["drivers", "virtualbox", "docker_machine"]),
            ("static", false, &["drivers", "static", "command"]),
            ("static", false, &["drivers", "static", "engines"]),
            ("static", false, &["drivers", "static", "api_token"]),
        ];
        let no: &[(&str, bool, &[&str])] = &[
            ("docker", true, &["registry", "image"]),
            ("docker", true, &["registry", "mode"]),
            ("docker", true, &["workers"]),
            ("docker", true, &["labels", "worker"]),
            ("docker", true, &["drivers", "docker", "node_image"]),
            ("docker", true, &["drivers", "ssh", "hosts"]),
            ("ssh", true, &["drivers", "ssh", "connect_timeout"]),
            ("qemu", true, &["drivers", "qemu", "image"]),
            ("static", false, &["drivers", "static", "timeout"]),
            ("static", false, &["drivers", "static", "create_timeout"]),
            ("static", false, &["drivers", "other", "engines"]),
        ];
        for (driver, built_in, key) in yes {
            assert!(reaches_or_secures(driver, *built_in, key), "{driver}: {key:?}");
        }
        for (driver, built_in, key) in no {
            assert!(!reaches_or_secures(driver, *built_in, key), "{driver}: {key:?}");
        }
        for (driver, key) in REACH_KEYS {
            let options = lab_core::driver::lookup(driver).unwrap().options;
            assert!(options.iter().any(|o| o.key == *key), "the {driver} driver declares no {key}");
        }
        let lab = ClusterName::parse("lab", "test").unwrap();
        assert!(file_speaks_for(&lab, true, None));
        assert!(file_speaks_for(&lab, false, Some("lab")));
        assert!(!file_speaks_for(&lab, false, None));
        assert!(!file_speaks_for(&lab, false, Some("other")));
    }

    /// An external driver's values are not shown in the changes (they may be secrets); the
    /// program's path and built-in drivers' are.
    #[test]
    fn changes_hide_an_external_drivers_values() {
        let mut before = Settings { driver: "static".into(), ..Default::default() };
        before.drivers.insert("static".into(), json!({"command": "/a", "token": "s3cret-1", "timeout": 1}));
        let mut after = before.clone();
        after.drivers.insert("static".into(), json!({"command": "/b", "token": "s3cret-2", "timeout": 2}));
        assert_eq!(
            reach_changes(&before, &after, false),
            [r#"drivers.static.command: "/a" -> "/b""#, "drivers.static.token: changed"]
        );
        let mut before = Settings::default();
        before.drivers.insert("docker".into(), json!({"node_image": "a"}));
        let mut after = before.clone();
        after.drivers.insert("docker".into(), json!({"node_image": "b", "host": "unix:///other.sock"}));
        assert_eq!(reach_changes(&before, &after, true), [r#"drivers.docker.host: (unset) -> "unix:///other.sock""#]);
    }

    /// Issue 18, item 7: what may change how an existing cluster is reached: a flag, a `LAB_*`
    /// variable, a file given with `--config`, or a file that names the cluster. A new cluster
    /// takes everything from `lab.toml`, as before.
    #[test]
    fn explicit_settings_change_how_a_cluster_is_reached() {
        Jail::expect_with(|jail| {
            let st = recorded("static", json!({"driver_config": {"command": "/a/lab-driver-static"}}));
            let file = "[registry]\ntls = \"mutual\"\n[drivers.static]\ncommand = \"/b/lab-driver-static\"\n";
            jail.create_file("lab.toml", &format!("cluster = \"lab\"\n{file}"))?;
            let loaded = load(None, &only_cluster(), |_| Ok(Some(st.clone()))).unwrap();
            let s = &loaded.settings;
            assert_eq!(
                (s.registry.tls, &s.drivers["static"]["command"]),
                (RegistryTls::Mutual, &json!("/b/lab-driver-static"))
            );
            assert_eq!(loaded.warnings, Vec::<String>::new());
            // `lab plan` shows these before `lab up` records them.
            assert_eq!(
                loaded.changes,
                [
                    r#"registry.tls: "open" -> "mutual""#,
                    r#"drivers.static.command: "/a/lab-driver-static" -> "/b/lab-driver-static""#
                ]
            );

            jail.create_file("lab.toml", "")?;
            jail.create_file("other.toml", file)?;
            let s = load(Some(Path::new("other.toml")), &only_cluster(), |_| Ok(Some(st.clone()))).unwrap().settings;
            assert_eq!(
                (s.registry.tls, &s.drivers["static"]["command"]),
                (RegistryTls::Mutual, &json!("/b/lab-driver-static"))
            );

            jail.create_file("lab.toml", file)?;
            let flags = TopologyArgs {
                registry_tls: Some(crate::args::TlsArg::Mutual),
                driver_opts: vec!["command=\"/c/lab-driver-static\"".into()],
                ..only_cluster()
            };
            let s = load_recorded(flags, &st).unwrap();
            assert_eq!(
                (s.registry.tls, &s.drivers["static"]["command"]),
                (RegistryTls::Mutual, &json!("/c/lab-driver-static"))
            );

            jail.set_env("LAB_DRIVERS__STATIC__COMMAND", "/d/lab-driver-static");
            let s = load_recorded(only_cluster(), &st).unwrap();
            assert_eq!(s.drivers["static"]["command"], "/d/lab-driver-static");
            jail.clear_env();

            // A new cluster: the file applies, named or not.
            let s = load(None, &only_cluster(), |_| Ok(None)).unwrap().settings;
            assert_eq!(
                (s.registry.tls, &s.drivers["static"]["command"]),
                (RegistryTls::Mutual, &json!("/b/lab-driver-static"))
            );
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
