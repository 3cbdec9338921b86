//! The group's `SoracomFunk` settings, read from its verbatim configuration
//! (as SORACOM documents them):
//!
//! ```json
//! "SoracomFunk": {
//!   "enabled": true,
//!   "destination": {"provider": "aws", "service": "lambda",
//!                   "resourceUrl": "arn:aws:lambda:ap-northeast-1:123456789012:function:f"},
//!   "credentialsId": {"$credentialsId": "aws-creds"},
//!   "contentType": "application/json"
//! }
//! ```
//!
//! HTTPS functions (`azure`/`function-app`, `google`/`cloud-functions`) name
//! the function's URL as `resourceUrl` and need no credentials. simgate
//! adds `destination.endpoint` (as Funnel does): where to send a Lambda
//! invocation instead of `https://lambda.{region}.amazonaws.com` (an
//! emulator, a VPC endpoint).
//!
//! Sans-IO: nothing here touches a socket, a key or the clock.

use serde_json::{Map, Value};
use simgate_control::Group;

/// The group configuration namespace SORACOM uses for Funk.
pub const NAMESPACE: &str = "SoracomFunk";

/// Why a group's `SoracomFunk` cannot be used. Each is the operator's
/// configuration's fault, not the device's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    #[error("SoracomFunk.destination is missing or not an object")]
    NoDestination,
    #[error("SoracomFunk.destination.{0} is missing or not a string")]
    MissingField(&'static str),
    #[error("SoracomFunk.destination: provider {provider:?} with service {service:?} is not a function simgate can invoke (aws/lambda, azure/function-app, google/cloud-functions)")]
    UnsupportedService { provider: String, service: String },
    #[error("SoracomFunk.destination.resourceUrl {0:?} is not a Lambda function ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER])")]
    InvalidArn(String),
    #[error("SoracomFunk.destination.resourceUrl {0:?} is not an https:// URL")]
    InvalidUrl(String),
    #[error("SoracomFunk.destination.endpoint {0:?} is not an http(s):// URL")]
    InvalidEndpoint(String),
    #[error("{0:?} is plain http://; set [funk] allow_insecure_endpoints = true for an emulator")]
    Insecure(String),
    #[error("SoracomFunk.credentialsId is not a string nor {{\"$credentialsId\": \"…\"}}")]
    InvalidCredentialsId,
    #[error("AWS Lambda needs SoracomFunk.credentialsId (AWS credentials)")]
    NoCredentials,
    #[error("SoracomFunk.contentType {0:?} is not one of application/json, text/plain, application/octet-stream (or json, text, binary)")]
    InvalidContentType(String),
}

/// How the device's bytes become the function's event (SORACOM's
/// "送信データ形式").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// Unspecified: UDP and TCP as binary, HTTP by its `Content-Type`.
    Auto,
    /// The bytes must be JSON and are sent as they are (else `400`).
    Json,
    /// `{"payload":"<the text>"}`.
    Text,
    /// `{"payload":"<base64>"}`, even when the bytes happen to be JSON.
    Binary,
}

impl ContentType {
    fn parse(s: &str) -> Option<Self> {
        let essence = s
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        Some(match essence.as_str() {
            "" | "unspecified" | "auto" => Self::Auto,
            "application/json" | "json" => Self::Json,
            "text/plain" | "text" => Self::Text,
            "application/octet-stream" | "binary" => Self::Binary,
            _ => return None,
        })
    }
}

/// An AWS Lambda function, from its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaFunction {
    pub region: String,
    pub account: String,
    pub name: String,
    /// A version or alias (`…:function:NAME:QUALIFIER`).
    pub qualifier: Option<String>,
}

impl LambdaFunction {
    /// `arn:aws:lambda:{region}:{account}:function:{name}[:{qualifier}]`
    /// (also the `aws-cn` and `aws-us-gov` partitions).
    pub fn parse_arn(arn: &str) -> Option<Self> {
        let parts: Vec<&str> = arn.trim().split(':').collect();
        let (region, account, name, qualifier) = match parts.as_slice() {
            ["arn", partition, "lambda", region, account, "function", name] => {
                is_partition(partition).then_some((*region, *account, *name, None))?
            }
            ["arn", partition, "lambda", region, account, "function", name, q] => {
                is_partition(partition).then_some((*region, *account, *name, Some(*q)))?
            }
            _ => return None,
        };
        let region_ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        let word = |s: &str, max: usize| {
            (1..=max).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        // `$LATEST` is what no qualifier means.
        let qualifier = qualifier.filter(|q| *q != "$LATEST");
        if !(region_ok && account_ok && word(name, 64) && qualifier.is_none_or(|q| word(q, 128))) {
            return None;
        }
        Some(Self {
            region: region.to_owned(),
            account: account.to_owned(),
            name: name.to_owned(),
            qualifier: qualifier.map(str::to_owned),
        })
    }

    /// The Invoke API's path and query. Only `[A-Za-z0-9_-]` reach it, so
    /// nothing needs escaping (and SigV4's canonical path is the path).
    pub fn invoke_path(&self) -> String {
        match &self.qualifier {
            Some(q) => format!(
                "/2015-03-31/functions/{}/invocations?Qualifier={q}",
                self.name
            ),
            None => format!("/2015-03-31/functions/{}/invocations", self.name),
        }
    }
}

fn is_partition(p: &str) -> bool {
    matches!(p, "aws" | "aws-cn" | "aws-us-gov")
}

/// Which function a SIM's group invokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Lambda {
        function: LambdaFunction,
        /// Where the Invoke API is reached: `destination.endpoint`, else
        /// `https://lambda.{region}.amazonaws.com`.
        endpoint: String,
        /// The `$credentialsId` (may contain `#{imsi}`).
        credentials_id: String,
    },
    /// Azure Functions, Google Cloud Functions: a `POST` to the URL.
    Https { url: String },
}

