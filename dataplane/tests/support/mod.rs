//! Helpers shared by the end-to-end tests: real peers started as child
//! processes and stopped when their guard drops.
#![allow(dead_code)] // each test file uses a different subset

pub(crate) mod kinesalite;
