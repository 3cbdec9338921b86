//! `cargo fuzz run endorse_request`: the property is in `checks/endorse_request.rs`, which
//! `dataplane/tests/fuzz_corpus.rs` also runs over the corpus.
#![no_main]

#[path = "../checks/endorse_request.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