impl Target {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Lambda { .. } => "lambda",
            Self::Https { .. } => "https",
        }
    }
}

/// A usable `SoracomFunk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    pub content_type: ContentType,
}

/// The group's Funk: `Ok(None)` when it is off (no group, no namespace,
/// `enabled` not `true`), `Err` when it is on but unusable.
pub fn of(group: Option<&Group>, allow_insecure: bool) -> Result<Option<Settings>, SettingsError> {
    let Some(ns) = group.and_then(|g| g.configuration.get(NAMESPACE)) else {
        return Ok(None);
    };
    let map: Map<String, Value> = ns.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    parse(&map, allow_insecure)
}

/// [`of`] for the namespace's keys.
pub fn parse(
    ns: &Map<String, Value>,
    allow_insecure: bool,
) -> Result<Option<Settings>, SettingsError> {
    if ns.get("enabled").and_then(Value::as_bool) != Some(true) {
        return Ok(None);
    }
    let d = ns
        .get("destination")
        .and_then(Value::as_object)
        .ok_or(SettingsError::NoDestination)?;
    let field = |k: &'static str| {
        d.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .ok_or(SettingsError::MissingField(k))
    };
    let (provider, service) = (field("provider")?, field("service")?);
    let resource_url = field("resourceUrl")?;
    let content_type = match ns.get("contentType") {
        None | Some(Value::Null) => ContentType::Auto,
        Some(Value::String(s)) => {
            ContentType::parse(s).ok_or_else(|| SettingsError::InvalidContentType(s.clone()))?
        }
        Some(other) => return Err(SettingsError::InvalidContentType(other.to_string())),
    };
    let target = match (
        provider.to_ascii_lowercase().as_str(),
        service.to_ascii_lowercase().as_str(),
    ) {
        ("aws", "lambda") => {
            let function = LambdaFunction::parse_arn(resource_url)
                .ok_or_else(|| SettingsError::InvalidArn(resource_url.to_owned()))?;
            let endpoint = match d.get("endpoint").and_then(Value::as_str) {
                Some(e) => check_url(e.trim(), allow_insecure, SettingsError::InvalidEndpoint)?,
                None => format!("https://lambda.{}.amazonaws.com", function.region),
            };
            let credentials_id =
                credentials_id(ns.get("credentialsId"))?.ok_or(SettingsError::NoCredentials)?;
            Target::Lambda {
                function,
                endpoint,
                credentials_id,
            }
        }
        ("azure", "function-app") | ("google", "cloud-functions") => Target::Https {
            url: check_url(resource_url, allow_insecure, SettingsError::InvalidUrl)?,
        },
        _ => {
            return Err(SettingsError::UnsupportedService {
                provider: provider.to_owned(),
                service: service.to_owned(),
            })
        }
    };
    Ok(Some(Settings {
        target,
        content_type,
    }))
}

/// `https://host…` (or `http://` when insecure endpoints are allowed).
fn check_url(
    url: &str,
    allow_insecure: bool,
    invalid: fn(String) -> SettingsError,
) -> Result<String, SettingsError> {
    let uri: http::Uri = url.parse().map_err(|_| invalid(url.to_owned()))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid(url.to_owned()));
    }
    match uri.scheme_str() {
        Some("https") => Ok(url.to_owned()),
        Some("http") if allow_insecure => Ok(url.to_owned()),
        Some("http") => Err(SettingsError::Insecure(url.to_owned())),
        _ => Err(invalid(url.to_owned())),
    }
}

