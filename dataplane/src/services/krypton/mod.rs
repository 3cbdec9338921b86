//! SORACOM Krypton (HTTP Host `krypton.*` on the devices' listener): a SIM
//! with no credentials but its source address asks for some, and gets a
//! device certificate and private key issued by simgate's CA, bound to its
//! IMSI (subject `CN={IMSI}`, SAN `urn:imsi:{IMSI}`), with the CA
//! certificate, the host its group names and its client id; a
//! registration record is kept per SIM.
//!
//! The X.509 provider mirrors SORACOM's two shapes:
//!
//! * `POST /v1/provisioning/x509/bootstrap` → the credentials at once (as
//!   `/v1/provisioning/aws/iot/bootstrap`);
//! * `POST /v1/provisioning/x509/register` → `{"operationId"}`, then
//!   `GET /v1/provisioning/x509/registrations/{operationId}` → the
//!   credentials (as `/v1/provisioning/azure/iot/register`), for
//!   [`request::OPERATION_TTL_MS`], to the same SIM only.
//!
//! [`request`] is the sans-IO part (paths, settings, body, answer,
//! operations); [`der`] reads the CA certificate; [`ca`] loads or makes
//! the CA and issues; [`registrations`] keeps the records; [`handler`] is
//! the device-side I/O; [`api`] the operator's view on the control API.

pub mod api;
pub mod ca;
pub mod der;
pub mod handler;
pub mod registrations;
pub mod request;

use std::path::Path;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::Value;
use simgate_control::config::KryptonSettings;
use simgate_control::Imsi;

pub use handler::serve;

use crate::metrics::ReasonLabels;
use ca::{CaError, CaSource, CaStore};
use registrations::{RecordError, Registration, Registrations};
use request::{Issued, KeyAlgorithm, OperationId, Operations, PROVIDER};

/// `simgate_krypton_issued_total` and
/// `simgate_krypton_refused_total{reason}` (registered by
/// [`crate::metrics::Metrics::register_krypton`]).
#[derive(Debug, Default)]
pub struct KryptonMetrics {
    pub issued: Counter,
    pub refused: Family<ReasonLabels, Counter>,
}

impl KryptonMetrics {
    /// Counts and logs one refused request.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
        tracing::debug!(reason, "krypton request refused");
    }
}

/// Why a SIM could not be provisioned (the device gets a 500; the
/// operator's log says why).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("Krypton CA: {0}")]
    Ca(#[from] CaError),
    #[error("registration record: {0}")]
    Record(#[from] RecordError),
}

/// What Krypton needs: its CA, its records, the operations waiting to be
/// fetched, its counters.
#[derive(Debug)]
pub struct Krypton {
    pub ca: CaStore,
    pub registrations: Registrations,
    pub operations: Mutex<Operations>,
    pub metrics: KryptonMetrics,
}

impl Krypton {
    /// Krypton with its files in `{data_dir}/krypton`. A configured CA is
    /// read now (a wrong path fails the start, not the first device); a
    /// generated one is made on first use. Blocking.
    pub fn open(data_dir: &Path, settings: &KryptonSettings) -> Result<Self, CaError> {
        let dir = data_dir.join("krypton");
        let source = CaSource::new(settings.ca_cert.clone(), settings.ca_key.clone(), &dir)?;
        let configured = matches!(source, CaSource::Configured { .. });
        let me = Self {
            ca: CaStore::new(source),
            registrations: Registrations::new(dir.join("registrations")),
            operations: Mutex::new(Operations::new()),
            metrics: KryptonMetrics::default(),
        };
        if configured {
            me.ca.get(now_ms(), rand::random())?;
        }
        Ok(me)
    }

    /// Issues a certificate to `imsi` and records it; returns the
    /// operation id and the device's JSON, which is also kept for
    /// polling. Blocking (key generation, files).
    pub fn provision(
        &self,
        imsi: &Imsi,
        settings: &request::Settings,
        validity_days: u32,
    ) -> Result<(OperationId, Value), ProvisionError> {
        let now = now_ms();
        let ca = self.ca.get(now, rand::random())?;
        let alg: KeyAlgorithm = settings.key_algorithm;
        let issued: Issued = ca.issue(imsi, alg, validity_days, now, rand::random())?;
        let op = OperationId::from_random(rand::random());
        self.registrations.put(
            imsi,
            Registration {
                imsi: imsi.as_str().to_owned(),
                operation_id: op.as_str().to_owned(),
                provider: PROVIDER.to_owned(),
                serial_number: issued.serial.clone(),
                subject: format!("CN={}", imsi.as_str()),
                key_algorithm: alg.name().to_owned(),
                not_before: issued.not_before_ms,
                not_after: issued.not_after_ms,
                created_time: now,
                issued_count: 0,
            },
        )?;
        self.metrics.issued.inc();
        let body = request::response(&op, imsi.as_str(), settings, &issued);
        let evicted = self
            .operations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(now, op.clone(), imsi.as_str(), body.clone());
        if evicted > 0 {
            tracing::warn!(
                evicted,
                "Krypton operations evicted before they expired (too many registrations at once)"
            );
        }
        tracing::info!(imsi = %imsi.as_str(), serial = %issued.serial, "Krypton certificate issued");
        Ok((op, body))
    }

    /// The kept answer of operation `id`, for `imsi` only.
    pub fn operation(&self, id: &OperationId, imsi: &Imsi) -> Option<Value> {
        let ops = self
            .operations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match ops.get(now_ms(), id, imsi.as_str()) {
            request::Lookup::Found(v) => Some(v.clone()),
            request::Lookup::NotFound => None,
        }
    }
}

fn now_ms() -> u64 {
    simgate_control::clock::now_ms()
}
