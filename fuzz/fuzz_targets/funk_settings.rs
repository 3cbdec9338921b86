//! `cargo fuzz run funk_settings`: the property is in `checks/funk_settings.rs`, which
//! `dataplane/tests/fuzz_corpus.rs` also runs over the corpus.
#![no_main]

#[path = "../checks/funk_settings.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
