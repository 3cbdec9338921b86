//! The Kinesis sink against a real Kinesis API (kinesalite): every record of
//! a full batch arrives, over all shards, exactly as sent.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use simgate::sinks::kinesis::{KinesisAdmin, KinesisSink, LIMITS};
use simgate::sinks::{BatchOutcome, FailureKind, RecordOutcome, Sink, SinkRecord};
use support::kinesalite::Kinesalite;

const TIMEOUT: Duration = Duration::from_secs(10);

fn admin(k: &Kinesalite) -> KinesisAdmin {
    KinesisAdmin::new(
        &k.endpoint(),
        Kinesalite::REGION.into(),
        Kinesalite::credentials(),
        TIMEOUT,
    )
    .unwrap()
}

fn sink(k: &Kinesalite, stream: &str) -> KinesisSink {
    KinesisSink::new(
        &k.endpoint(),
        Kinesalite::REGION.into(),
        stream.into(),
        Kinesalite::credentials(),
        TIMEOUT,
    )
    .unwrap()
}

#[tokio::test]
async fn full_batch_is_delivered_over_all_shards() {
    let k = Kinesalite::start();
    let admin = admin(&k);
    admin.create_stream("devices", 2).await.unwrap();
    admin.wait_active("devices").await.unwrap();
    let shards = admin.list_shards("devices").await.unwrap();
    assert_eq!(shards.len(), 2, "{shards:?}");

    // A full batch: distinct IMSI-like keys spread over both shards, and
    // payloads of assorted sizes including bytes JSON would have to escape.
    let records: Vec<SinkRecord> = (0..LIMITS.max_records)
        .map(|i| {
            let mut data =
                format!(r#"{{"imsi":"44010{i:010}","seq":{i},"s":"\"\\\n"}}"#).into_bytes();
            data.extend((0..(i % 97) as u8).map(|b| b.wrapping_mul(31)));
            SinkRecord {
                partition_key: format!("44010{i:010}").into(),
                data: Bytes::from(data),
            }
        })
        .collect();

    let sink = sink(&k, "devices");
    assert_eq!(sink.kind(), "kinesis");
    let outcome = sink.put_batch(&records).await;
    match &outcome {
        BatchOutcome::PerRecord(v) => {
            assert_eq!(v.len(), records.len());
            for (i, o) in v.iter().enumerate() {
                assert_eq!(*o, RecordOutcome::Delivered, "record {i}");
            }
        }
        BatchOutcome::Failed(e) => panic!("batch failed: {e}"),
    }

    let sent: BTreeSet<(String, Vec<u8>)> = records
        .iter()
        .map(|r| (r.partition_key.to_string(), r.data.to_vec()))
        .collect();
    assert_eq!(sent.len(), records.len(), "test records must be distinct");

    // Read back shard by shard with the low-level calls, checking that both
    // shards got some of the records.
    let mut got = Vec::new();
    for shard in &shards {
        let mut iterator = admin
            .get_shard_iterator("devices", shard, "TRIM_HORIZON")
            .await
            .unwrap();
        let mut in_shard = 0;
        loop {
            let (page, next, millis_behind) = admin.get_records(&iterator, 100).await.unwrap();
            let done = page.is_empty() && millis_behind == 0;
            in_shard += page.len();
            got.extend(page);
            match next {
                Some(n) if !done => iterator = n,
                _ => break,
            }
        }
        assert!(in_shard > 0, "shard {shard} got no records");
    }
    assert_eq!(got.len(), records.len(), "no record lost or duplicated");
    let got: BTreeSet<_> = got.into_iter().collect();
    assert_eq!(got, sent);

    // The convenience reader sees the same.
    let all: BTreeSet<_> = admin
        .read_all("devices")
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(all, sent);
}

#[tokio::test]
async fn missing_stream_fails_permanently() {
    let k = Kinesalite::start();
    let sink = sink(&k, "no-such-stream");
    let records = [SinkRecord {
        partition_key: "440101234567890".into(),
        data: Bytes::from_static(b"{}"),
    }];
    match sink.put_batch(&records).await {
        BatchOutcome::Failed(e) => {
            assert_eq!(e.kind, FailureKind::Permanent, "{e}");
            assert_eq!(e.reason, "resource_not_found", "{e}");
            assert!(e.message.contains("ResourceNotFoundException"), "{e}");
        }
        other => panic!("expected a failed batch, got {other:?}"),
    }
}

#[tokio::test]
async fn connection_is_reused_across_batches() {
    // Many sequential batches over one sink: exercises the keep-alive pool
    // (a stale pooled connection would show up as a transport error).
    let k = Kinesalite::start();
    let admin = admin(&k);
    admin.create_stream("reuse", 1).await.unwrap();
    admin.wait_active("reuse").await.unwrap();
    let sink = sink(&k, "reuse");
    for i in 0..20 {
        let records = [SinkRecord {
            partition_key: format!("k{i}").into(),
            data: Bytes::from(format!("r{i}")),
        }];
        assert_eq!(
            sink.put_batch(&records).await,
            BatchOutcome::PerRecord(vec![RecordOutcome::Delivered]),
            "batch {i}"
        );
    }
    assert_eq!(admin.read_all("reuse").await.unwrap().len(), 20);
}
