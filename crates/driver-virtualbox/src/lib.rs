//! The virtualbox driver. Registered so that `lab drivers` lists it and `--driver virtualbox` is not
//! "unknown"; until its own issue lands it says so and exits 1 before anything is created.
#![deny(missing_docs)]

use lab_core::driver::NotYetImplemented;
use lab_core::{Driver, DriverContext, Result};

fn boxed(_ctx: DriverContext) -> Result<Box<dyn Driver>> {
    Ok(Box::new(NotYetImplemented { driver: "virtualbox" }))
}

lab_core::register_driver!(
    "virtualbox",
    "VirtualBox machines made with docker-machine, as in the seed procedure (not yet implemented)",
    boxed
);
