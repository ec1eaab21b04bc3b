//! Request parameters from the query string and, for POST, a form body —
//! with repeated keys such as `match[]` kept.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method};

pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn from_request(
        method: &Method,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Params {
        let mut v: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if method == Method::POST && is_form {
            v.extend(form_urlencoded::parse(body).into_owned());
        }
        Params(v)
    }

    pub fn from_query(query: Option<&str>) -> Params {
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
