//! The few Kinesis control and read calls that tests and tools need: create a
//! stream, wait for it, and read every record back over all its shards.
//! Not on the hot path; uses the sink's signing client.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use simgate_control::AwsCredentials;

use super::client::KinesisConfigError;
use crate::sinks::aws::{AwsJsonClient, AwsResponse};
use crate::sinks::SinkError;
use crate::upstream::Upstream;

/// GetRecords answers up to 10 MiB of data, base64-encoded in JSON.
const MAX_ADMIN_RESPONSE: usize = 32 << 20;

/// How long [`KinesisAdmin::wait_active`] waits.
const WAIT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// One page of GetRecords: `(partition key, data)` pairs, the next shard
/// iterator (`None` once a closed shard is exhausted) and `MillisBehindLatest`.
pub type GetRecordsPage = (Vec<(String, Vec<u8>)>, Option<String>, u64);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The request failed or Kinesis refused it.
    #[error("{action}: {error}")]
    Request {
        action: &'static str,
        error: SinkError,
    },
    #[error("{action}: unexpected response: {message}")]
    BadResponse {
        action: &'static str,
        message: String,
    },
    #[error("stream {stream:?} not ACTIVE after {waited:?} (last status {status:?})")]
    NotActive {
        stream: String,
        status: String,
        waited: Duration,
    },
}

/// A Kinesis control-plane client (create, describe, list, read).
#[derive(Debug, Clone)]
pub struct KinesisAdmin {
    api: AwsJsonClient,
}

impl KinesisAdmin {
    /// A client with the process-wide default [`Upstream`].
    pub fn new(
        endpoint: &str,
        region: String,
        credentials: AwsCredentials,
        request_timeout: Duration,
    ) -> Result<Self, KinesisConfigError> {
        let upstream = Upstream::shared_default()?;
        Ok(Self {
            api: AwsJsonClient::new(
                &upstream,
                endpoint,
                region,
                "kinesis",
                &credentials,
                request_timeout,
            )?,
        })
    }

    /// Calls `action` with a JSON body and returns the response body of a
    /// 2xx answer.
    async fn call(
        &self,
        action: &'static str,
        body: &serde_json::Value,
    ) -> Result<Bytes, AdminError> {
        let target = format!("Kinesis_20131202.{action}");
        let body = Bytes::from(body.to_string());
        let resp: AwsResponse = self
            .api
            .call(&target, body, MAX_ADMIN_RESPONSE)
            .await
            .map_err(|error| AdminError::Request { action, error })?;
        if resp.status.is_success() {
            Ok(resp.body)
        } else {
            Err(AdminError::Request {
                action,
                error: resp.error(),
            })
        }
    }

    async fn call_json<T: for<'de> Deserialize<'de>>(
        &self,
        action: &'static str,
        body: &serde_json::Value,
    ) -> Result<T, AdminError> {
        let bytes = self.call(action, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| AdminError::BadResponse {
            action,
            message: e.to_string(),
        })
    }

    /// CreateStream in provisioned mode. The stream starts `CREATING`; see
    /// [`Self::wait_active`].
    pub async fn create_stream(&self, name: &str, shard_count: u32) -> Result<(), AdminError> {
        self.call(
            "CreateStream",
            &json!({ "StreamName": name, "ShardCount": shard_count }),
        )
        .await
        .map(drop)
    }

