//! The hosts file (`--hosts hosts.toml`): which existing machines make the cluster, and how
//! to reach each over SSH.
//!
//! Everything in it is checked here, before any connection is made, and every failure is bad
//! input (exit 2) naming the file, the host (by name, or by position when it has no usable
//! name) and the field. Values end up in SSH connections, socket paths, swarm labels and the
//! argv of `ssh` for `lab ssh`, so names, users and addresses are held to plain spellings:
//! nothing that a shell or `ssh`'s option parser could read as more than one word or as an
//! option.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use lab_core::topology::validate_label;
use lab_core::{Error, Result, Role};
use toml::{Table, Value};

const TOP_KEYS: &[&str] = &["defaults", "hosts"];
const DEFAULT_KEYS: &[&str] = &["user", "port", "identity_file"];
const HOST_KEYS: &[&str] = &["name", "address", "role", "user", "port", "identity_file", "advertise_address", "labels"];
/// Longest host name: it becomes a socket file name and a swarm label.
const MAX_NAME: usize = 32;

/// One host of the file, with the defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Unique node name; the swarm node's `lab.node` label.
    pub name: String,
    /// IP address or DNS name lab connects to.
    pub address: String,
    /// Swarm role.
    pub role: Role,
    /// SSH user.
    pub user: String,
    /// SSH port.
    pub port: u16,
    /// Private key to authenticate with; `None`: ssh-agent, then the usual `~/.ssh` keys.
    pub identity_file: Option<PathBuf>,
    /// The address the node advertises to the swarm (default: `address`).
    pub advertise_address: String,
    /// Extra swarm node labels.
    pub labels: BTreeMap<String, String>,
}

impl Host {
    /// `address` as a URL or `ssh` destination host part: IPv6 in brackets.
    pub fn url_host(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        }
    }

    /// `ssh://user@host[:port]`, for `DOCKER_HOST`.
    pub fn docker_host(&self) -> String {
        let port = if self.port == 22 { String::new() } else { format!(":{}", self.port) };
        format!("ssh://{}@{}{port}", self.user, self.url_host())
    }
}

/// Where the process's defaults come from, so that parsing is a pure function in tests.
#[derive(Debug, Clone)]
pub struct Environment {
    /// `$HOME`, for `~/` in `identity_file`.
    pub home: Option<PathBuf>,
    /// The current user (`$USER`, else `$LOGNAME`), the default `user`.
    pub user: Option<String>,
}

impl Environment {
    /// From the process environment.
    pub fn from_process() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Environment { home: var("HOME").map(PathBuf::from), user: var("USER").or_else(|| var("LOGNAME")) }
    }
}

/// Reads and validates the hosts file at `path`.
pub fn load(path: &Path, env: &Environment) -> Result<Vec<Host>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::input(format!("--hosts {}", path.display()), format!("cannot read it: {e}")))?;
    parse(&text, path, env)
}

/// Validates the text of a hosts file; `path` is where it came from (for messages, and the
/// directory relative `identity_file` paths are resolved against).
pub fn parse(text: &str, path: &Path, env: &Environment) -> Result<Vec<Host>> {
    let file = path.display().to_string();
    let table = top_level(text, &file)?;
    let empty = Table::new();
    let defaults = defaults(&table, &file)?.unwrap_or(&empty);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut hosts: Vec<Host> = Vec::new();
    for (i, value) in host_list(&table, &file)?.iter().enumerate() {
        let host = parse_host(i + 1, value, defaults, &file, base, env)?;
        refuse_duplicate(&hosts, &host, &format!("{file}: host {} ({})", i + 1, host.name))?;
        hosts.push(host);
    }
    if !hosts.iter().any(|h| h.role == Role::Manager) {
        return Err(Error::input(
            format!("{file}: hosts"),
            "no host has role = \"manager\"; a cluster needs at least one".to_string(),
        ));
    }
    Ok(hosts)
}

