//! `GET /metrics`: perch's self-metrics (host, process, store, and whatever
//! else registers) in the Prometheus text exposition format 0.0.4, so a
//! central Prometheus can scrape a fleet of perches.
//!
//! Owns only the translation to HTTP. The `base::metrics::Registry` is the server's
//! (`AppState::metrics`); this handler gathers it (which reads `/proc`, so
//! on a blocking thread) and renders it with `base::metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{ApiError, SharedState};
use base::metrics::render_prometheus_text;

/// The content type Prometheus expects for the 0.0.4 text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub async fn prometheus(State(app): State<SharedState>) -> Result<impl IntoResponse, ApiError> {
    // The route exists but the server set up no registry: say so instead of
    // serving an empty (and misleading) exposition.
    let registry = app
        .metrics
        .clone()
        .ok_or_else(|| ApiError::unavailable("self-metrics are not set up in this server"))?;
    let body = tokio::task::spawn_blocking(move || render_prometheus_text(&registry.gather()))
        .await
        .map_err(|e| ApiError::internal(format!("gathering metrics failed: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use base::metrics::{MetricPoint, MetricSource, Registry};
    use tower::ServiceExt;

    struct One;

    impl MetricSource for One {
        fn collect(&self, out: &mut Vec<MetricPoint>) {
            out.push(MetricPoint::gauge("perch_test", "A test.", 1.0));
        }
    }

    async fn call(registry: Option<Arc<Registry>>) -> (StatusCode, Option<String>, String) {
        let (app, _dir) = crate::tests::state(|s| s.metrics = registry);
        let router = Router::new()
            .route("/metrics", get(prometheus))
            .with_state(app);
        let resp = router
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
        let (status, ct, body) = call(Some(registry)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some(CONTENT_TYPE));
        assert_eq!(
            body,
            "# HELP perch_test A test.\n# TYPE perch_test gauge\nperch_test 1\n"
        );
    }

    #[tokio::test]
    async fn without_a_registry_answers_503() {
        let (status, _, _) = call(None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
