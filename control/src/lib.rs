//! simgate's control plane: the model (operators, groups, subscribers,
//! credentials, sessions), the configuration file, the persistent store and
//! its REST API, RADIUS accounting, and the immutable snapshots the data
//! plane reads on its hot path.
//!
//! Codecs and policies (`radius::codec`, `radius::dedup`, the store's rules)
//! are sans-IO; the API and the RADIUS listener are thin drivers around them.
//! The data plane depends on this crate, never the reverse.
#![forbid(unsafe_code)]

pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod model;
pub mod plane;
pub mod radius;
pub mod secret_file;
pub mod snapshot;
pub mod store;

pub use config::{Config, ConfigError};
pub use model::*;
pub use plane::ControlPlane;
pub use snapshot::{Identity, IdentityError, Session, SessionTable, Snapshot, SnapshotHandle};
