//! The JSON request bodies the API reads, and the pure checks its handlers
//! apply to them before the control plane does, public so that the
//! `api_json` fuzz target (and other tools) can run them on any input.
//!
//! | body | route |
//! |---|---|
//! | [`CreateGroup`] | `POST /v1/groups` |
//! | `[`[`ConfigurationEntry`]`]` | `PUT /v1/groups/{id}/configuration/{namespace}` (checked by [`crate::store::configuration::put`]) |
//! | `[`[`TagUpdate`]`]` | `PUT /v1/{subscribers,groups}/{id}/tags` (checked by [`tag_map`]) |
//! | [`RegisterSubscriber`] | `POST /v1/subscribers` |
//! | [`RegisterSim`] | `POST /v1/subscribers/{imsi}/register` |
//! | [`SetGroup`] | `POST /v1/subscribers/{imsi}/set_group` |
//! | [`SetImeiLock`] | `POST /v1/subscribers/{imsi}/set_imei_lock` |
//! | [`PutCredential`] | `POST`/`PUT /v1/credentials/{id}` (checked by [`credential_of`]) |
//! | [`PutSession`] | `PUT /v1/sessions/{ip}` |
//! | [`AuthRequest`] | `POST /v1/auth` |
//! | [`CreateToken`] | `POST /v1/tokens` |

pub use super::auth::AuthRequest;
pub use super::credentials::{credential_of, PutCredential};
pub use super::groups::{ConfigurationEntry, CreateGroup};
pub use super::sessions::PutSession;
pub use super::subscribers::{
    tag_map, RegisterSim, RegisterSubscriber, SetGroup, SetImeiLock, Status, TagUpdate,
};
pub use super::tokens::CreateToken;
