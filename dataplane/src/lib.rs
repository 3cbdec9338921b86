//! simgate's data plane: listeners, identity lookup, the SORACOM-style
//! services, the Funnel batcher and its sinks.
#![forbid(unsafe_code)]

pub mod api;
pub mod batch;
pub mod cli;
pub mod console;
pub mod dead_letters;
pub mod ingress;
pub mod metrics;
pub mod server;
pub mod services;
pub mod sinks;
pub mod spool;
pub mod upstream;
