//! Signing in and out, onboarding the first admin, and managing users and
//! API tokens. The sign-in routes are public; the rest are admins'.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{self, cookie, ClientKey, Principal, Verdict, SESSION_COOKIE};
use super::extract::{JsonBody, JsonRequest, Path};
use super::wire::SortedKeys;
use super::{ApiError, SharedState};
use accounts::{Accounts, Role, TokenInfo, UserInfo, SESSION_TTL_MS};

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

/// What the dashboard learns of its sign-in (keys sorted, as they have
/// always been).
#[derive(Serialize)]
struct AuthState {
    csrf: Option<String>,
    onboarding: bool,
    /// Why onboarding is closed on a box that had accounts (its database
    /// was set aside) and what to do; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    onboarding_refused: Option<String>,
    user: Option<SignedInUser>,
}

#[derive(Serialize)]
struct SignedInUser {
    name: String,
    role: Role,
}

fn auth_state(app: &SharedState, user: Option<&UserInfo>, csrf: Option<&str>) -> AuthState {
    AuthState {
        csrf: csrf.map(str::to_string),
        onboarding: !app.accounts.has_people(),
        onboarding_refused: app.accounts.accounts_lost_reason(),
        user: user.map(|u| SignedInUser {
            name: u.name.clone(),
            role: u.role,
        }),
    }
}

/// Who the browser is signed in as, whether onboarding is due, and the
/// CSRF token to echo.
async fn state(State(app): State<SharedState>, headers: HeaderMap) -> Json<AuthState> {
    let now = app.storage.now_ms();
    let session = cookie(&headers, SESSION_COOKIE).and_then(|c| app.accounts.session(&c, now));
    match session {
        Some((user, s)) => Json(auth_state(&app, Some(&user), Some(&s.csrf))),
        None => Json(auth_state(&app, None, None)),
    }
}

/// The `{"username", "password"}` body of onboarding and sign-in, at most
/// 64 KiB: these routes are public.
struct Credentials {
    username: String,
    password: String,
}

const MAX_CREDENTIALS_BYTES: usize = 64 * 1024;

impl<S: Send + Sync> FromRequest<S> for Credentials {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Credentials, ApiError> {
        #[derive(Deserialize)]
        struct Body {
            username: String,
            password: String,
        }
        let body = axum::body::to_bytes(req.into_body(), MAX_CREDENTIALS_BYTES)
            .await
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let b: Body = serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(format!(
                "expected {{\"username\": …, \"password\": …}}: {e}"
            ))
        })?;
        Ok(Credentials {
            username: b.username,
            password: b.password,
        })
    }
}

fn signed_in(
    app: &SharedState,
    headers: &HeaderMap,
    user: &UserInfo,
) -> Result<Response, ApiError> {
    let now = app.storage.now_ms();
    let (value, session) = app.accounts.create_session(&user.name, now)?;
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
    let mut r = Json(auth_state(app, Some(user), Some(&session.csrf))).into_response();
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// Creates the first admin of a box nobody has signed in to yet. The
/// credentials are looked at only once the request is known to come from
/// perch's own page.
async fn onboard(
    State(app): State<SharedState>,
    headers: HeaderMap,
    credentials: Result<Credentials, ApiError>,
) -> Result<Response, ApiError> {
    static ONBOARDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    // Another site's page must not claim a fresh box.
    if auth::cross_site(&headers) {
        return Err(ApiError::forbidden("cross-site onboarding refused"));
    }
    let c = credentials?;
    // Two browsers onboarding at once must not both become admin.
    let _one_at_a_time = ONBOARDING.lock().await;
    if app.accounts.has_people() {
        return Err(ApiError::conflict(
            "this perch already has users; sign in instead",
        ));
    }
    if let Some(reason) = app.accounts.accounts_lost_reason() {
        return Err(ApiError::forbidden(reason));
    }
    let accounts = Arc::clone(&app.accounts);
    let now = app.storage.now_ms();
    let user = tokio::task::spawn_blocking(move || {
        accounts.add(&c.username, Role::Admin, &c.password, &[], now)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    tracing::info!(user = %user.name, "first admin created through onboarding");
    signed_in(&app, &headers, &user)
}

async fn login(
    State(app): State<SharedState>,
    ClientKey(ip): ClientKey,
    headers: HeaderMap,
    credentials: Result<Credentials, ApiError>,
) -> Result<Response, ApiError> {
    if auth::cross_site(&headers) {
        return Err(ApiError::forbidden("cross-site sign-in refused"));
    }
    let c = credentials?;
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
        Verdict::Valid(_) => Err(ApiError::forbidden(
            "device accounts cannot sign in to the dashboard",
        )),
        Verdict::Wrong => {
            // Logged (rate-limited) with the recent problems, by auth.
            // No Basic challenge: the sign-in page asked, not the browser.
            Err(ApiError::unauthenticated("wrong user name or password"))
        }
        Verdict::Blocked(wait) => Err(auth::too_many(wait)),
    }
}

async fn logout(
    State(app): State<SharedState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(c) = cookie(&headers, SESSION_COOKIE) {
        app.accounts.end_session(&c)?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(
            header::SET_COOKIE,
            HeaderValue::from_static(
                "perch_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
            ),
        )],
    ))
}