    /// The stream's status (`CREATING`, `ACTIVE`, …).
    pub async fn stream_status(&self, name: &str) -> Result<String, AdminError> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "StreamDescriptionSummary")]
            summary: Summary,
        }
        #[derive(Deserialize)]
        struct Summary {
            #[serde(rename = "StreamStatus")]
            status: String,
        }
        let out: Out = self
            .call_json("DescribeStreamSummary", &json!({ "StreamName": name }))
            .await?;
        Ok(out.summary.status)
    }

    /// Polls until the stream is `ACTIVE` (at most a minute).
    pub async fn wait_active(&self, name: &str) -> Result<(), AdminError> {
        let start = Instant::now();
        loop {
            let status = self.stream_status(name).await?;
            if status == "ACTIVE" {
                return Ok(());
            }
            if start.elapsed() > WAIT_ACTIVE_TIMEOUT {
                return Err(AdminError::NotActive {
                    stream: name.to_owned(),
                    status,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ids of all shards of the stream, open and closed.
    pub async fn list_shards(&self, name: &str) -> Result<Vec<String>, AdminError> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "Shards")]
            shards: Vec<Shard>,
            #[serde(rename = "NextToken")]
            next_token: Option<String>,
        }
        #[derive(Deserialize)]
        struct Shard {
            #[serde(rename = "ShardId")]
            id: String,
        }
        let mut ids = Vec::new();
        let mut request = json!({ "StreamName": name });
        loop {
            let out: Out = self.call_json("ListShards", &request).await?;
            ids.extend(out.shards.into_iter().map(|s| s.id));
            match out.next_token {
                // With a NextToken, StreamName must not be sent.
                Some(token) => request = json!({ "NextToken": token }),
                None => return Ok(ids),
            }
        }
    }

    /// A shard iterator of `iterator_type` (`TRIM_HORIZON`, `LATEST`).
    pub async fn get_shard_iterator(
        &self,
        stream: &str,
        shard: &str,
        iterator_type: &str,
    ) -> Result<String, AdminError> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "ShardIterator")]
            iterator: String,
        }
        let out: Out = self
            .call_json(
                "GetShardIterator",
                &json!({ "StreamName": stream, "ShardId": shard, "ShardIteratorType": iterator_type }),
            )
            .await?;
        Ok(out.iterator)
    }

    /// One GetRecords call: up to `limit` records (Kinesis allows 10,000).
    pub async fn get_records(
        &self,
        iterator: &str,
        limit: u32,
    ) -> Result<GetRecordsPage, AdminError> {
        #[derive(Deserialize)]
        struct Out {
            #[serde(rename = "Records")]
            records: Vec<Record>,
            #[serde(rename = "NextShardIterator")]
            next: Option<String>,
            #[serde(rename = "MillisBehindLatest", default)]
            millis_behind: u64,
        }
        #[derive(Deserialize)]
        struct Record {
            #[serde(rename = "PartitionKey")]
            partition_key: String,
            #[serde(rename = "Data")]
            data: String,
        }
        const ACTION: &str = "GetRecords";
        let out: Out = self
            .call_json(
                ACTION,
                &json!({ "ShardIterator": iterator, "Limit": limit }),
            )
            .await?;
        let engine = &base64::engine::general_purpose::STANDARD;
        let records = out
            .records
            .into_iter()
            .map(|r| {
                let data = engine
                    .decode(&r.data)
                    .map_err(|e| AdminError::BadResponse {
                        action: ACTION,
                        message: format!("record Data is not base64: {e}"),
                    })?;
                Ok((r.partition_key, data))
            })
            .collect::<Result<Vec<_>, AdminError>>()?;
        Ok((records, out.next, out.millis_behind))
    }

    /// Every record currently in the stream, read from `TRIM_HORIZON` over
    /// all shards (shard by shard; order within a shard is preserved).
    pub async fn read_all(&self, stream: &str) -> Result<Vec<(String, Vec<u8>)>, AdminError> {
        let mut all = Vec::new();
        for shard in self.list_shards(stream).await? {
            let mut iterator = Some(
                self.get_shard_iterator(stream, &shard, "TRIM_HORIZON")
                    .await?,
            );
            while let Some(it) = iterator.take() {
                let (records, next, millis_behind) = self.get_records(&it, 10_000).await?;
                let caught_up = records.is_empty() && millis_behind == 0;
                all.extend(records);
                if !caught_up {
                    iterator = next;
                }
            }
        }
        Ok(all)
    }
}
