//! One cluster as every area sees it: what is wanted of it ([`Desired`]), the steps that change
//! it ([`Step`]), and the seam through which the areas reach its nodes ([`Nodes`]): their
//! engines, a manager of the swarm, commands run on them ([`probe`]), the local engine images
//! come from ([`ImageSource`]), and where progress goes ([`Progress`]).
//!
//! Neighbours: below it, the driver API ([`crate::driver`]), the topology and the state on
//! disk ([`crate::state`]); above it, every area that works on nodes (swarm, tls, registry,
//! images) and the convergence loop ([`crate::converge`]) that implements [`Nodes`]. It depends
//! on none of them, which is what keeps the areas from depending on each other through it.

use std::time::Duration;

mod desired;
mod local;
mod nodes;
pub mod probe;
mod progress;
mod step;

pub use desired::{Desired, ModeRequest};
pub use local::{local_host, ImageSource, Unreachable};
pub use nodes::Nodes;
pub use progress::{Progress, Silent};
pub use step::Step;

/// Timeout for one Docker API request (image transfers included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
