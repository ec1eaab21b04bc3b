//! Prometheus remote write 1.0: a `WriteRequest` protobuf, hand-encoded
//! (four small messages), snappy block-compressed, POSTed with the protocol's
//! headers. 2xx commits the batch; 4xx other than 429 means the receiver
//! will never take it (out of order, too old, invalid): it is given up and
//! counted as rejected; anything else is retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::definitions::redact;
use crate::item;
use crate::sender::{send_samples, Outcome, SamplesSink};
use crate::target::Target;

// WriteRequest { repeated TimeSeries timeseries = 1; }
// TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2; }
// Label        { string name = 1; string value = 2; }
// Sample       { double value = 1; int64 timestamp = 2; }

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn len_field(tag: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// Encodes series (labels sorted by name, `__name__` among them) as an
/// uncompressed `WriteRequest`.
pub fn encode_write_request<'a>(
    series: impl Iterator<Item = (&'a [(String, String)], &'a [(i64, f64)])>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ts = Vec::new();
    let mut tmp = Vec::new();
    for (labels, samples) in series {
        ts.clear();
        for (n, v) in labels {
            tmp.clear();
            len_field(0x0a, n.as_bytes(), &mut tmp);
            len_field(0x12, v.as_bytes(), &mut tmp);
            len_field(0x0a, &tmp, &mut ts);
        }
        for &(t, v) in samples {
            tmp.clear();
            tmp.push(0x09);
            tmp.extend_from_slice(&v.to_le_bytes());
            tmp.push(0x10);
            varint(t as u64, &mut tmp);
            len_field(0x12, &tmp, &mut ts);
        }
        len_field(0x0a, &ts, &mut out);
    }
    out
}

pub async fn run(t: Arc<Target>, stop: tokio::sync::watch::Receiver<bool>) {
    let client = match build_client(&t) {
        Ok(cl) => cl,
        Err(e) => {
            t.error(format!("cannot set up HTTP: {e}"));
            return;
        }
    };
    tracing::info!(url = %redact(&t.config.url), "forwarding samples");
    let sink = Sink {
        t: t.clone(),
        client,
    };
    send_samples(&t, stop, sink).await
}

struct Sink {
    t: Arc<Target>,
    client: reqwest::Client,
}

impl SamplesSink for Sink {
    async fn send(&mut self, series: &[item::Samples]) -> Outcome {
        let raw = encode_write_request(
            series
                .iter()
                .map(|s| (s.labels.as_slice(), s.samples.as_slice())),
        );
        match snap::raw::Encoder::new().compress_vec(&raw) {
            Ok(body) => send(&self.t, &self.client, body).await,
            Err(e) => Outcome::Retry(format!("snappy: {e}")),
        }
    }
}

#[derive(Debug, Error)]
enum HttpSetupError {
    #[error("{}: {source}", path.display())]
    CaFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Certificates {
        path: PathBuf,
        source: reqwest::Error,
    },
    #[error("{0}")]
    Client(#[from] reqwest::Error),
}

impl base::HasKind for HttpSetupError {
    fn kind(&self) -> base::ErrorKind {
        // The CA file is the box's, set in the config file: not a caller's.
        base::ErrorKind::Internal
    }
}

fn build_client(t: &Target) -> Result<reqwest::Client, HttpSetupError> {
    let mut b = reqwest::Client::builder()
        .timeout(t.config.timeout.0)
        .connect_timeout(t.config.timeout.0.min(Duration::from_secs(10)))
        .user_agent(concat!("perch/", env!("CARGO_PKG_VERSION")));
    if let Some(f) = &t.config.ca_file {
        for cert in ca_certificates(f)? {
            b = b.add_root_certificate(cert);
        }
    }
    Ok(b.build()?)
}

fn ca_certificates(f: &Path) -> Result<Vec<reqwest::Certificate>, HttpSetupError> {
    let pem = std::fs::read(f).map_err(|source| HttpSetupError::CaFile {
        path: f.to_path_buf(),
        source,
    })?;
    reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| HttpSetupError::Certificates {
        path: f.to_path_buf(),
        source,
    })
}

