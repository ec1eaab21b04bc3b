//! Every failed request's answer. An [`ApiError`] is what went wrong (a
//! [`base::ErrorKind`] and a message) and the body shape of the API that
//! answers ([`ErrorBody`], chosen by the handler); [`status_of`] turns the
//! kind into the status code and Prometheus' `errorType`, and
//! [`ApiError::into_response`] renders every shape. Other crates know
//! nothing of HTTP: they say the kind of their errors through
//! [`base::HasKind`]. Three statuses are HTTP's own, not a kind's: 408 (a
//! body that did not arrive), 415 (a Content-Encoding perch cannot read),
//! and hyper's own answers to requests it cannot parse (400, 414, 431),
//! which get the same JSON body ([`automatic_body`]).
//!
//! A message never carries more than [`MAX_MESSAGE_BYTES`]; what it quotes
//! of a request is cut to an [`excerpt`] first.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base::{ErrorKind, HasKind};
use serde::Serialize;

/// What an error message quotes of a request (a series, a line, a value),
/// at most, in bytes.
pub const MAX_EXCERPT_BYTES: usize = 256;
/// An error message, at most, in bytes: enough for a list of problems each
/// quoting an excerpt.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024;

/// `text` cut to at most `max` bytes (at a character boundary) with `…`
/// added where it was cut.
pub fn excerpt(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// The JSON body of an answer hyper gives itself (a request it cannot
/// parse), in perch's own error shape.
pub fn automatic_body(status: StatusCode, message: &str) -> Vec<u8> {
    let body = PrometheusError {
        error: message,
        error_type: if status.is_server_error() {
            "unavailable"
        } else {
            "bad_data"
        },
        status: "error",
    };
    serde_json::to_vec(&body).expect("serializable")
}

/// The one mapping of kinds to status codes and Prometheus `errorType`s.
pub fn status_of(kind: ErrorKind) -> (StatusCode, &'static str) {
    match kind {
        ErrorKind::InvalidArgument => (StatusCode::BAD_REQUEST, "bad_data"),
        ErrorKind::Unprocessable => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
        ErrorKind::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, "forbidden"),
        ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        // Prometheus has no type of its own for it; the request is at fault.
        ErrorKind::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "bad_data"),
        ErrorKind::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        ErrorKind::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorKind::DeadlineExceeded => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
        // Writes may work again once space is freed.
        ErrorKind::InsufficientStorage => (StatusCode::INSUFFICIENT_STORAGE, "unavailable"),
        ErrorKind::DataLoss | ErrorKind::Internal => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    }
}

/// The JSON shape of an error answer: each API keeps the one its clients
/// parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ErrorBody {
    /// perch's own API, as Prometheus':
    /// `{"error":…,"errorType":…,"status":"error"}`.
    #[default]
    Prometheus,
    /// InfluxDB 1.x writes: `{"error":…}`.
    InfluxV1,
    /// InfluxDB 1.x queries: `{"error":…}`, indented for `pretty=true`,
    /// with InfluxDB's version header.
    InfluxQl { pretty: bool },
    /// InfluxDB 2.x: `{"code":…,"message":…}`.
    InfluxV2,
    /// OpenTSDB: `{"error":{"code":…,"message":…}}`.
    OpenTsdb,
    /// VictoriaMetrics: `{"error":…,"status":"error"}`.
    VictoriaMetrics,
    /// The control socket, read by perch's own CLI: `{"error":…}`.
    Control,
}

impl ErrorBody {
    /// The shape of the API a path belongs to, for answers given before
    /// its handler runs: the write APIs' own, perch's otherwise.
    pub fn for_path(path: &str) -> ErrorBody {
        match path {
            "/write" => ErrorBody::InfluxV1,
            "/api/v2/write" => ErrorBody::InfluxV2,
            "/api/put" => ErrorBody::OpenTsdb,
            "/api/v1/import" => ErrorBody::VictoriaMetrics,
            _ => ErrorBody::Prometheus,
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
    body: ErrorBody,
    /// Sent as `Retry-After`; 503s without one say a second.
    retry_after: Option<u64>,
    /// Whether a 401 asks for Basic credentials (`WWW-Authenticate`).
    challenge: bool,
    /// HTTP's own statuses (408, 415), which no kind has.
    status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
            body: ErrorBody::Prometheus,
            retry_after: None,
            challenge: false,
            status: None,
        }
    }

    /// 408: the request's body did not arrive in time.
    pub fn request_timeout(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(ErrorKind::DeadlineExceeded, message);
        e.status = Some(StatusCode::REQUEST_TIMEOUT);
        e
    }

