//! `cargo fuzz run beam_mqtt_codec`: the property is in `checks/beam_mqtt_codec.rs`,
//! which `dataplane/tests/fuzz_corpus.rs` also runs over the corpus.
#![no_main]

#[path = "../checks/beam_mqtt_codec.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
