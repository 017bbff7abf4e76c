//! The ssh driver. Registered so that `lab drivers` lists it and `--driver ssh` is not
//! "unknown"; until its own issue lands it says so and exits 1 before anything is created.
#![deny(missing_docs)]

use lab_core::driver::NotYetImplemented;
use lab_core::{Driver, DriverContext, Result};

fn boxed(_ctx: DriverContext) -> Result<Box<dyn Driver>> {
    Ok(Box::new(NotYetImplemented { driver: "ssh" }))
}

lab_core::register_driver!(
    "ssh",
    "existing hosts that run Docker, reached over SSH (--hosts hosts.toml; not yet implemented)",
    boxed
);