    /// 415: a body in an encoding perch cannot read.
    pub fn unsupported_encoding(message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(ErrorKind::InvalidArgument, message);
        e.status = Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
        e
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Conflict, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::PermissionDenied, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// 401 without a Basic challenge: for the dashboard's own requests,
    /// where a challenge would open the browser's password dialog (and hang
    /// a headless one) instead of letting the page send the user to sign in.
    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Unauthenticated, message)
    }

    /// An extractor's refusal (axum's rejections carry a status, not a
    /// kind), keeping its status; its message (which may quote the request)
    /// cut to two excerpts' length.
    pub fn rejected(status: StatusCode, message: impl Into<String>) -> ApiError {
        let message: String = message.into();
        let message = excerpt(&message, 2 * MAX_EXCERPT_BYTES).into_owned();
        let kind = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::PayloadTooLarge,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::Unprocessable,
            s if s.is_server_error() => ErrorKind::Internal,
            _ => ErrorKind::InvalidArgument,
        };
        ApiError::new(kind, message)
    }

    /// Asks for Basic credentials, which curl, Grafana and players answer.
    pub fn with_challenge(mut self) -> ApiError {
        self.challenge = true;
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_body(mut self, body: ErrorBody) -> ApiError {
        self.body = body;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Every crate's error becomes an answer through its kind, with its message.
impl<E: HasKind> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError::new(e.kind(), e.to_string())
    }
}

// The bodies list their keys sorted: the order they had when they were
// built as `serde_json::Value`s, kept so that answers stay byte for byte
// the same.

#[derive(Serialize)]
struct PrometheusError<'a> {
    error: &'a str,
    #[serde(rename = "errorType")]
    error_type: &'a str,
    status: &'static str,
}

#[derive(Serialize)]
struct MessageOnly<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct InfluxV2Error<'a> {
    code: &'static str,
    message: &'a str,
}

#[derive(Serialize)]
struct OpenTsdbError<'a> {
    error: OpenTsdbDetail<'a>,
}

#[derive(Serialize)]
struct OpenTsdbDetail<'a> {
    code: u16,
    message: &'a str,
}

#[derive(Serialize)]
struct VictoriaMetricsError<'a> {
    error: &'a str,
    status: &'static str,
}

