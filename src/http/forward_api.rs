//! `GET /api/v1/forward`: each forwarding target's status.

use std::sync::Arc;

use axum::{Extension, Json};

use crate::forward::{Forwarder, TargetStatus};

pub async fn status(f: Option<Extension<Arc<Forwarder>>>) -> Json<Vec<TargetStatus>> {
    Json(f.map(|Extension(f)| f.status()).unwrap_or_default())
}
