//! Images in and out of the cluster: the registry's HTTP API spoken over a stream through a
//! node's engine ([`distribution`]), `lab push` and `lab images` ([`push`]), `lab images rm`
//! ([`remove`]), the registry's garbage collection ([`gc`]), `lab images save` and `load`
//! (an OCI image layout on this machine, [`layout`]), and loading the images the
//! cluster itself needs onto its nodes ([`load`]).
//!
//! Neighbours: it finds the registry through [`crate::registry`] (its endpoint, its read-only
//! switch) and speaks TLS with [`crate::tls`]'s certificates; it reaches nodes through
//! [`crate::cluster`]. Nothing below it depends on it; the convergence loop loads images
//! through [`load`].

pub mod distribution;
pub mod gc;
pub mod layout;
pub mod load;
pub mod push;
pub mod remove;

pub use load::{ensure, prefetch};
