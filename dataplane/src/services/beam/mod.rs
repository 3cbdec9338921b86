//! SORACOM Beam: plaintext from the device, TLS to the server, with the SIM's
//! identity (and a signature the server can check) added on the way.
//!
//! This part is sans-IO: the signature and TCP identity line
//! ([`signature`]), the headers added to an upstream HTTP request
//! ([`headers`]), and which entry a request on :8888 or :18080 goes to and
//! the upstream URL it becomes ([`route`]). The proxies (HTTP, UDP/TCP →
//! HTTP, TCP → TLS, MQTT) are thin drivers around them; the configuration
//! is the group's [`simgate_control::BeamConfig`], reached as
//! `identity.group.beam`, with credentials resolved by
//! [`simgate_control::snapshot::resolve_psk`] /
//! [`simgate_control::snapshot::resolve_x509`].

pub mod headers;
pub mod http;
pub mod route;
pub mod signature;

pub use headers::{prepare_request_headers, BeamIdentity, HeaderError};
pub use route::{select_http_entry, website_entry, website_url, HttpRoute};
pub use signature::{http_signature, tcp_identity_line, SIGNATURE_VERSION};
