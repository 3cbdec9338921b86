//! `cargo fuzz run api_json`: the property is in `checks/api_json.rs`, which
//! `dataplane/tests/fuzz_corpus.rs` also runs over the corpus.
#![no_main]

#[path = "../checks/api_json.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
