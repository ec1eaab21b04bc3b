//! The device registry over HTTP, for readers: `GET /api/v1/devices` (every
//! device with whether it is online now; `?q=` narrows to ids, names,
//! makers and models containing the text, `?status=online|offline`) and
//! `GET /api/v1/devices/{id}` (one; an id may hold `/`, as zigbee2mqtt
//! names and OwnTracks ids do).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::get;
use axum::Router;
use devices::{DeviceStatus, Registry};
use serde::Deserialize;

use super::extract::{Path, Query};
use super::wire::Success;
use super::{ApiError, SharedState};

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/devices", get(list))
        .route("/api/v1/devices/{*id}", get(one))
}

/// The registry, when the broker runs (not in `perch bench http`).
pub struct Devices(Arc<Registry>);

impl FromRequestParts<SharedState> for Devices {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, app: &SharedState) -> Result<Devices, ApiError> {
        app.devices
            .clone()
            .map(Devices)
            .ok_or_else(|| ApiError::unavailable("the device registry is not running"))
    }
}

#[derive(Deserialize)]
struct ListQuery {
    q: Option<String>,
    status: Option<String>,
}

async fn list(
    Devices(registry): Devices,
    Query(query): Query<ListQuery>,
) -> Result<Success<Vec<DeviceStatus>>, ApiError> {
    let want_online = match query.status.as_deref() {
        None | Some("") | Some("all") => None,
        Some("online") => Some(true),
        Some("offline") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "invalid parameter \"status\": {other:?} is not online, offline or all"
            )))
        }
    };
    let text = query.q.unwrap_or_default().to_lowercase();
    let matches = |d: &DeviceStatus| {
        let d2 = &d.device;
        text.is_empty()
            || [
                Some(&d2.id),
                d2.name.as_ref(),
                d2.manufacturer.as_ref(),
                d2.model.as_ref(),
                d2.family.as_ref(),
            ]
            .into_iter()
            .flatten()
            .any(|s| s.to_lowercase().contains(&text))
    };
    let all = tokio::task::spawn_blocking(move || registry.list())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(Success(
        all.into_iter()
            .filter(|d| want_online.is_none_or(|w| d.online == w))
            .filter(matches)
            .collect(),
    ))
}

async fn one(
    Devices(registry): Devices,
    Path(id): Path<String>,
) -> Result<Success<DeviceStatus>, ApiError> {
    registry
        .get(&id)
        .map(Success)
        .ok_or_else(|| ApiError::not_found(format!("no device {id:?}")))
}

/// Units of metrics for `/api/v1/metadata`, by metric name.
pub(crate) fn units(app: &SharedState) -> std::collections::BTreeMap<String, Vec<String>> {
    app.devices
        .as_ref()
        .map(|d| {
            d.units()
                .into_iter()
                .map(|(m, u)| (m, u.into_iter().collect()))
                .collect()
        })
        .unwrap_or_default()
}
