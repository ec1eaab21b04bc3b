//! What handlers take from a request, each refusing with an [`ApiError`]:
//! Prometheus-style parameters ([`Params`], [`QueryParams`]), typed query
//! strings and path segments ([`Query`], [`Path`]), the body as bytes
//! ([`Body`]) or as JSON ([`JsonBody`]). Bodies are read within
//! `http.body_timeout` of the request's arrival ([`BodyDeadline`]): one that
//! stalls gets 408 and frees what it held.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, Method};
use serde::de::DeserializeOwned;

use super::ApiError;

/// The parameters of a request in the Prometheus API's manner: the query
/// string and, for a form POST, the form body. Repeated keys such as
/// `match[]` are kept in order; [`Params::get`] takes the last.
pub struct Params(Vec<(String, String)>);

impl Params {
    fn from_query(query: Option<&str>) -> Params {
        Params(
            query
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        )
    }

    /// The last value of a key (later values override earlier ones).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Params, ApiError> {
        let mut params = Params::from_query(req.uri().query());
        let is_form = req.method() == Method::POST
            && req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        // Read whatever the type, so that a body over the limit is refused
        // on every route that takes parameters this way.
        let Body(body) = Body::from_request(req, state).await?;
        if is_form {
            params.0.extend(form_urlencoded::parse(&body).into_owned());
        }
        Ok(params)
    }
}

/// [`Params`] of the query string alone, for routes whose body is data
/// (writes) or that take none.
pub struct QueryParams(pub Params);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryParams, ApiError> {
        Ok(QueryParams(Params::from_query(parts.uri.query())))
    }
}

/// `axum::extract::Query`, refusing with an [`ApiError`].
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Query<T>, ApiError> {
        axum::extract::Query::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|r| ApiError::rejected(r.status(), r.body_text()))
    }
}

/// `axum::extract::Path`, refusing with an [`ApiError`].
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Path<T>, ApiError> {
        axum::extract::Path::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| Path(p))
            .map_err(|r| ApiError::rejected(r.status(), r.body_text()))
    }
}

/// When a request's body must have arrived: `http.body_timeout` after the
/// request did (set by `serve::request_limits`).
#[derive(Clone, Copy, Debug)]
pub struct BodyDeadline {
    pub at: tokio::time::Instant,
    /// `http.body_timeout`, for the message.
    pub limit: Duration,
}

/// Why a body could not be read.
pub enum BodyError {
    Rejected(BytesRejection),
    /// Not whole by its [`BodyDeadline`]; carries `http.body_timeout`.
    TimedOut(Duration),
}

impl BodyError {
    /// 408 for a body that did not arrive; otherwise the rejection's status.
    pub fn into_api_error(self) -> ApiError {
        match self {
            BodyError::TimedOut(limit) => ApiError::request_timeout(format!(
                "the request body did not arrive within http.body_timeout ({})",
                config::Duration(limit)
            )),
            BodyError::Rejected(r) => ApiError::rejected(r.status(), r.body_text()),
        }
    }
}

/// The whole body, within the route's `DefaultBodyLimit` and the request's
/// [`BodyDeadline`].
pub async fn bytes_within<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, BodyError> {
    let deadline = req.extensions().get::<BodyDeadline>().copied();
    let read = Bytes::from_request(req, state);
    let read = match deadline {
        None => read.await,
        Some(d) => match tokio::time::timeout_at(d.at, read).await {
            Ok(read) => read,
            Err(_) => return Err(BodyError::TimedOut(d.limit)),
        },
    };
    read.map_err(BodyError::Rejected)
}

/// The whole body, within the route's `DefaultBodyLimit` and the request's
/// [`BodyDeadline`].
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        bytes_within(req, state)
            .await
            .map(Body)
            .map_err(BodyError::into_api_error)
    }
}

/// A JSON request body. Unlike `axum::Json` it ignores `Content-Type`:
/// perch's JSON routes have never asked for one.
pub struct JsonBody<T>(pub T);

/// A type a [`JsonBody`] can carry, and how a body that is not one is
/// refused.
pub trait JsonRequest: DeserializeOwned {
    /// What the 400 answer says before serde's reason (`"{MALFORMED}: {e}"`).
    const MALFORMED: &'static str;
}

impl<T: JsonRequest, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<JsonBody<T>, ApiError> {
        let Body(body) = Body::from_request(req, state).await?;
        serde_json::from_slice(&body)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("{}: {e}", T::MALFORMED)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt;

    async fn echo(p: Params) -> String {
        format!("{:?} {:?}", p.all("match[]"), p.get("time"))
    }

    async fn call(content_type: &str, body: &'static str) -> String {
        let r = Router::new()
            .route("/", post(echo))
            .oneshot(
                Request::post("/?match[]=a&time=1")
                    .header(header::CONTENT_TYPE, content_type)
                    .body(axum::body::Body::from(body))
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(r.into_body(), 1 << 10).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn params_keep_repeated_keys_and_the_last_value_wins() {
        assert_eq!(
            call("application/x-www-form-urlencoded", "match[]=b&time=2").await,
            r#"["a", "b"] Some("2")"#
        );
        assert_eq!(
            call("application/json", "match[]=b&time=2").await,
            r#"["a"] Some("1")"#
        );
    }
}