async fn list_users(State(app): State<SharedState>) -> Result<Json<Vec<UserInfo>>, ApiError> {
    Ok(Json(app.accounts.list()?))
}

#[derive(Deserialize)]
struct NewUser {
    name: String,
    role: String,
    password: String,
    #[serde(default)]
    topics: Vec<String>,
}

impl JsonRequest for NewUser {
    const MALFORMED: &'static str = "expected {\"name\": …, \"role\": \"admin\"|\"viewer\"|\"device\", \"password\": …, \"topics\": […]}";
}

async fn add_user(
    State(app): State<SharedState>,
    JsonBody(u): JsonBody<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    let role: Role = u.role.parse()?;
    let accounts = Arc::clone(&app.accounts);
    let now = app.storage.now_ms();
    let user = tokio::task::spawn_blocking(move || {
        accounts.add(&u.name, role, &u.password, &u.topics, now)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    app.user_added(&user.name);
    Ok((StatusCode::CREATED, Json(user)))
}

async fn delete_user(
    State(app): State<SharedState>,
    who: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    // Two deletions at once must not remove the last two admins.
    static DELETING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = DELETING.lock().await;
    let users = app.accounts.list()?;
    let admins = users.iter().filter(|u| u.role == Role::Admin).count();
    let target_is_admin = users
        .iter()
        .any(|u| u.name == name && u.role == Role::Admin);
    if target_is_admin && admins == 1 {
        return Err(ApiError::conflict(format!(
            "{name:?} is the last admin; add another admin first"
        )));
    }
    if !app.accounts.delete(&name)? {
        return Err(ApiError::not_found(format!("no user {name:?}")));
    }
    tracing::info!(user = %name, by = %who.user.name, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn list_tokens(State(app): State<SharedState>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(app.accounts.list_tokens()?))
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
    role: String,
}

impl JsonRequest for NewToken {
    const MALFORMED: &'static str =
        "expected {\"name\": …, \"role\": \"admin\"|\"viewer\"|\"device\"}";
}

/// A new token with its secret, shown this once.
#[derive(Serialize)]
struct CreatedToken {
    #[serde(flatten)]
    info: TokenInfo,
    token: String,
}

async fn add_token(
    State(app): State<SharedState>,
    who: Principal,
    JsonBody(t): JsonBody<NewToken>,
) -> Result<impl IntoResponse, ApiError> {
    let role: Role = t.role.parse()?;
    let (token, info) =
        app.accounts
            .create_token(&t.name, role, &who.user.name, app.storage.now_ms())?;
    Ok((
        StatusCode::CREATED,
        Json(SortedKeys(CreatedToken { info, token })),
    ))
}

async fn delete_token(
    State(app): State<SharedState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.accounts.delete_token(&id)? {
        return Err(ApiError::not_found(format!("no token {id:?}")));
    }
    Ok(StatusCode::NO_CONTENT)
}