/// InfluxDB 2.x's error code for a status.
fn influx_v2_code(status: StatusCode) -> &'static str {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request too large"
    } else if status.is_server_error() {
        "unavailable"
    } else {
        "invalid"
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error_type) = status_of(self.kind);
        let status = self.status.unwrap_or(status);
        let message = excerpt(&self.message, MAX_MESSAGE_BYTES);
        let message = message.as_ref();
        let mut r = match self.body {
            ErrorBody::Prometheus => json(
                status,
                &PrometheusError {
                    error: message,
                    error_type,
                    status: "error",
                },
            ),
            ErrorBody::InfluxV1 | ErrorBody::Control => {
                json(status, &MessageOnly { error: message })
            }
            ErrorBody::InfluxQl { pretty } => {
                crate::influx_api::reply(status, &MessageOnly { error: message }, pretty)
            }
            ErrorBody::InfluxV2 => json(
                status,
                &InfluxV2Error {
                    code: influx_v2_code(status),
                    message,
                },
            ),
            ErrorBody::OpenTsdb => json(
                status,
                &OpenTsdbError {
                    error: OpenTsdbDetail {
                        code: status.as_u16(),
                        message,
                    },
                },
            ),
            ErrorBody::VictoriaMetrics => json(
                status,
                &VictoriaMetricsError {
                    error: message,
                    status: "error",
                },
            ),
        };
        let headers = r.headers_mut();
        if self.challenge && status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"perch\""),
            );
        }
        // A full disk budget frees itself (the oldest data goes within a
        // few seconds): writers that honour Retry-After come back then.
        let retry_after = self
            .retry_after
            .or((status == StatusCode::SERVICE_UNAVAILABLE).then_some(1))
            .or((status == StatusCode::INSUFFICIENT_STORAGE).then_some(5));
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, seconds.into());
        }
        r
    }
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn render(e: ApiError) -> (StatusCode, Vec<(String, String)>, String) {
        let r = e.into_response();
        let status = r.status();
        let headers = r
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[tokio::test]
    async fn each_shape_renders_as_its_api_does() {
        let cases = [
            (
                ErrorBody::Prometheus,
                r#"{"error":"no","errorType":"unavailable","status":"error"}"#,
            ),
            (ErrorBody::InfluxV1, r#"{"error":"no"}"#),
            (ErrorBody::Control, r#"{"error":"no"}"#),
            (
                ErrorBody::InfluxV2,
                r#"{"code":"unavailable","message":"no"}"#,
            ),
            (
                ErrorBody::OpenTsdb,
                r#"{"error":{"code":503,"message":"no"}}"#,
            ),
            (
                ErrorBody::VictoriaMetrics,
                r#"{"error":"no","status":"error"}"#,
            ),
        ];
        for (shape, want) in cases {
            let (status, headers, body) =
                render(ApiError::unavailable("no").with_body(shape)).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body, want, "{shape:?}");
            assert_eq!(header(&headers, "retry-after"), Some("1"), "{shape:?}");
            assert_eq!(header(&headers, "content-type"), Some("application/json"));
        }
        let (_, headers, body) =
            render(ApiError::invalid("bad").with_body(ErrorBody::InfluxQl { pretty: true })).await;
        assert_eq!(body, "{\n  \"error\": \"bad\"\n}");
        assert_eq!(header(&headers, "x-influxdb-version"), Some("1.8-perch"));
        let (_, _, body) =
            render(ApiError::new(ErrorKind::PayloadTooLarge, "big").with_body(ErrorBody::InfluxV2))
                .await;
        assert_eq!(body, r#"{"code":"request too large","message":"big"}"#);
    }

    #[tokio::test]
    async fn challenges_and_waits_are_headers() {
        let (status, headers, _) = render(ApiError::unauthenticated("who").with_challenge()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some("Basic realm=\"perch\"")
        );
        let (_, headers, _) = render(ApiError::unauthenticated("who")).await;
        assert_eq!(header(&headers, "www-authenticate"), None);
        let (status, headers, _) =
            render(ApiError::new(ErrorKind::RateLimited, "slow").with_retry_after(42)).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&headers, "retry-after"), Some("42"));
        let (_, headers, _) = render(ApiError::internal("x")).await;
        assert_eq!(header(&headers, "retry-after"), None);
    }

    #[tokio::test]
    async fn http_statuses_of_their_own_keep_the_json_body() {
        let (status, _, body) = render(ApiError::request_timeout("slow")).await;
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            body,
            r#"{"error":"slow","errorType":"timeout","status":"error"}"#
        );
        let (status, headers, body) =
            render(ApiError::unsupported_encoding("br").with_body(ErrorBody::InfluxV1)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(body, r#"{"error":"br"}"#);
        assert_eq!(header(&headers, "retry-after"), None);
        let body = automatic_body(StatusCode::URI_TOO_LONG, "long");
        assert_eq!(
            body,
            br#"{"error":"long","errorType":"bad_data","status":"error"}"#
        );
    }

    #[tokio::test]
    async fn messages_and_excerpts_are_bounded() {
        assert_eq!(excerpt("abc", 3), "abc");
        assert_eq!(excerpt("abcd", 3), "abc…");
        // Never inside a character.
        assert_eq!(excerpt("aé", 2), "a…");
        let (_, _, body) = render(ApiError::invalid("x".repeat(1 << 20))).await;
        assert!(body.len() < MAX_MESSAGE_BYTES + 100, "{}", body.len());
        assert!(body.contains("x…"));
    }

    #[test]
    fn crate_errors_keep_the_answers_they_always_had() {
        use store::StorageError;
        let status = |e: ApiError| {
            let (s, t) = status_of(e.kind());
            (s.as_u16(), t)
        };
        assert_eq!(
            status(query::QueryError::Timeout(std::time::Duration::from_secs(1)).into()),
            (503, "timeout")
        );
        assert_eq!(
            status(query::QueryError::Execution("x".into()).into()),
            (422, "execution")
        );
        assert_eq!(
            status(StorageError::TooManySamples { limit: 1 }.into()),
            (422, "execution")
        );
        assert_eq!(status(StorageError::CannotPersist.into()).0, 507);
        assert_eq!(
            status(StorageError::Overloaded { pending: 1 }.into()),
            (503, "unavailable")
        );
        assert_eq!(
            status(StorageError::Corrupt("x".into()).into()),
            (500, "internal")
        );
        assert_eq!(
            status(mqtt::PublishError::TooLarge { size: 2, limit: 1 }.into()),
            (413, "bad_data")
        );
        assert_eq!(
            status(mqtt::PublishError::NotAllowed("t".into()).into()),
            (403, "forbidden")
        );
        assert_eq!(
            status(search::SearchError::Damaged("x".into()).into()),
            (500, "internal")
        );
        assert_eq!(
            status(cameras::CameraError::NoKeyframe("c".into()).into()),
            (503, "unavailable")
        );
        assert_eq!(
            status(accounts::AccountError::Exists("u".into()).into()),
            (409, "conflict")
        );
    }
}
