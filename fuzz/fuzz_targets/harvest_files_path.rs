//! `cargo fuzz run harvest_files_path`: the property is in
//! `checks/harvest_files_path.rs`, which `dataplane/tests/fuzz_corpus.rs`
//! also runs over the corpus.
#![no_main]

#[path = "../checks/harvest_files_path.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
