//! SORACOM Funnel's AWS resource URLs, `https://{service}.{region}.amazonaws.com/{name}`
//! (Kinesis streams, Firehose delivery streams).

/// Why a resource URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResourceUrlError {
    #[error("not a URL: {0}")]
    Invalid(String),
    #[error("resource URL must use https, not {0:?}")]
    NotHttps(String),
    #[error("host {host:?} is not {service}.<region>.amazonaws.com")]
    NotServiceHost { service: &'static str, host: String },
    #[error("resource URL has no stream name (expected https://{service}.<region>.amazonaws.com/<name>)")]
    MissingName { service: &'static str },
    #[error("invalid stream name {name:?}: 1 to {max} characters of a-z, A-Z, 0-9, '_', '.', '-'")]
    InvalidName { name: String, max: usize },
    #[error("resource URL must not have a query string")]
    HasQuery,
}

/// Whether `name` is 1 to `max` characters of `[a-zA-Z0-9_.-]` (the rule
/// for Kinesis stream and Firehose delivery stream names).
pub fn is_valid_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Splits `https://{service}.ap-northeast-1.amazonaws.com/devices` into
/// `("ap-northeast-1", "devices")`. China regions
/// (`{service}.cn-north-1.amazonaws.com.cn`) are accepted too; the name must
/// pass [`is_valid_name`] with `max_name`.
pub fn parse_service_url(
    url: &str,
    service: &'static str,
    max_name: usize,
) -> Result<(String, String), ResourceUrlError> {
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| ResourceUrlError::Invalid(format!("{url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some(other) => return Err(ResourceUrlError::NotHttps(other.to_owned())),
        None => return Err(ResourceUrlError::Invalid(format!("{url:?}: no scheme"))),
    }
    if uri.query().is_some() {
        return Err(ResourceUrlError::HasQuery);
    }
    let host = uri
        .host()
        .ok_or_else(|| ResourceUrlError::Invalid(format!("{url:?}: no host")))?
        .to_ascii_lowercase();
    let region = host
        .strip_prefix(service)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| {
            rest.strip_suffix(".amazonaws.com")
                .or_else(|| rest.strip_suffix(".amazonaws.com.cn"))
        })
        .filter(|r| is_valid_region(r))
        .ok_or_else(|| ResourceUrlError::NotServiceHost {
            service,
            host: host.clone(),
        })?;

    let path = uri.path();
    let name = path.strip_prefix('/').unwrap_or(path);
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() {
        return Err(ResourceUrlError::MissingName { service });
    }
    if !is_valid_name(name, max_name) {
        return Err(ResourceUrlError::InvalidName {
            name: name.to_owned(),
            max: max_name,
        });
    }
    Ok((region.to_owned(), name.to_owned()))
}

/// `ap-northeast-1`, `us-gov-west-1`, …: lowercase letters, digits and dashes.
fn is_valid_region(r: &str) -> bool {
    !r.is_empty()
        && !r.starts_with('-')
        && !r.ends_with('-')
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
