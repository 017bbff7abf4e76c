//! Finding a driver's program: `[drivers.NAME] command` (made absolute once, when the cluster
//! is made), or an executable `lab-driver-NAME` on `PATH`; and every such program on `PATH`
//! for `lab drivers`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::PROGRAM_PREFIX;
use crate::error::{Error, Result};

/// An external driver's executable, and where lab found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The driver's name (`--driver NAME`).
    pub name: String,
    /// The executable.
    pub path: PathBuf,
    /// True when `[drivers.NAME] command` named it; false when it was found on `PATH`.
    pub from_config: bool,
}

/// A driver name that can be part of a file name: letters, digits, `-`, `_`, starting with a
/// letter or digit.
pub(super) fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

pub(super) fn path_dirs() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).filter(|d| !d.as_os_str().is_empty()).collect())
        .unwrap_or_default()
}

/// The program `[drivers.NAME] command = text` names, as an absolute path: like a shell, a bare
/// name is looked up on `PATH` (`None` when no directory has it), and anything with a slash is
/// a path, relative to the current directory. The CLI records this path, not the text, so a
/// later command from another directory, or with another `PATH`, runs the same program.
pub fn resolve_command(text: &str) -> Option<PathBuf> {
    if text.contains('/') {
        Some(std::path::absolute(text).unwrap_or_else(|_| PathBuf::from(text)))
    } else {
        path_dirs().into_iter().map(|d| d.join(text)).find(|p| is_executable(p))
    }
}

/// The program for driver `name`: `[drivers.NAME] command` in its table `config` if set (bad
/// input, naming `source` and the key, when it is not an executable), else `lab-driver-NAME`
/// on `PATH`. `None` when there is neither.
pub fn find(name: &str, config: &Value, source: &str) -> Result<Option<Program>> {
    if let Some(command) = config.get("command") {
        let what = format!("{source}: [drivers.{name}] command");
        let Some(text) = command.as_str().filter(|s| !s.trim().is_empty()) else {
            return Err(Error::input(what, format!("{command} is not the path of a program")));
        };
        let Some(path) = resolve_command(text) else {
            return Err(Error::input(what, format!("{text:?} is not an executable on PATH")));
        };
        if !is_executable(&path) {
            let why = if path.exists() { "is not an executable file" } else { "does not exist" };
            return Err(Error::input(what, format!("{text:?} {why}")));
        }
        return Ok(Some(Program { name: name.to_string(), path, from_config: true }));
    }
    if !plain_name(name) {
        return Ok(None);
    }
    let file = format!("{PROGRAM_PREFIX}{name}");
    Ok(path_dirs().into_iter().map(|d| d.join(&file)).find(|p| is_executable(p)).map(|path| Program {
        name: name.to_string(),
        path,
        from_config: false,
    }))
}

/// Every `lab-driver-NAME` executable on `PATH`, by name; where two directories have one, the
/// first on `PATH` wins, as it would for a shell.
pub fn on_path() -> Vec<Program> {
    let mut found: BTreeMap<String, Program> = BTreeMap::new();
    for dir in path_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut names: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        names.sort();
        for file in names {
            let Some(name) = file.to_str().and_then(|f| f.strip_prefix(PROGRAM_PREFIX)) else { continue };
            if !plain_name(name) || found.contains_key(name) {
                continue;
            }
            let path = dir.join(&file);
            if is_executable(&path) {
                found.insert(name.to_string(), Program { name: name.to_string(), path, from_config: false });
            }
        }
    }
    found.into_values().collect()
}

/// The error for a driver name that is neither registered nor an external program: it lists
/// both kinds, so that a typo is easy to see.
pub fn unknown(name: &str) -> Error {
    let registered: Vec<&str> = crate::driver::registry().map(|m| m.keys().copied().collect()).unwrap_or_default();
    let external: Vec<String> = on_path().into_iter().map(|p| p.name).collect();
    let external = if external.is_empty() {
        format!("no {PROGRAM_PREFIX}NAME programs on PATH")
    } else {
        format!("external drivers on PATH: {}", external.join(", "))
    };
    Error::input(
        "--driver",
        format!("unknown driver {name:?}; registered drivers: {}; {external}", registered.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::super::adapter::tests::script;
    use super::super::wire::{driver_table, Limits};

    use super::*;

    #[test]
    fn lab_keys_are_checked_and_found() {
        let limits = Limits::from_config("x", &json!({ "timeout": 2.5, "create_timeout": 60 }), "lab.toml").unwrap();
        assert_eq!(limits.timeout, Duration::from_millis(2500));
        assert_eq!(limits.create_timeout, Duration::from_secs(60));
        assert_eq!(Limits::from_config("x", &Value::Null, "lab.toml").unwrap(), Limits::default());
        for bad in [json!(0), json!(-1), json!("30s")] {
            let e = Limits::from_config("x", &json!({ "timeout": bad }), "lab.toml").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().starts_with("lab.toml: [drivers.x] timeout: "), "{e}");
            assert!(e.to_string().contains(&bad.to_string()), "{e}");
        }
        assert_eq!(driver_table(&json!({ "command": "c", "timeout": 1, "a": 2 })), json!({ "a": 2 }));

        let (dir, p) = script("exit 0");
        let found = find("fake", &json!({ "command": p.path }), "lab.toml").unwrap().unwrap();
        assert_eq!(found, Program { name: "fake".into(), path: p.path.clone(), from_config: true });
        let missing = dir.path().join("nope");
        let e = find("fake", &json!({ "command": missing }), "lab.toml").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("[drivers.fake] command") && e.to_string().contains("does not exist"), "{e}");
        let e = find("fake", &json!({ "command": 3 }), "lab.toml").unwrap_err();
        assert!(e.to_string().contains("3 is not the path of a program"), "{e}");
        assert_eq!(find("../etc", &json!({}), "lab.toml").unwrap(), None, "a name with a slash is never a file");
    }
}