/// `"id"` or `{"$credentialsId": "id"}` (SORACOM's form); absent is `None`.
fn credentials_id(v: Option<&Value>) -> Result<Option<String>, SettingsError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Some(Value::Object(o)) => match o.get("$credentialsId").and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            _ => Err(SettingsError::InvalidCredentialsId),
        },
        Some(_) => Err(SettingsError::InvalidCredentialsId),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    const ARN: &str = "arn:aws:lambda:ap-northeast-1:123456789012:function:soracom-funk";

    #[test]
    fn lambda_as_soracom_documents_it() {
        let s = parse(
            &ns(json!({
                "enabled": true,
                "destination": {"provider": "aws", "service": "lambda", "resourceUrl": ARN},
                "credentialsId": {"$credentialsId": "aws-creds"},
                "contentType": "application/json",
            })),
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.content_type, ContentType::Json);
        let Target::Lambda {
            function,
            endpoint,
            credentials_id,
        } = s.target
        else {
            panic!("not lambda")
        };
        assert_eq!(endpoint, "https://lambda.ap-northeast-1.amazonaws.com");
        assert_eq!(credentials_id, "aws-creds");
        assert_eq!(
            function.invoke_path(),
            "/2015-03-31/functions/soracom-funk/invocations"
        );
        assert_eq!(function.account, "123456789012");
    }

    #[test]
    fn arns() {
        let f = LambdaFunction::parse_arn(&format!("{ARN}:prod")).unwrap();
        assert_eq!(
            f.invoke_path(),
            "/2015-03-31/functions/soracom-funk/invocations?Qualifier=prod"
        );
        assert_eq!(
            LambdaFunction::parse_arn(&format!("{ARN}:$LATEST"))
                .unwrap()
                .qualifier,
            None
        );
        for bad in [
            "",
            "arn:aws:lambda:ap-northeast-1:123456789012:function:",
            "arn:aws:lambda:ap-northeast-1:12345:function:f",
            "arn:aws:s3:ap-northeast-1:123456789012:function:f",
            "arn:other:lambda:ap-northeast-1:123456789012:function:f",
            "arn:aws:lambda:ap-northeast-1:123456789012:function:f/../x",
            "arn:aws:lambda:ap-northeast-1:123456789012:function:f:a:b",
            "arn:aws:lambda:AP:123456789012:function:f",
        ] {
            assert_eq!(LambdaFunction::parse_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn off_unusable_and_https() {
        assert_eq!(parse(&ns(json!({})), false), Ok(None));
        assert_eq!(parse(&ns(json!({"enabled": "true"})), false), Ok(None));
        assert_eq!(
            parse(&ns(json!({"enabled": true})), false),
            Err(SettingsError::NoDestination)
        );
        let lambda = |extra: Value| {
            let mut v = json!({
                "enabled": true,
                "destination": {"provider": "aws", "service": "lambda", "resourceUrl": ARN},
            });
            for (k, x) in extra.as_object().cloned().unwrap_or_default() {
                v[k] = x;
            }
            parse(&ns(v), false)
        };
        assert_eq!(lambda(json!({})), Err(SettingsError::NoCredentials));
        assert_eq!(
            lambda(json!({"credentialsId": 5})),
            Err(SettingsError::InvalidCredentialsId)
        );
        assert!(matches!(
            lambda(json!({"credentialsId": "c", "contentType": "image/png"})),
            Err(SettingsError::InvalidContentType(_))
        ));
        let mut v = json!({
            "enabled": true, "credentialsId": "c",
            "destination": {"provider": "aws", "service": "lambda", "resourceUrl": ARN,
                            "endpoint": "http://127.0.0.1:5000"},
        });
        assert!(matches!(
            parse(&ns(v.clone()), false),
            Err(SettingsError::Insecure(_))
        ));
        let s = parse(&ns(v.clone()), true).unwrap().unwrap();
        assert!(
            matches!(&s.target, Target::Lambda { endpoint, .. } if endpoint == "http://127.0.0.1:5000")
        );
        assert_eq!(s.content_type, ContentType::Auto);

        v["destination"] = json!({"provider": "azure", "service": "function-app",
                                  "resourceUrl": "https://f.azurewebsites.net/api/x?code=k"});
        let s = parse(&ns(v.clone()), false).unwrap().unwrap();
        assert_eq!(
            s.target,
            Target::Https {
                url: "https://f.azurewebsites.net/api/x?code=k".into()
            }
        );
        assert_eq!(s.target.label(), "https");
        v["destination"]["resourceUrl"] = json!("ftp://x/");
        assert!(matches!(
            parse(&ns(v.clone()), false),
            Err(SettingsError::InvalidUrl(_))
        ));
        v["destination"] = json!({"provider": "aws", "service": "kinesis", "resourceUrl": "x"});
        assert!(matches!(
            parse(&ns(v), false),
            Err(SettingsError::UnsupportedService { .. })
        ));
    }
}
