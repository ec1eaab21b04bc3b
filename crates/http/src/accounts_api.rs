//! Signing in and out, onboarding the first admin, and managing users and
//! API tokens. The sign-in routes are public; the rest are admins'.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, cookie, Principal, Verdict, SESSION_COOKIE};
use super::{ApiError, SharedState};
use accounts::{AccountError, Accounts, Role, UserInfo, SESSION_TTL_MS};

/// `/api/v1/auth/*`: reachable without credentials.
pub fn public_routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/auth/state", get(state))
        .route("/api/v1/auth/onboard", post(onboard))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
}

/// Users and tokens: behind authentication, for admins.
pub fn admin_routes() -> Router<SharedState> {
    Router::new()
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{name}", delete(delete_user))
        .route("/api/v1/tokens", get(list_tokens).post(add_token))
        .route("/api/v1/tokens/{id}", delete(delete_token))
}

fn account_error(e: AccountError) -> Response {
    match e {
        AccountError::Exists(_) => ApiError::conflict(e.to_string()).into_response(),
        AccountError::Db(_) | AccountError::Corrupt(_) | AccountError::Hash(_) => {
            ApiError::internal(e.to_string()).into_response()
        }
        _ => ApiError::bad_data(e.to_string()).into_response(),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_data(format!("expected {shape}: {e}")))
}

fn state_body(app: &SharedState, user: Option<&UserInfo>, csrf: Option<&str>) -> serde_json::Value {
    json!({
        "onboarding": !app.accounts.has_people(),
        "user": user.map(|u| json!({"name": u.name, "role": u.role})),
        "csrf": csrf,
    })
}

/// Who the browser is signed in as, whether onboarding is due, and the
/// CSRF token to echo.
async fn state(State(app): State<SharedState>, headers: HeaderMap) -> Response {
    let now = app.storage.now_ms();
    let session = cookie(&headers, SESSION_COOKIE).and_then(|c| app.accounts.session(&c, now));
    match session {
        Some((user, s)) => Json(state_body(&app, Some(&user), Some(&s.csrf))).into_response(),
        None => Json(state_body(&app, None, None)).into_response(),
    }
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// The `{"username", "password"}` body of onboarding and sign-in.
async fn credentials(req: Request) -> Result<Credentials, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_data(e.to_string()))?;
    parse_json(&body, "{\"username\": …, \"password\": …}")
}

