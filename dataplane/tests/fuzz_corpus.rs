//! Replays the fuzz corpora under plain `cargo test` (no libFuzzer): every
//! file in `fuzz/corpus/<target>/`, and in `fuzz/artifacts/<target>/` when a
//! fuzzing run has left crashes there, goes through the same property check
//! as the fuzz target. The checks live in `fuzz/checks/` and are compiled into
//! both.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/checks/api_json.rs"]
mod api_json;
#[path = "../../fuzz/checks/beam_mqtt_codec.rs"]
mod beam_mqtt_codec;
#[path = "../../fuzz/checks/beam_tcp_line.rs"]
mod beam_tcp_line;
#[path = "../../fuzz/checks/config_toml.rs"]
mod config_toml;
#[path = "../../fuzz/checks/endorse_request.rs"]
mod endorse_request;
#[path = "../../fuzz/checks/funk_settings.rs"]
mod funk_settings;
#[path = "../../fuzz/checks/funnel_envelope.rs"]
mod funnel_envelope;
#[path = "../../fuzz/checks/funnel_sinks.rs"]
mod funnel_sinks;
#[path = "../../fuzz/checks/harvest_files_path.rs"]
mod harvest_files_path;
#[path = "../../fuzz/checks/harvest_query.rs"]
mod harvest_query;
#[path = "../../fuzz/checks/http_entry.rs"]
mod http_entry;
#[path = "../../fuzz/checks/kinesis_response.rs"]
mod kinesis_response;
#[path = "../../fuzz/checks/krypton_request.rs"]
mod krypton_request;
#[path = "../../fuzz/checks/metadata_path.rs"]
mod metadata_path;
#[path = "../../fuzz/checks/radius_codec.rs"]
mod radius_codec;
#[path = "../../fuzz/checks/spool_segment.rs"]
mod spool_segment;
#[path = "../../fuzz/checks/unified_settings.rs"]
mod unified_settings;

fn fuzz_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    dir.canonicalize().unwrap_or(dir)
}

/// The files of `dir`, sorted; an absent directory has none.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| {
            e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `check` on every seed of `target` and every crash artifact, and
/// fails naming each input that broke the property.
fn replay(target: &str, check: fn(&[u8])) {
    let corpus = fuzz_dir().join("corpus").join(target);
    let seeds = files_in(&corpus);
    assert!(
        !seeds.is_empty(),
        "{} is missing or empty: every fuzz target needs seeds",
        corpus.display()
    );
    let artifacts = files_in(&fuzz_dir().join("artifacts").join(target));

    let mut failed = Vec::new();
    for path in seeds.iter().chain(&artifacts) {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failed.push(format!("{}: {message}", path.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: the property fails for\n  {}",
        failed.join("\n  ")
    );
    eprintln!(
        "{target}: {} seeds, {} artifacts replayed",
        seeds.len(),
        artifacts.len()
    );
}

#[test]
fn funnel_envelope_corpus() {
    replay("funnel_envelope", funnel_envelope::check);
}

#[test]
fn config_toml_corpus() {
    replay("config_toml", config_toml::check);
}

#[test]
fn kinesis_response_corpus() {
    replay("kinesis_response", kinesis_response::check);
}

#[test]
fn harvest_query_corpus() {
    replay("harvest_query", harvest_query::check);
}

#[test]
fn krypton_request_corpus() {
    replay("krypton_request", krypton_request::check);
}

#[test]
fn radius_codec_corpus() {
    replay("radius_codec", radius_codec::check);
}

#[test]
fn spool_segment_corpus() {
    replay("spool_segment", spool_segment::check);
}

#[test]
fn beam_tcp_line_corpus() {
    replay("beam_tcp_line", beam_tcp_line::check);
}

#[test]
fn beam_mqtt_codec_corpus() {
    replay("beam_mqtt_codec", beam_mqtt_codec::check);
}

#[test]
fn funnel_sinks_corpus() {
    replay("funnel_sinks", funnel_sinks::check);
}

#[test]
fn endorse_request_corpus() {
    replay("endorse_request", endorse_request::check);
}

#[test]
fn funk_settings_corpus() {
    replay("funk_settings", funk_settings::check);
}

#[test]
fn metadata_path_corpus() {
    replay("metadata_path", metadata_path::check);
}

#[test]
fn harvest_files_path_corpus() {
    replay("harvest_files_path", harvest_files_path::check);
}

#[test]
fn unified_settings_corpus() {
    replay("unified_settings", unified_settings::check);
}

#[test]
fn http_entry_corpus() {
    replay("http_entry", http_entry::check);
}

#[test]
fn api_json_corpus() {
    replay("api_json", api_json::check);
}
