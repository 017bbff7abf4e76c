//! The plugin's own flag, with no line of lab's CLI changed: `lab-example up --help` shows
//! `--static-timeout`, a cluster of another driver refuses it (exit 2 naming the flag and the
//! driver), and `lab-example drivers --long` lists the driver's settings.

use std::process::Command;

fn lab(args: &[&str]) -> std::process::Output {
    let state = tempfile_dir();
    Command::new(env!("CARGO_BIN_EXE_lab-example"))
        .args(args)
        .env("XDG_STATE_HOME", &state)
        .env_remove("LAB_DRIVER")
        .output()
        .expect("run lab-example")
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-example-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_plugins_flag_is_lab_s_flag() {
    let help = lab(&["up", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--static-timeout <N>") && help.contains("[static driver]"), "{help}");

    let out = lab(&["plan", "--cluster", "flagtest", "--driver", "docker", "--static-timeout", "5"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--static-timeout") && stderr.contains("static driver"), "{stderr}");

    let out = lab(&["plan", "--cluster", "flagtest", "--driver", "static", "--static-timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "a non-number is bad input");

    let long = lab(&["drivers", "--long"]);
    let long = String::from_utf8_lossy(&long.stdout);
    assert!(long.contains("timeout") && long.contains("--static-timeout"), "{long}");
}
