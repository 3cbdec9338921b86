//! `cargo fuzz run http_entry`: the property is in `checks/http_entry.rs`, which
//! `dataplane/tests/fuzz_corpus.rs` also runs over the corpus.
#![no_main]

#[path = "../checks/http_entry.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
