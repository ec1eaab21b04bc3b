//! `GET /metrics`: perch's self-metrics (host, process, store, and whatever
//! else registers) in the Prometheus text exposition format 0.0.4, so a
//! central Prometheus can scrape a fleet of perches.
//!
//! Owns only the translation to HTTP. The [`Registry`] is handed in as an
//! `axum::Extension<Arc<Registry>>` layered onto the router by the server;
//! this handler gathers it (which reads `/proc`, so on a blocking thread) and
//! renders it with `system::metrics`.

use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;

use super::ApiError;
use base::metrics::{render_prometheus_text, Registry};

/// The content type Prometheus expects for the 0.0.4 text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn prometheus(registry: Option<Extension<Arc<Registry>>>) -> Response {
    let Some(Extension(registry)) = registry else {
        // The route exists but the server did not layer a registry onto it:
        // say so instead of serving an empty (and misleading) exposition.
        return ApiError::unavailable("self-metrics are not set up in this server").into_response();
    };
    match tokio::task::spawn_blocking(move || render_prometheus_text(&registry.gather())).await {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(e) => ApiError::internal(format!("gathering metrics failed: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use base::metrics::{MetricPoint, MetricSource};
    use tower::ServiceExt;

    struct One;

    impl MetricSource for One {
        fn collect(&self, out: &mut Vec<MetricPoint>) {
            out.push(MetricPoint::gauge("perch_test", "A test.", 1.0));
        }
    }

    async fn call(app: Router) -> (StatusCode, Option<String>, String) {
        let resp = app
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn serves_the_registry_as_text() {
        let registry = Arc::new(Registry::new());
        registry.register(Arc::new(One));
        let app = Router::new()
            .route("/metrics", get(prometheus))
            .layer(Extension(registry));
        let (status, ct, body) = call(app).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some(CONTENT_TYPE));
        assert_eq!(
            body,
            "# HELP perch_test A test.\n# TYPE perch_test gauge\nperch_test 1\n"
        );
    }

    #[tokio::test]
    async fn without_a_registry_answers_503() {
        let app = Router::new().route("/metrics", get(prometheus));
        let (status, _, _) = call(app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
