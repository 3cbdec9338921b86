//! `cargo fuzz run beam_tcp_line`: the property is in `checks/beam_tcp_line.rs`,
//! which `dataplane/tests/fuzz_corpus.rs` also runs over the corpus.
#![no_main]

#[path = "../checks/beam_tcp_line.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
