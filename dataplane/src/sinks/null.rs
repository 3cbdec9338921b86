//! A sink that accepts everything and keeps nothing: for benchmarks that
//! measure simgate without a cloud behind it (`service = "discard"`).

use super::{BatchLimits, BatchOutcome, RecordOutcome, Sink, SinkFuture, SinkRecord};

#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn put_batch<'a>(&'a self, records: &'a [SinkRecord]) -> SinkFuture<'a> {
        let n = records.len();
        Box::pin(async move { BatchOutcome::PerRecord(vec![RecordOutcome::Delivered; n]) })
    }

    fn limits(&self) -> BatchLimits {
        super::kinesis::LIMITS
    }

    fn kind(&self) -> &'static str {
        "null"
    }
}
