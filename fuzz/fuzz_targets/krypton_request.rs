//! `cargo fuzz run krypton_request`: the property is in `checks/krypton_request.rs`, which
//! `dataplane/tests/fuzz_corpus.rs` also runs over the corpus.
#![no_main]

#[path = "../checks/krypton_request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