/// The file as TOML, with only the keys a hosts file has at its top.
fn top_level(text: &str, file: &str) -> Result<Table> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| {
                let (line, col) = line_col(text, s.start);
                format!(" at line {line}, column {col}")
            })
            .unwrap_or_default();
        Error::input(file, format!("not valid TOML{at}: {}", e.message().trim()))
    })?;
    for key in table.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            return Err(Error::input(
                format!("{file}: {key}"),
                format!("unknown key {key:?}; expected {}", list(TOP_KEYS)),
            ));
        }
    }
    Ok(table)
}

/// The `[defaults]` table, if there is one, with only the keys it may set.
fn defaults<'a>(table: &'a Table, file: &str) -> Result<Option<&'a Table>> {
    let defaults = match table.get("defaults") {
        None => return Ok(None),
        Some(Value::Table(t)) => t,
        Some(other) => {
            return Err(Error::input(format!("{file}: defaults"), format!("must be a table, got {}", other.type_str())))
        }
    };
    for key in defaults.keys() {
        if !DEFAULT_KEYS.contains(&key.as_str()) {
            return Err(Error::input(
                format!("{file}: defaults.{key}"),
                format!("unknown key {key:?}; [defaults] may set {}", list(DEFAULT_KEYS)),
            ));
        }
    }
    Ok(Some(defaults))
}

/// The `[[hosts]]` array, not empty.
fn host_list<'a>(table: &'a Table, file: &str) -> Result<&'a Vec<Value>> {
    match table.get("hosts") {
        Some(Value::Array(a)) if !a.is_empty() => Ok(a),
        Some(Value::Array(_)) | None => {
            Err(Error::input(format!("{file}: hosts"), "no [[hosts]]; list at least one manager"))
        }
        Some(other) => Err(Error::input(
            format!("{file}: hosts"),
            format!("must be an array of tables ([[hosts]]), got {}", other.type_str()),
        )),
    }
}

/// Refuses `host` if it shares its name, its address and port, or its advertise address with
/// one of the `hosts` before it; `label` names it in the file.
fn refuse_duplicate(hosts: &[Host], host: &Host, label: &str) -> Result<()> {
    let what = |field: &str| format!("{label}: {field}");
    if let Some(other) = hosts.iter().find(|h| h.name == host.name) {
        return Err(Error::input(
            what("name"),
            format!("{:?} is also the name of host {}", host.name, index_of(hosts, other)),
        ));
    }
    // Host names are case-insensitive: `Node1` and `node1` are one machine.
    if let Some(other) = hosts.iter().find(|h| h.address.eq_ignore_ascii_case(&host.address) && h.port == host.port) {
        return Err(Error::input(
            what("address"),
            format!("{:?} (port {}) is also the address of host {:?}", host.address, host.port, other.name),
        ));
    }
    if let Some(other) = hosts.iter().find(|h| h.advertise_address.eq_ignore_ascii_case(&host.advertise_address)) {
        return Err(Error::input(
            what("advertise_address"),
            format!(
                "{:?} is also the advertise address of host {:?}; give each host its own advertise_address",
                host.advertise_address, other.name
            ),
        ));
    }
    Ok(())
}

fn index_of(hosts: &[Host], h: &Host) -> usize {
    hosts.iter().position(|x| x == h).map_or(0, |p| p + 1)
}

fn list(keys: &[&str]) -> String {
    keys.join(", ")
}

