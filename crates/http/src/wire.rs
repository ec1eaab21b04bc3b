//! What the JSON answers of perch's own API share: the success envelope,
//! and the sorted key order of answers that were always built as
//! `serde_json::Value`s. Each API's own wire types live next to it.

use axum::response::{IntoResponse, Response};
use serde::ser::{Error as _, SerializeStruct};
use serde::{Serialize, Serializer};

/// `{"data":…,"status":"success"}`: perch's envelope (keys sorted, as they
/// were when it was a `serde_json::Value`). The Prometheus results that
/// Grafana reads use Prometheus' order instead
/// (`prom_wire::PrometheusSuccess`).
pub struct Success<T>(pub T);

impl<T: Serialize> Serialize for Success<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut envelope = s.serialize_struct("Success", 2)?;
        envelope.serialize_field("data", &self.0)?;
        envelope.serialize_field("status", "success")?;
        envelope.end()
    }
}

impl<T: Serialize> IntoResponse for Success<T> {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}

/// `{"status":"success"}`, for changes that have nothing else to say.
#[derive(Serialize)]
pub struct Done {
    status: &'static str,
}

pub const DONE: Done = Done { status: "success" };

/// Serializes `T` with the keys of every object sorted, through a
/// `serde_json::Value`: these answers (cameras, MQTT explorer, search,
/// settings, storage status) were built with `json!`, whose objects sort
/// their keys, and keep that order for clients that compare bytes. The
/// detour costs what it always did.
pub struct SortedKeys<T>(pub T);

impl<T: Serialize> Serialize for SortedKeys<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::to_value(&self.0)
            .map_err(S::Error::custom)?
            .serialize(s)
    }
}
