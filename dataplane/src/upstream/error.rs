//! What can go wrong on an outbound connection, classified once so that Beam
//! (502 or 504) and the Funnel sinks (retry or not) decide from a kind, never
//! from a message string.

use std::error::Error as StdError;
use std::fmt;
use std::io;

/// Which step of an outbound exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpstreamErrorKind {
    /// The host name did not resolve (or resolved to nothing).
    Dns,
    /// The upstream refused the TCP connection (nothing listens there).
    ConnectRefused,
    /// No TCP connection within `connect_timeout_ms`.
    ConnectTimeout,
    /// The TLS handshake failed: untrusted or expired certificate, a
    /// certificate for another name, an alert from the server (for example
    /// our client certificate refused), or a client certificate we could not
    /// use.
    Tls,
    /// No TLS handshake within `tls_timeout_ms`.
    TlsTimeout,
    /// No response headers within `response_timeout_ms`.
    ResponseTimeout,
    /// Anything else: a connection reset or closed mid-request, a protocol
    /// error.
    Other,
}

impl UpstreamErrorKind {
    /// Short, stable metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Dns => "dns",
            Self::ConnectRefused => "connect_refused",
            Self::ConnectTimeout => "connect_timeout",
            Self::Tls => "tls",
            Self::TlsTimeout => "tls_timeout",
            Self::ResponseTimeout => "response_timeout",
            Self::Other => "other",
        }
    }

    /// A step ran out of time (Beam answers 504; everything else is 502).
    pub const fn is_timeout(self) -> bool {
        matches!(
            self,
            Self::ConnectTimeout | Self::TlsTimeout | Self::ResponseTimeout
        )
    }

    /// Whether the same request may succeed later without anyone changing
    /// anything. A TLS failure is a certificate or configuration problem:
    /// it fails the same way until someone fixes it.
    pub const fn is_retryable(self) -> bool {
        !matches!(self, Self::Tls)
    }
}

impl fmt::Display for UpstreamErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// An outbound connection or request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {kind}: {message}")]
pub struct UpstreamError {
    kind: UpstreamErrorKind,
    message: String,
}

impl UpstreamError {
    pub fn new(kind: UpstreamErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> UpstreamErrorKind {
        self.kind
    }

    /// [`UpstreamErrorKind::label`] of the kind.
    pub fn label(&self) -> &'static str {
        self.kind.label()
    }

    pub fn is_timeout(&self) -> bool {
        self.kind.is_timeout()
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// What happened, with its causes; never holds credentials (transport
    /// errors carry no headers).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A failed TCP connect.
    pub(crate) fn connect(e: &io::Error) -> Self {
        let kind = match e.kind() {
            io::ErrorKind::ConnectionRefused => UpstreamErrorKind::ConnectRefused,
            io::ErrorKind::TimedOut => UpstreamErrorKind::ConnectTimeout,
            _ => UpstreamErrorKind::Other,
        };
        Self::new(kind, format!("connect: {}", error_chain(e)))
    }

    /// A failed TLS handshake: whatever the cause (a rustls error, the
    /// server closing or resetting mid-handshake), the handshake is what
    /// failed.
    pub(crate) fn handshake(e: &io::Error) -> Self {
        Self::new(
            UpstreamErrorKind::Tls,
            format!("TLS handshake: {}", error_chain(e)),
        )
    }

    /// An error of the pooled HTTP client. Our connector's own errors come
    /// back as they were; the rest is classified by the I/O error inside.
    pub(crate) fn from_client(e: &hyper_util::client::legacy::Error) -> Self {
        let mut source = e.source();
        while let Some(cause) = source {
            if let Some(ours) = cause.downcast_ref::<Self>() {
                return ours.clone();
            }
            // After a TLS 1.3 handshake the server may still refuse us (our
            // client certificate): its alert arrives with the response, as
            // an `InvalidData` I/O error (by then tokio-rustls has turned
            // the rustls error into text). Below hyper there is only TCP,
            // which never reports `InvalidData`, and rustls.
            if cause
                .downcast_ref::<io::Error>()
                .is_some_and(|io| io.kind() == io::ErrorKind::InvalidData)
            {
                return Self::new(UpstreamErrorKind::Tls, error_chain(e));
            }
            source = cause.source();
        }
        if e.is_connect() {
            let mut source = e.source();
            while let Some(cause) = source {
                if let Some(io) = cause.downcast_ref::<io::Error>() {
                    return Self::connect(io);
                }
                source = cause.source();
            }
        }
        Self::new(UpstreamErrorKind::Other, error_chain(e))
    }
}

/// `error: cause: root cause`, skipping causes the message already ends with.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.ends_with(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_distinct() {
        let all = [
            UpstreamErrorKind::Dns,
            UpstreamErrorKind::ConnectRefused,
            UpstreamErrorKind::ConnectTimeout,
            UpstreamErrorKind::Tls,
            UpstreamErrorKind::TlsTimeout,
            UpstreamErrorKind::ResponseTimeout,
            UpstreamErrorKind::Other,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), all.len());
        assert!(UpstreamErrorKind::ResponseTimeout.is_timeout());
        assert!(!UpstreamErrorKind::ConnectRefused.is_timeout());
        assert!(!UpstreamErrorKind::Tls.is_retryable());
        assert!(UpstreamErrorKind::ConnectRefused.is_retryable());
    }

    #[test]
    fn io_errors_are_classified() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            UpstreamError::connect(&refused).kind(),
            UpstreamErrorKind::ConnectRefused
        );
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timeout");
        assert_eq!(
            UpstreamError::connect(&timed_out).kind(),
            UpstreamErrorKind::ConnectTimeout
        );
        let e = UpstreamError::handshake(&io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName),
        ));
        assert_eq!(e.label(), "tls");
        assert!(
            e.to_string().starts_with("upstream tls: TLS handshake"),
            "{e}"
        );
    }
}
