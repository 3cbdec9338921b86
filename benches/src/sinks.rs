//! The `funnel-sinks` benchmark's helpers: each Funnel sink against its
//! emulator, simgate in front versus a direct client loop.
//!
//! * `sink-setup` — creates what the bench group's destination needs at its
//!   emulator (a Kinesis stream on kinesalite; an S3 bucket and a Firehose
//!   delivery stream on moto); nothing for the others.
//! * `sink-direct` — the baseline: simgate's own sink for the bench group,
//!   built from the same configuration file, driven in a loop of full
//!   batches with Funnel's `max_in_flight` requests in flight, no ingress and
//!   no queue in front. Prints `delivered=… seconds=… rate=…`.
//! * `sink-peer` — an HTTPS receiver for the services with no emulator
//!   installable here (Event Hubs, Pub/Sub with its token endpoint, the
//!   generic HTTPS sink): it answers each request as the service does on
//!   success and counts records. Prints `url=https://127.0.0.1:PORT`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use simgate::sinks::factory::{DefaultSinkFactory, SinkFactory as _};
use simgate::sinks::{RecordOutcome, Sink, SinkRecord};
use simgate::upstream::Upstream;
use simgate_control::{Config, CredentialKind, SinkService};

#[derive(Debug, clap::Args)]
pub(crate) struct SetupArgs {
    /// The simgate configuration `simgate-config` wrote (group `bench`).
    #[arg(long)]
    config: PathBuf,
    /// Shards of the Kinesis stream.
    #[arg(long, default_value_t = 4)]
    shards: u32,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DirectArgs {
    /// The simgate configuration `simgate-config` wrote (group `bench`).
    #[arg(long)]
    config: PathBuf,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured window, seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload bytes in each record's envelope.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Batches in flight; 0: the configuration's `[funnel] max_in_flight`.
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
}

#[derive(Debug, clap::Args)]
pub(crate) struct PeerArgs {
    /// eventhubs, pubsub or https.
    #[arg(long)]
    service: String,
    /// Server certificate (PEM), e.g. scripts/certs.sh's server.crt.
    #[arg(long)]
    cert: PathBuf,
    #[arg(long)]
    key: PathBuf,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

/// The bench group's Funnel destination and credential.
fn bench_group(
    config: &Config,
) -> anyhow::Result<(
    simgate_control::FunnelConfig,
    Option<simgate_control::Credential>,
)> {
    let group = config
        .groups
        .iter()
        .find(|g| g.id.as_str() == "bench")
        .context("the configuration has no group \"bench\"")?;
    let funnel = group.funnel.clone().context("group bench has no Funnel")?;
    let credential = config
        .credentials
        .iter()
        .find(|c| c.id == funnel.credentials_id)
        .cloned();
    Ok((funnel, credential))
}

fn read_config(path: &PathBuf) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Config::parse(&text)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn setup(a: &SetupArgs) -> anyhow::Result<()> {
    let config = read_config(&a.config)?;
    let (funnel, credential) = bench_group(&config)?;
    let d = &funnel.destination;
    let endpoint = || {
        d.endpoint
            .clone()
            .context("the bench destination needs an emulator endpoint")
    };
    let aws = match credential.map(|c| c.kind) {
        Some(CredentialKind::Aws(aws)) => Some(aws),
        _ => None,
    };
    runtime()?.block_on(async {
        match d.service {
            SinkService::Kinesis => {
                let (region, stream) =
                    simgate::sinks::kinesis::parse_resource_url(&d.resource_url)?;
                let admin = simgate::sinks::kinesis::admin::KinesisAdmin::new(
                    &endpoint()?,
                    region,
                    aws.context("kinesis needs AWS credentials")?,
                    Duration::from_secs(10),
                )?;
                admin.create_stream(&stream, a.shards).await?;
                admin.wait_active(&stream).await?;
            }
            SinkService::Firehose => {
                let (region, stream) =
                    simgate::sinks::firehose::parse_resource_url(&d.resource_url)?;
                let aws = aws.context("firehose needs AWS credentials")?;
                let endpoint = endpoint()?;
                create_bucket(&endpoint, "bench-records").await?;
                let api = simgate::sinks::aws::AwsJsonClient::new(
                    &Upstream::shared_default()?,
                    &endpoint,
                    region,
                    "firehose",
                    &aws,
                    Duration::from_secs(10),
                )?;
                let body = serde_json::json!({
                    "DeliveryStreamName": stream,
                    "DeliveryStreamType": "DirectPut",
                    "ExtendedS3DestinationConfiguration": {
                        "RoleARN": "arn:aws:iam::123456789012:role/firehose",
                        "BucketARN": "arn:aws:s3:::bench-records",
                        "BufferingHints": {"SizeInMBs": 64, "IntervalInSeconds": 900},
                    },
                });
                let resp = api
                    .call(
                        "Firehose_20150804.CreateDeliveryStream",
                        Bytes::from(serde_json::to_vec(&body)?),
                        1 << 20,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("CreateDeliveryStream: {e}"))?;
                anyhow::ensure!(
                    resp.status.is_success(),
                    "CreateDeliveryStream: {} {}",
                    resp.status,
                    String::from_utf8_lossy(&resp.body)
                );
            }
            _ => {}
        }
        println!("ready service={}", d.service.as_str());
        anyhow::Ok(())
    })
}

/// `PUT /{bucket}` on moto's S3 (moto wants a SigV4-shaped Authorization
/// header, and does not check it).
async fn create_bucket(endpoint: &str, bucket: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let authority = endpoint
        .strip_prefix("http://")
        .context("moto's endpoint is http://")?
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(authority).await?;
    let req = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 0\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIDBENCH/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    anyhow::ensure!(
        resp.starts_with(b"HTTP/1.1 200") || resp.starts_with(b"HTTP/1.0 200"),
        "CreateBucket: {}",
        String::from_utf8_lossy(&resp)
    );
    Ok(())
}

/// One record as Funnel would make it: the envelope around a JSON payload
/// of `size` bytes.
fn envelope(i: u64, size: usize, resource_url: &str, service: &str) -> Bytes {
    let imsi = format!("0010100000{:05}", 1 + i % 1000);
    let head = format!(r#"{{"seq":{i},"pad":""#);
    let pad = size.saturating_sub(head.len() + 2);
    let payload = format!("{head}{}\"}}", "x".repeat(pad));
    Bytes::from(format!(
        r#"{{"operatorId":"OP0000000001","credentialsId":"bench","destination":{{"provider":"aws","service":"{service}","resourceUrl":"{resource_url}"}},"sourceProtocol":"udp","timestamp":1764720000000,"imsi":"{imsi}","imei":null,"payloads":{payload}}}"#
    ))
}

pub(crate) fn direct(a: &DirectArgs) -> anyhow::Result<()> {
    let config = read_config(&a.config)?;
    let (funnel, credential) = bench_group(&config)?;
    let concurrency = if a.concurrency == 0 {
        config.funnel.max_in_flight
    } else {
        a.concurrency
    };
    runtime()?.block_on(async {
        let upstream = Upstream::new(&config.upstream)?;
        let sink: Arc<dyn Sink> = DefaultSinkFactory::new(upstream)
            .build(
                &funnel.destination,
                credential.as_ref(),
                Duration::from_millis(config.funnel.request_timeout_ms),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let limits = sink.limits();
        let service = funnel.destination.service.as_str();
        let sample = envelope(0, a.size, &funnel.destination.resource_url, service);
        let per_batch = limits
            .max_records
            .min(limits.max_bytes / sample.len().max(1))
            .max(1);
        let delivered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(a.warmup + a.duration);
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let (sink, delivered, failed, measuring) = (
                Arc::clone(&sink),
                Arc::clone(&delivered),
                Arc::clone(&failed),
                Arc::clone(&measuring),
            );
            let resource_url = funnel.destination.resource_url.clone();
            let size = a.size;
            tasks.push(tokio::spawn(async move {
                let mut seq = (t as u64) << 40;
                while Instant::now() < end {
                    let batch: Vec<SinkRecord> = (0..per_batch)
                        .map(|_| {
                            seq += 1;
                            SinkRecord {
                                partition_key: Arc::from(format!("0010100000{:05}", 1 + seq % 1000)),
                                data: envelope(seq, size, &resource_url, service),
                            }
                        })
                        .collect();
                    let outcome = sink.put_batch(&batch).await;
                    let ok = (0..batch.len())
                        .filter(|&i| outcome.record(i) == RecordOutcome::Delivered)
                        .count() as u64;
                    if measuring.load(Ordering::Relaxed) {
                        delivered.fetch_add(ok, Ordering::Relaxed);
                        failed.fetch_add(batch.len() as u64 - ok, Ordering::Relaxed);
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
        measuring.store(true, Ordering::Relaxed);
        let window = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
        measuring.store(false, Ordering::Relaxed);
        let secs = window.elapsed().as_secs_f64();
        let (d, f) = (delivered.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        for t in tasks {
            let _ = t.await;
        }
        println!(
            "delivered={d} failed={f} seconds={secs:.3} rate={:.1} batch={per_batch} concurrency={concurrency}",
            d as f64 / secs
        );
        anyhow::Ok(())
    })
}

pub(crate) fn peer(a: &PeerArgs) -> anyhow::Result<()> {
    let service: &'static str = match a.service.as_str() {
        "eventhubs" => "eventhubs",
        "pubsub" => "pubsub",
        "https" => "https",
        other => bail!("sink-peer --service must be eventhubs, pubsub or https, not {other:?}"),
    };
    let mut tls = crate::tls_server::config(&a.cert, &a.key)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let records = Arc::new(AtomicU64::new(0));
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("url=https://{}", listener.local_addr()?);
        crate::tls_server::accept_until(&listener, a.max_seconds, |tcp| {
            let (acceptor, records) = (acceptor.clone(), Arc::clone(&records));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let records = Arc::clone(&records);
                    async move {
                        let path = req.uri().path().to_owned();
                        let body = req.into_body().collect().await?.to_bytes();
                        let (status, answer) = answer(service, &path, &body, &records);
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(answer)));
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        })
        .await
    })
}

/// The service's success answer to one request, counting its records.
fn answer(service: &str, path: &str, body: &[u8], records: &AtomicU64) -> (u16, String) {
    let count_array = || {
        serde_json::from_slice::<Vec<serde_json::Value>>(body)
            .map(|v| v.len())
            .unwrap_or(1)
    };
    match service {
        "pubsub" if path.ends_with("/token") => (
            200,
            r#"{"access_token":"bench-token","expires_in":3600,"token_type":"Bearer"}"#.into(),
        ),
        "pubsub" => {
            let n = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["messages"].as_array().map(Vec::len))
                .unwrap_or(0);
            let start = records.fetch_add(n as u64, Ordering::Relaxed);
            let ids: Vec<String> = (0..n as u64)
                .map(|i| format!("\"{}\"", start + i))
                .collect();
            (200, format!(r#"{{"messageIds":[{}]}}"#, ids.join(",")))
        }
        "eventhubs" => {
            records.fetch_add(count_array() as u64, Ordering::Relaxed);
            (201, String::new())
        }
        _ => {
            records.fetch_add(count_array() as u64, Ordering::Relaxed);
            (200, String::new())
        }
    }
}