/// 1-based line and column of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The `n`th `[[hosts]]` table, checked, with `defaults` applied where it sets nothing.
fn parse_host(n: usize, value: &Value, defaults: &Table, file: &str, base: &Path, env: &Environment) -> Result<Host> {
    let Value::Table(t) = value else {
        return Err(Error::input(format!("{file}: host {n}"), format!("must be a table, got {}", value.type_str())));
    };
    // Until the name is known to be good, the host is named by its position only.
    let mut f = Fields { t, defaults, file, label: format!("host {n}") };
    let name = f.required("name")?;
    check_name(&name).map_err(|why| Error::input(f.what("name"), format!("{name:?} {why}")))?;
    f.label = format!("{} ({name})", f.label);
    for key in t.keys() {
        if !HOST_KEYS.contains(&key.as_str()) {
            return Err(Error::input(f.what(key), format!("unknown key {key:?}; a host may set {}", list(HOST_KEYS))));
        }
    }
    let address = f.required("address")?;
    check_address(&address).map_err(|why| Error::input(f.what("address"), format!("{address:?} {why}")))?;
    let role = match f.required("role")?.as_str() {
        "manager" => Role::Manager,
        "worker" => Role::Worker,
        other => {
            return Err(Error::input(
                f.what("role"),
                format!("unknown role {other:?}; expected \"manager\" or \"worker\""),
            ))
        }
    };
    let advertise_address = match f.string("advertise_address")? {
        Some(a) => {
            check_ip_or_name(&a).map_err(|why| Error::input(f.what("advertise_address"), format!("{a:?} {why}")))?;
            a
        }
        None => address.clone(),
    };
    let user = f.user(env)?;
    let port = f.port()?;
    let identity_file = f.identity_file(base, env)?;
    let labels = f.labels()?;
    Ok(Host { name, address, role, user, port, identity_file, advertise_address, labels })
}

/// One `[[hosts]]` table being read, with the `[defaults]` it may inherit from, and how it is
/// named in errors (`label`: by position until its name is known to be good).
struct Fields<'a> {
    t: &'a Table,
    defaults: &'a Table,
    file: &'a str,
    label: String,
}

impl Fields<'_> {
    /// How errors name `field` of this host.
    fn what(&self, field: &str) -> String {
        format!("{}: {}: {field}", self.file, self.label)
    }

    /// The host's own string `key`, if it sets it.
    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.t.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(Error::input(self.what(key), format!("must be a string, got {}", other.type_str()))),
        }
    }

    /// The host's own string `key`, which every host must set.
    fn required(&self, key: &str) -> Result<String> {
        self.string(key)?.ok_or_else(|| Error::input(self.what(key), format!("missing; every host needs {key}")))
    }

    /// A field the host may inherit from `[defaults]`: the host's own wins, and an error names
    /// whichever table the bad value is in.
    fn pick(&self, key: &str) -> (String, Option<&Value>) {
        match self.t.get(key) {
            Some(v) => (self.what(key), Some(v)),
            None => (format!("{}: defaults.{key}", self.file), self.defaults.get(key)),
        }
    }

    /// `user`, else the current user's name.
    fn user(&self, env: &Environment) -> Result<String> {
        let (user_what, user) = self.pick("user");
        let user = match user {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(Error::input(user_what, format!("must be a string, got {}", other.type_str()))),
            None => env.user.clone().ok_or_else(|| {
                Error::input(self.what("user"), "not set, and neither $USER nor $LOGNAME names the current user")
            })?,
        };
        check_user(&user).map_err(|why| Error::input(user_what, format!("{user:?} {why}")))?;
        Ok(user)
    }

    /// `port`, else 22.
    fn port(&self) -> Result<u16> {
        let (port_what, port) = self.pick("port");
        match port {
            None => Ok(22),
            Some(Value::Integer(p)) if (1..=65535).contains(p) => Ok(*p as u16),
            Some(Value::Integer(p)) => {
                Err(Error::input(port_what, format!("{p} is out of range; a port is 1 to 65535")))
            }
            Some(other) => Err(Error::input(port_what, format!("must be an integer, got {}", other.type_str()))),
        }
    }

    /// `identity_file`, resolved, and a file that exists.
    fn identity_file(&self, base: &Path, env: &Environment) -> Result<Option<PathBuf>> {
        let (key_what, key) = self.pick("identity_file");
        let identity_file = match key {
            None => None,
            Some(Value::String(s)) => Some(resolve_path(s, base, env).map_err(|why| Error::input(&key_what, why))?),
            Some(other) => return Err(Error::input(key_what, format!("must be a string, got {}", other.type_str()))),
        };
        if let Some(p) = &identity_file {
            if !p.is_file() {
                return Err(Error::input(key_what, format!("{} is not a readable file", p.display())));
            }
        }
        Ok(identity_file)
    }

    /// `labels`: string values, each a valid swarm label.
    fn labels(&self) -> Result<BTreeMap<String, String>> {
        let mut labels = BTreeMap::new();
        match self.t.get("labels") {
            None => {}
            Some(Value::Table(l)) => {
                for (k, v) in l {
                    let Value::String(v) = v else {
                        return Err(Error::input(
                            self.what(&format!("labels.{k}")),
                            format!("must be a string, got {}", v.type_str()),
                        ));
                    };
                    validate_label(&self.what("labels"), k, v)?;
                    labels.insert(k.clone(), v.clone());
                }
            }
            Some(other) => {
                return Err(Error::input(self.what("labels"), format!("must be a table, got {}", other.type_str())))
            }
        }
        Ok(labels)
    }
}

