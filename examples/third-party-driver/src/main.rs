//! `lab-example`: lab with one more driver. Every command, flag and built-in driver is lab's
//! own (`lab_cli::run`); this binary only adds the `static` driver.

// Name the driver crate: a crate nothing refers to is not linked, and its registration (a
// static the driver registry finds at startup) would silently vanish with it.
use lab_driver_example as _;

fn main() {
    std::process::exit(lab_cli::run())
}
