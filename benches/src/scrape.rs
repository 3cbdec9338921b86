//! Reading counters from a Prometheus/OpenMetrics text page.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};

/// GETs `url` (plain `http://host:port/path`) with HTTP/1.0, so the server
/// closes the connection and sends no chunked encoding; returns the body.
pub(crate) fn get(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: bad address"))?
        .next()
        .with_context(|| format!("{url}: no address"))?;
    ensure!(
        addr.ip().is_loopback(),
        "{url}: only loopback addresses are scraped"
    );
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {url}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .take(64 << 20)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading {url}"))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("{url}: malformed HTTP response");
    };
    let status = head.split_whitespace().nth(1).unwrap_or("");
    ensure!(status == "200", "{url}: HTTP status {status}");
    Ok(body.to_owned())
}

/// A series selector: a metric name and label values that must match
/// (other labels are ignored; matching series are summed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selector {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
}

impl Selector {
    /// `name` or `name{label="value",...}`.
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        let (name, labels) =
            split_series(s.trim()).with_context(|| format!("bad metric selector {s:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            labels,
        })
    }

    /// Sum of every matching sample on the page; `None` if none matched.
    pub(crate) fn sum(&self, page: &str) -> Option<f64> {
        let mut total = None;
        for line in page.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = split_sample(line) else {
                continue;
            };
            let Some((name, labels)) = split_series(series) else {
                continue;
            };
            if name != self.name || !self.labels.iter().all(|want| labels.contains(want)) {
                continue;
            }
            if let Ok(v) = value.parse::<f64>() {
                *total.get_or_insert(0.0) += v;
            }
        }
        total
    }
}

/// Splits `series value [timestamp]` (label values may contain spaces).
fn split_sample(line: &str) -> Option<(&str, &str)> {
    let end_of_series = match line.rfind('}') {
        Some(i) => i + 1,
        None => line.find(' ')?,
    };
    let (series, rest) = line.split_at(end_of_series);
    Some((series, rest.split_whitespace().next()?))
}

/// Splits `name{a="x",b="y"}` into the name and its label pairs.
fn split_series(s: &str) -> Option<(&str, Vec<(String, String)>)> {
    let Some(open) = s.find('{') else {
        return (!s.is_empty()).then(|| (s, Vec::new()));
    };
    let name = &s[..open];
    let inner = s[open + 1..].strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let key = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()? {
                    (_, 'n') => value.push('\n'),
                    (_, c) => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some((name, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP simgate_funnel_records_in Records queued.
# TYPE simgate_funnel_records_in counter
simgate_funnel_records_in_total{sink="null",destination="https://k/a b"} 10
simgate_funnel_records_in_total{sink="null",destination="x\"y"} 5
simgate_funnel_records_out_total{sink="null",destination="d",result="delivered"} 7
simgate_funnel_records_out_total{sink="null",destination="d",result="failed"} 1
simgate_funnel_batch_records_sum{sink="null"} 1500.0
simgate_funnel_batch_records_count{sink="null"} 3
loadgen_sink_received_total 42
# EOF
"#;

    fn sum(sel: &str) -> Option<f64> {
        Selector::parse(sel).ok()?.sum(PAGE)
    }

    #[test]
    fn selectors_sum_matching_series() {
        assert_eq!(sum("simgate_funnel_records_in_total"), Some(15.0));
        assert_eq!(
            sum(r#"simgate_funnel_records_out_total{result="delivered"}"#),
            Some(7.0)
        );
        assert_eq!(
            sum(r#"simgate_funnel_records_out_total{ result = "failed" }"#),
            Some(1.0)
        );
        assert_eq!(sum("simgate_funnel_batch_records_sum"), Some(1500.0));
        assert_eq!(sum("loadgen_sink_received_total"), Some(42.0));
        assert_eq!(
            sum(r#"simgate_funnel_records_in_total{destination="x\"y"}"#),
            Some(5.0)
        );
        assert_eq!(sum("nope_total"), None);
        assert!(Selector::parse(r#"a{b="c"#).is_err());
    }
}
