//! Helpers shared by the end-to-end tests: real peers started as child
//! processes and stopped when their guard drops.
#![allow(dead_code)] // each test file uses a different subset

pub(crate) mod certs;
pub(crate) mod etcd;
pub(crate) mod https_peer;
pub(crate) mod kinesalite;
pub(crate) mod mosquitto;
pub(crate) mod moto;
pub(crate) mod nginx;
pub(crate) mod postgres;
pub(crate) mod process;
pub(crate) mod tls_echo;
