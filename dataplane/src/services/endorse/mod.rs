//! SORACOM Endorse (HTTP Host `endorse.*` on the devices' listener): a SIM
//! asks, with no credentials but its source address, for a signed JWT
//! saying who it is (IMSI, IMEI, … as its group's `SoracomEndorse`
//! `parametersToEndorse` chooses), with the query or form parameters it
//! sent copied in; anyone verifying such a token fetches the public keys
//! from the same host (`/v1/endorse/keys/{kid}` as PEM,
//! `/.well-known/jwks.json`).
//!
//! [`claims`] is the sans-IO part (paths, settings, parameters, claims);
//! [`keys`] the key store (files in the data dir, rotation with overlap);
//! [`handler`] the I/O; [`api`] the key list and rotation on the control
//! API.

pub mod api;
pub mod claims;
pub mod handler;
pub mod keys;

use std::path::Path;

use simgate_control::config::EndorseAlgorithm;

pub use handler::serve;
pub use keys::{KeyError, KeyStore};

/// What the Endorse service needs: its keys and the `iss` it signs with.
#[derive(Debug)]
pub struct Endorse {
    pub keys: KeyStore,
    pub issuer: String,
}

impl Endorse {
    /// Loads (or makes) the keys in `{data_dir}/endorse`. Blocking.
    pub fn open(
        data_dir: &Path,
        issuer: String,
        algorithm: EndorseAlgorithm,
    ) -> Result<Self, KeyError> {
        Ok(Self {
            keys: KeyStore::open(&data_dir.join("endorse"), algorithm)?,
            issuer,
        })
    }
}