/// `~/x` from `$HOME`; relative paths from the hosts file's directory, so the file means the
/// same wherever lab runs.
fn resolve_path(s: &str, base: &Path, env: &Environment) -> std::result::Result<PathBuf, String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if let Some(rest) = s.strip_prefix("~/") {
        let home = env.home.as_ref().ok_or_else(|| format!("{s:?} starts with ~/ but $HOME is not set"))?;
        return Ok(home.join(rest));
    }
    if s.starts_with('~') {
        return Err(format!("{s:?}: only ~/ (your own home) is understood"));
    }
    let p = Path::new(s);
    Ok(if p.is_absolute() { p.to_path_buf() } else { base.join(p) })
}

/// A plain identifier: a letter, then letters, digits, `-` or `_`.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("is longer than {MAX_NAME} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err("must start with a letter".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!("is not a plain identifier: {c:?} is not allowed (use letters, digits, '-' and '_')"));
    }
    Ok(())
}

/// A login name as POSIX systems spell them (no `@`, no spaces, no leading `-`).
fn check_user(user: &str) -> std::result::Result<(), String> {
    if user.is_empty() || user.len() > 32 {
        return Err("is not a user name (1 to 32 characters)".into());
    }
    if !user.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        return Err("is not a user name: it must start with a letter or '_'".into());
    }
    if let Some(c) = user.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!("is not a user name: {c:?} is not allowed"));
    }
    Ok(())
}

fn check_address(a: &str) -> std::result::Result<(), String> {
    check_ip_or_name(a)
}

