//! RADIUS accounting (RFC 2866): how simgate learns which SIM holds which
//! address. The packet gateway sends an Accounting-Request for each session
//! Start, Interim-Update and Stop with `Framed-IP-Address` and the 3GPP
//! vendor-specific `3GPP-IMSI` / `3GPP-IMEISV` (TS 29.061); the listener
//! verifies it with the gateway's shared secret, binds or unbinds the address
//! in the [`SessionTable`](crate::SessionTable) and acknowledges with an
//! Accounting-Response.
//!
//! Sans-IO core, thin driver (as quinn-proto and quinn):
//!
//! * [`codec`] — the wire format: parse, verify, encode. Pure.
//! * [`accounting`] — what a request means: Start/Interim/Stop of which
//!   session, Accounting-On/Off; which attributes are required. Pure.
//! * [`dedup`] — retransmission detection (RFC 5080 §2.2.2); time passed in.
//! * [`clients`] — which source addresses are gateways, and their secrets.
//! * [`handler`] — the state machine tying those together over the session
//!   table: datagram and `now` in, response out. No sockets, no clock.
//! * [`server`] — the tokio UDP loop around the handler; the only module
//!   that does I/O.
//! * [`stats`] — counters, every drop by reason.
//!
//! Decisions (see [`accounting`] and [`handler`] for the reasons):
//!
//! * Unknown client, malformed packet, bad authenticator: dropped without a
//!   reply (RFC 2866 §3), counted.
//! * Start/Interim/Stop without `Framed-IP-Address` or a valid `3GPP-IMSI`,
//!   or with an invalid `3GPP-IMEISV`: cannot be recorded, so not
//!   acknowledged (RFC 2866 §4.1), counted.
//! * Stop unbinds only if the address is still bound to that IMSI.
//! * Accounting-On/Off ends every session RADIUS bound for that gateway
//!   (identified by `NAS-IP-Address`, else the source address) whose binding
//!   has not changed since, and is acknowledged.
//! * Other Acct-Status-Types are acknowledged and counted, nothing else.

pub mod accounting;
pub mod clients;
pub mod codec;
pub mod dedup;
pub mod handler;
pub mod server;
pub mod stats;

pub use accounting::{Accounting, SessionRecord};
pub use clients::{ClientSecrets, IpNet, RadiusClient};
pub use codec::{
    encode_accounting_request, encode_accounting_response, parse_accounting_request,
    verify_accounting_response, AccountingAttributes, AccountingRequest, AccountingResponse,
    AcctStatusType, DropReason, Error,
};
pub use dedup::DuplicateCache;
pub use handler::{AccountingHandler, PersistedSession, SessionPersistence};
pub use server::{spawn, spawn_with, RadiusConfig};
pub use stats::{RadiusStats, RadiusStatsSnapshot};