async fn send(t: &Target, client: &reqwest::Client, body: Vec<u8>) -> Outcome {
    let c = &t.config;
    let bytes = body.len();
    let req = client
        .post(&c.url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    let req = match authorized(req, c).await {
        Ok(r) => r,
        Err(outcome) => return outcome,
    };
    match req.body(body).send().await {
        Ok(r) if r.status().is_success() => Outcome::Sent { bytes },
        Ok(r) => {
            let status = r.status();
            let text: String = r
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            outcome_of(status, format!("HTTP {status}: {}", text.trim()))
        }
        Err(e) => Outcome::Retry(with_causes(&e)),
    }
}

/// The request with the target's credentials. The token file is read for
/// every request, so a rotated token is taken up without a restart.
async fn authorized(
    req: reqwest::RequestBuilder,
    c: &config::ForwardConfig,
) -> Result<reqwest::RequestBuilder, Outcome> {
    if let Some(f) = &c.bearer_token_file {
        return match tokio::fs::read_to_string(f).await {
            Ok(tok) => Ok(req.bearer_auth(tok.trim())),
            Err(e) => Err(Outcome::Retry(format!(
                "bearer_token_file {}: {e}",
                f.display()
            ))),
        };
    }
    Ok(match &c.username {
        Some(u) => req.basic_auth(u, c.password.as_ref()),
        None => req,
    })
}

/// What an answer other than 2xx means. A 4xx says the receiver will never
/// take the batch (out of order, too old, invalid), except 408 and 429
/// (try later) and 401, 403 and 404: credentials or the receiver's setup
/// may be fixed without a restart, so those keep being tried.
fn outcome_of(status: reqwest::StatusCode, msg: String) -> Outcome {
    match status.as_u16() {
        401 | 403 | 404 | 408 | 429 => Outcome::Retry(msg),
        _ if status.is_client_error() => Outcome::Refused(msg),
        _ => Outcome::Retry(msg),
    }
}

/// The error and its sources: reqwest's own message alone hides whether
/// the name, the connection or TLS failed.
fn with_causes(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_request_bytes_match_protobuf() {
        // timeseries { labels { name: "__name__" value: "up" } samples { value: 1 timestamp: 1000 } }
        // worked out by hand from the protobuf encoding rules; the
        // integration tests check real receivers decode it.
        let labels = vec![("__name__".to_string(), "up".to_string())];
        let samples = vec![(1000i64, 1.0f64)];
        let b = encode_write_request(std::iter::once((labels.as_slice(), samples.as_slice())));
        let expected: Vec<u8> = vec![
            0x0a, 0x1e, // timeseries, 30 bytes
            0x0a, 0x0e, 0x0a, 0x08, b'_', b'_', b'n', b'a', b'm', b'e', b'_', b'_', 0x12, 0x02,
            b'u', b'p', // label
            0x12, 0x0c, 0x09, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0x10, 0xe8, 0x07, // sample
        ];
        assert_eq!(b, expected);
        // Negative timestamps are 10-byte two's complement varints.
        let neg = vec![(-1i64, 0.0)];
        let b = encode_write_request(std::iter::once((&labels[..0], neg.as_slice())));
        assert_eq!(
            &b[b.len() - 10..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn only_answers_that_cannot_change_give_a_batch_up() {
        let refused = |code: u16| {
            let status = reqwest::StatusCode::from_u16(code).unwrap();
            matches!(outcome_of(status, String::new()), Outcome::Refused(_))
        };
        for code in [400, 409, 413, 422] {
            assert!(refused(code), "{code}");
        }
        for code in [401, 403, 404, 408, 429, 500, 502, 503, 301] {
            assert!(!refused(code), "{code}");
        }
    }
}