fn signed_in(app: &SharedState, headers: &HeaderMap, user: &UserInfo) -> Response {
    let now = app.storage.now_ms();
    let (value, session) = match app.accounts.create_session(&user.name, now) {
        Ok(s) => s,
        Err(e) => return account_error(e),
    };
    // perch itself speaks plain HTTP; behind a TLS proxy the cookie must
    // not travel over plain HTTP again.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    );
    let mut r = Json(state_body(app, Some(user), Some(&session.csrf))).into_response();
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Creates the first admin of a box nobody has signed in to yet.
async fn onboard(State(app): State<SharedState>, req: Request) -> Response {
    static ONBOARDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let headers = req.headers().clone();
    // Another site's page must not claim a fresh box.
    if auth::cross_site(&headers) {
        return auth::forbidden("cross-site onboarding refused");
    }
    let c = match credentials(req).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // Two browsers onboarding at once must not both become admin.
    let _one_at_a_time = ONBOARDING.lock().await;
    if app.accounts.has_people() {
        return ApiError::conflict("this perch already has users; sign in instead").into_response();
    }
    let accounts = Arc::clone(&app.accounts);
    let now = app.storage.now_ms();
    let added = tokio::task::spawn_blocking(move || {
        accounts.add(&c.username, Role::Admin, &c.password, &[], now)
    })
    .await;
    match added {
        Ok(Ok(user)) => {
            tracing::info!(user = %user.name, "first admin created through onboarding");
            signed_in(&app, &headers, &user)
        }
        Ok(Err(e)) => account_error(e),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

async fn login(State(app): State<SharedState>, req: Request) -> Response {
    let ip = auth::client_key(req.extensions());
    let headers = req.headers().clone();
    if auth::cross_site(&headers) {
        return auth::forbidden("cross-site sign-in refused");
    }
    let c = match credentials(req).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let now = app.storage.now_ms();
    let mut keys = vec![ip];
    if Accounts::plausible_name(&c.username) {
        keys.push(format!("user:{}", c.username));
    }
    let username = c.username.clone();
    match auth::verify_password(&app, &keys, now, username, c.password).await {
        Verdict::Valid(user) if user.role != Role::Device => {
            tracing::info!(user = %user.name, "signed in");
            signed_in(&app, &headers, &user)
        }
        Verdict::Valid(_) => auth::forbidden("device accounts cannot sign in to the dashboard"),
        Verdict::Wrong => {
            tracing::warn!(user = %c.username.chars().take(64).collect::<String>(), "failed sign-in");
            auth::unauthorized_quietly("wrong user name or password")
        }
        Verdict::Blocked(wait) => auth::too_many(wait),
    }
}

async fn logout(State(app): State<SharedState>, headers: HeaderMap) -> Response {
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = app.accounts.end_session(&c) {
            return account_error(e);
        }
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        header::HeaderValue::from_static(
            "perch_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

async fn list_users(State(app): State<SharedState>) -> Response {
    match app.accounts.list() {
        Ok(users) => Json(users).into_response(),
        Err(e) => account_error(e),
    }
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: String,
    password: String,
    #[serde(default)]
    topics: Vec<String>,
}

async fn add_user(State(app): State<SharedState>, body: axum::body::Bytes) -> Response {
    let u: NewUser = match parse_json(
        &body,
        "{\"name\": …, \"role\": \"admin\"|\"viewer\"|\"device\", \"password\": …, \"topics\": […]}",
    ) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let role: Role = match u.role.parse() {
        Ok(r) => r,
        Err(e) => return account_error(e),
    };
    let accounts = Arc::clone(&app.accounts);
    let now = app.storage.now_ms();
    let added = tokio::task::spawn_blocking(move || {
        accounts.add(&u.name, role, &u.password, &u.topics, now)
    })
    .await;
    match added {
        Ok(Ok(user)) => (StatusCode::CREATED, Json(user)).into_response(),
        Ok(Err(e)) => account_error(e),
        Err(e) => ApiError::internal(e.to_string()).into_response(),
    }
}

async fn delete_user(
    State(app): State<SharedState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
) -> Response {
    // Two deletions at once must not remove the last two admins.
    static DELETING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = DELETING.lock().await;
    let users = match app.accounts.list() {
        Ok(u) => u,
        Err(e) => return account_error(e),
    };
    let admins = users.iter().filter(|u| u.role == Role::Admin).count();
    let target_is_admin = users
        .iter()
        .any(|u| u.name == name && u.role == Role::Admin);
    if target_is_admin && admins == 1 {
        return ApiError::conflict(format!(
            "{name:?} is the last admin; add another admin first"
        ))
        .into_response();
    }
    match app.accounts.delete(&name) {
        Ok(true) => {
            tracing::info!(user = %name, by = %who.user.name, "user deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => ApiError::not_found(format!("no user {name:?}")).into_response(),
        Err(e) => account_error(e),
    }
}

async fn list_tokens(State(app): State<SharedState>) -> Response {
    match app.accounts.list_tokens() {
        Ok(t) => Json(t).into_response(),
        Err(e) => account_error(e),
    }
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    role: String,
}

async fn add_token(
    State(app): State<SharedState>,
    Extension(who): Extension<Principal>,
    body: axum::body::Bytes,
) -> Response {
    let t: NewToken = match parse_json(
        &body,
        "{\"name\": …, \"role\": \"admin\"|\"viewer\"|\"device\"}",
    ) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let role: Role = match t.role.parse() {
        Ok(r) => r,
        Err(e) => return account_error(e),
    };
    match app
        .accounts
        .create_token(&t.name, role, &who.user.name, app.storage.now_ms())
    {
        Ok((secret, info)) => {
            let mut body = serde_json::to_value(&info).expect("serializable");
            body["token"] = secret.into();
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e) => account_error(e),
    }
}

async fn delete_token(State(app): State<SharedState>, Path(id): Path<String>) -> Response {
    match app.accounts.delete_token(&id) {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => ApiError::not_found(format!("no token {id:?}")).into_response(),
        Err(e) => account_error(e),
    }
}
