//! A fleet of simgate nodes sharing their control state through etcd
//! (`[cluster] etcd`): the client ([`etcd`]), where things live
//! ([`keys`]), the store the control plane writes through ([`store`]) and
//! the RADIUS sessions every node sees ([`sessions`]). The control plane's
//! side (opening, the watch) is in `plane/cluster.rs`.

pub mod etcd;
pub(crate) mod keys;
pub(crate) mod sessions;
pub mod store;

pub use store::ClusterStatus;
