//! Who is making the request. Until the accounts issue makes sign-in
//! mandatory, requests without credentials pass as anonymous; credentials
//! that are present must be valid.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::SharedState;
use crate::accounts::UserInfo;

#[derive(Clone, Debug)]
pub enum Principal {
    Anonymous,
    User(UserInfo),
}

fn unauthorized(msg: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "status": "error", "errorType": "unauthorized", "error": msg
        })),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"perch\""),
    );
    r
}

/// Decodes `Authorization: Basic base64(user:password)`.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

pub async fn authenticate(
    State(app): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match req.headers().get(header::AUTHORIZATION) {
        None => Principal::Anonymous,
        Some(value) => {
            let Some((user, password)) = value.to_str().ok().and_then(basic_credentials) else {
                return unauthorized("unsupported or malformed Authorization header; use Basic");
            };
            let accounts = app.accounts.clone();
            // argon2 is deliberately slow: keep it off the async workers.
            let verified = tokio::task::spawn_blocking(move || accounts.verify(&user, &password))
                .await
                .ok()
                .flatten();
            match verified {
                Some(info) => Principal::User(info),
                None => return unauthorized("invalid user name or password"),
            }
        }
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// What a request wants to do with something people look at (cameras).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Watch and read: admins and viewers.
    Watch,
    /// Add, change, delete: admins.
    Manage,
}

/// Only signed-in people watch cameras: once an admin or viewer account
/// exists, anonymous requests get 401 and devices 403. Before the first
/// account (a freshly flashed box) everything is open, like the rest of the
/// API until the dashboard's sign-in lands.
/// Returns the response refusing the request, if it is refused.
pub fn refusal(app: &SharedState, principal: &Principal, need: Need) -> Option<Response> {
    use crate::accounts::Role;
    let forbidden = |msg: &str| {
        (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({
                "status": "error", "errorType": "forbidden", "error": msg
            })),
        )
            .into_response()
    };
    match principal {
        Principal::User(u) => match (u.role, need) {
            (Role::Admin, _) | (Role::Viewer, Need::Watch) => None,
            (Role::Viewer, Need::Manage) => {
                Some(forbidden("viewers may watch, not change cameras"))
            }
            (Role::Device, _) => Some(forbidden("device accounts may only publish and write")),
        },
        Principal::Anonymous if app.accounts.has_people() => Some(unauthorized(
            "sign in (Basic auth) as an admin or viewer to watch cameras",
        )),
        Principal::Anonymous => None,
    }
}