/// An IP address, or a DNS host name (letters, digits, `-` and `_` in dot-separated labels,
/// none starting or ending with `-`).
fn check_ip_or_name(a: &str) -> std::result::Result<(), String> {
    if a.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if a.is_empty() {
        return Err("is empty".into());
    }
    if a.len() > 253 {
        return Err("is not a host name: longer than 253 characters".into());
    }
    if a.starts_with('-') {
        return Err("is not a host name or IP address: it starts with '-'".into());
    }
    if let Some(c) = a.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))) {
        return Err(format!("is not a host name or IP address: {c:?} is not allowed"));
    }
    for part in a.trim_end_matches('.').split('.') {
        if part.is_empty() || part.len() > 63 || part.starts_with('-') || part.ends_with('-') {
            return Err(format!("is not a host name: bad label {part:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment { home: Some("/home/me".into()), user: Some("me".into()) }
    }

    fn parse_str(text: &str) -> Result<Vec<Host>> {
        parse(text, Path::new("/etc/lab/hosts.toml"), &env())
    }

    /// Asserts `text` is refused as bad input whose message contains every one of `needles`.
    fn refused(text: &str, needles: &[&str]) {
        let err = parse_str(text).expect_err(text);
        assert_eq!(err.exit_code(), 2, "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("/etc/lab/hosts.toml"), "the file is not named: {msg}");
        for n in needles {
            assert!(msg.contains(n), "{n:?} not in: {msg}");
        }
    }

    const GOOD: &str = r#"
[defaults]
user = "root"
port = 2222
[[hosts]]
name = "manager"
address = "192.168.99.100"
role = "manager"
[[hosts]]
name = "worker1"
address = "worker1.example.com"
role = "worker"
user = "deploy"
port = 22
advertise_address = "10.0.0.5"
labels = { "thredds" = "true" }
"#;

    #[test]
    fn a_good_file_parses_with_defaults_applied() {
        let hosts = parse_str(GOOD).unwrap();
        assert_eq!(hosts.len(), 2);
        let m = &hosts[0];
        assert_eq!((m.name.as_str(), m.role, m.user.as_str(), m.port), ("manager", Role::Manager, "root", 2222));
        assert_eq!(m.advertise_address, "192.168.99.100");
        assert_eq!(m.docker_host(), "ssh://root@192.168.99.100:2222");
        let w = &hosts[1];
        assert_eq!((w.user.as_str(), w.port, w.advertise_address.as_str()), ("deploy", 22, "10.0.0.5"));
        assert_eq!(w.labels.get("thredds").map(String::as_str), Some("true"));
        assert_eq!(w.docker_host(), "ssh://deploy@worker1.example.com");
    }

    #[test]
    fn user_defaults_to_the_current_user_and_port_to_22() {
        let hosts = parse_str("[[hosts]]\nname = \"m\"\naddress = \"::1\"\nrole = \"manager\"\n").unwrap();
        assert_eq!((hosts[0].user.as_str(), hosts[0].port), ("me", 22));
        assert_eq!(hosts[0].docker_host(), "ssh://me@[::1]");
        let no_user = parse(
            "[[hosts]]\nname = \"m\"\naddress = \"h\"\nrole = \"manager\"\n",
            Path::new("h.toml"),
            &Environment { home: None, user: None },
        )
        .unwrap_err();
        assert!(no_user.to_string().contains("host 1 (m): user"), "{no_user}");
    }

    #[test]
    fn not_toml_names_line_and_column() {
        refused("[[hosts]]\nname = \"m\"\naddress = 192.168.1.1\n", &["not valid TOML at line 3, column"]);
    }

    #[test]
    fn missing_fields_name_the_host_and_field() {
        refused("[[hosts]]\naddress = \"a\"\nrole = \"manager\"\n", &["host 1: name", "missing"]);
        refused("[[hosts]]\nname = \"m\"\nrole = \"manager\"\n", &["host 1 (m): address", "missing"]);
        refused("[[hosts]]\nname = \"m\"\naddress = \"a\"\n", &["host 1 (m): role", "missing"]);
    }

    #[test]
    fn unknown_role() {
        refused("[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"leader\"\n", &["host 1 (m): role", "\"leader\""]);
    }

    #[test]
    fn addresses_differing_only_in_case_are_one_machine() {
        refused(
            "[[hosts]]\nname = \"m\"\naddress = \"Node1.example.com\"\nrole = \"manager\"\n\
             [[hosts]]\nname = \"w\"\naddress = \"node1.EXAMPLE.com\"\nrole = \"worker\"\n",
            &["host 2 (w): address", "also the address of host \"m\""],
        );
    }

    #[test]
    fn duplicate_names_and_addresses() {
        let two = |a: &str, b: &str| {
            format!(
                "[[hosts]]\nname = \"m\"\naddress = \"{a}\"\nrole = \"manager\"\n\
                 [[hosts]]\nname = \"{b}\"\naddress = \"{a}2\"\nrole = \"worker\"\n"
            )
        };
        refused(&two("h", "m"), &["host 2 (m): name", "also the name of host 1"]);
        refused(
            "[[hosts]]\nname = \"m\"\naddress = \"h\"\nrole = \"manager\"\n\
             [[hosts]]\nname = \"w\"\naddress = \"h\"\nrole = \"worker\"\n",
            &["host 2 (w): address", "also the address of host \"m\""],
        );
        // Same address on another port is another machine behind NAT, but the swarm would
        // see one advertise address twice.
        refused(
            "[[hosts]]\nname = \"m\"\naddress = \"h\"\nrole = \"manager\"\n\
             [[hosts]]\nname = \"w\"\naddress = \"h\"\nport = 2222\nrole = \"worker\"\n",
            &["host 2 (w): advertise_address"],
        );
        parse_str(
            "[[hosts]]\nname = \"m\"\naddress = \"h\"\nrole = \"manager\"\n\
             [[hosts]]\nname = \"w\"\naddress = \"h\"\nport = 2222\nrole = \"worker\"\nadvertise_address = \"10.0.0.2\"\n",
        )
        .unwrap();
    }

    #[test]
    fn no_manager_or_no_hosts() {
        refused("[[hosts]]\nname = \"w\"\naddress = \"a\"\nrole = \"worker\"\n", &["hosts", "manager"]);
        refused("[defaults]\nuser = \"root\"\n", &["hosts", "no [[hosts]]"]);
        refused("hosts = []\n", &["no [[hosts]]"]);
    }

    #[test]
    fn port_out_of_range_or_not_a_number() {
        let with = |p: &str| format!("[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\nport = {p}\n");
        refused(&with("0"), &["host 1 (m): port", "out of range"]);
        refused(&with("65536"), &["host 1 (m): port", "out of range"]);
        refused(&with("-1"), &["port", "out of range"]);
        refused(&with("\"22\""), &["host 1 (m): port", "must be an integer"]);
        refused(
            "[defaults]\nport = 70000\n[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\n",
            &["defaults.port", "out of range"],
        );
    }

    #[test]
    fn unknown_keys_anywhere() {
        refused(
            "clusters = 1\n[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\n",
            &["clusters", "unknown key"],
        );
        refused(
            "[defaults]\npassword = \"x\"\n[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\n",
            &["defaults.password", "unknown key"],
        );
        refused(
            "[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\nadress = \"b\"\n",
            &["host 1 (m): adress", "unknown key"],
        );
    }

    #[test]
    fn addresses_must_be_host_names_or_ips() {
        let with = |a: &str| format!("[[hosts]]\nname = \"m\"\naddress = '{a}'\nrole = \"manager\"\n");
        for bad in ["-oProxyCommand=sh", "a b", "h;reboot", "$(reboot)", "`id`", "", "h|x", "user@h", "a..b"] {
            refused(&with(bad), &["address"]);
        }
        for good in ["192.168.99.100", "fe80::1", "node-1.example.com", "localhost", "a_b"] {
            parse_str(&with(good)).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        refused(
            "[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\nadvertise_address = \"10.0.0.1 -x\"\n",
            &["host 1 (m): advertise_address"],
        );
    }

    #[test]
    fn names_and_users_must_be_plain() {
        let name = |n: &str| format!("[[hosts]]\nname = '{n}'\naddress = \"a\"\nrole = \"manager\"\n");
        for bad in ["", "1node", "-m", "no de", "m;x", "../x", "m/x", "m$x", &"m".repeat(33)] {
            refused(&name(bad), &["host 1: name"]);
        }
        let user = |u: &str| format!("[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\nuser = '{u}'\n");
        for bad in ["-oX", "a b", "r@h", "$(id)", ""] {
            refused(&user(bad), &["host 1 (m): user"]);
        }
    }

    #[test]
    fn identity_files_resolve_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "not really a key").unwrap();
        let file = dir.path().join("hosts.toml");
        let text =
            "[defaults]\nidentity_file = \"key\"\n[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\n";
        let hosts = parse(text, &file, &env()).unwrap();
        assert_eq!(hosts[0].identity_file.as_deref(), Some(dir.path().join("key").as_path()));
        let missing = parse(&text.replace("\"key\"", "\"nokey\""), &file, &env()).unwrap_err();
        assert!(missing.to_string().contains("defaults.identity_file"), "{missing}");
        let home = Environment { home: Some(dir.path().to_path_buf()), user: Some("me".into()) };
        let hosts = parse(&text.replace("\"key\"", "\"~/key\""), Path::new("/x/hosts.toml"), &home).unwrap();
        assert_eq!(hosts[0].identity_file.as_deref(), Some(dir.path().join("key").as_path()));
    }

    #[test]
    fn labels_are_strings_outside_labs_namespace() {
        let with = |l: &str| format!("[[hosts]]\nname = \"m\"\naddress = \"a\"\nrole = \"manager\"\nlabels = {l}\n");
        refused(&with("{ \"lab.node\" = \"x\" }"), &["host 1 (m): labels"]);
        refused(&with("{ \"k\" = 1 }"), &["host 1 (m): labels.k", "must be a string"]);
    }
}
