//! SORACOM Air Metadata (HTTP Host `metadata.*` on the devices' listener):
//! a SIM reads its own subscriber record, one field of it, its group's
//! `userdata`, and changes its own tags, with no credentials but its
//! source address.
//!
//! [`route`] is the sans-IO part (paths, the group's `SoracomAir`
//! `metadata` settings, refusals, field values); [`handler`] does the I/O
//! (identity, the body, the control plane's mutation, the answer).

pub mod handler;
pub mod route;

use std::sync::Arc;

use simgate_control::ControlPlane;

pub use handler::serve;

/// What the Metadata service needs beyond the other services: the control
/// plane, for the subscriber's stored record and the tag mutations (the
/// REST API's path: one durable commit, then the snapshot swapped).
pub struct Metadata {
    plane: Arc<ControlPlane>,
}

impl Metadata {
    pub fn new(plane: Arc<ControlPlane>) -> Self {
        Self { plane }
    }
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata").finish_non_exhaustive()
    }
}
