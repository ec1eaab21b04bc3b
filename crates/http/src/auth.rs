//! Who is making the request, and whether that role may. Every route but
//! `/healthz`, the sign-in API and the web assets needs credentials: a
//! session cookie (the dashboard), `Authorization: Basic` (a user),
//! `Bearer` or `Token` (an API token; `Token` is what InfluxDB clients send),
//! or, for GET only, an API token in a `token` query parameter (players).
//! Passwords go through the accounts' sign-in limiter, shared with MQTT
//! (`accounts::LoginLimiter`: failures held per address and user name, per
//! user name, and slowed per address); a held-back sign-in gets 429 with
//! `Retry-After`, a full sign-in queue 503. Unknown API tokens are counted
//! per address: past a few a minute the answer is 429, though a valid token
//! always passes. Refusals are recorded in the recent problems the Overview
//! shows (`base::problems`), as are requests refused for the account's
//! role.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use base::problems::{Problem, ProblemKind};
use base::ErrorKind;
use base64::Engine;

use super::{ApiError, SharedState};
use accounts::{constant_time_eq, Held, Role, SignIn, UserInfo};

/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "perch_session";
/// The header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated identity attached to a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub user: UserInfo,
    pub via: Via,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    Session,
    Password,
    Token,
}

/// The identity [`authenticate`] attached; every route behind it has one.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Principal, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(sign_in)
    }
}

/// The rate limiter's key for the client's address ([`client_key`]).
pub struct ClientKey(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientKey {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<ClientKey, std::convert::Infallible> {
        Ok(ClientKey(client_key(&parts.extensions)))
    }
}

/// A request a page made by script (fetch, EventSource, an image): browsers
/// say so in `Sec-Fetch-Mode`; other clients send no such header.
fn from_page_script(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-mode")
        .is_some_and(|m| m.as_bytes() != b"navigate")
}

/// 401, with a Basic challenge unless a page's script asked (the browser
/// would open its password dialog instead of the page sending the user to
/// sign in).
fn unauthorized_for(headers: &HeaderMap, msg: &str) -> ApiError {
    let e = ApiError::unauthenticated(msg);
    if from_page_script(headers) {
        e
    } else {
        e.with_challenge()
    }
}

/// 401 with a Basic challenge, for a route reached without an identity.
fn sign_in() -> ApiError {
    ApiError::unauthenticated("sign in").with_challenge()
}

/// The answer to a sign-in the limiter held back: 429 after failures, 503
/// while too many sign-ins are in progress; both say when to retry.
pub fn too_many(held: Held) -> ApiError {
    match held {
        Held::Blocked { retry_after_secs } => ApiError::new(
            ErrorKind::RateLimited,
            format!("too many failed sign-ins; try again in {retry_after_secs} s"),
        )
        .with_retry_after(retry_after_secs),
        Held::Busy { retry_after_secs } => ApiError::new(
            ErrorKind::Unavailable,
            format!("too many sign-ins in progress; try again in {retry_after_secs} s"),
        )
        .with_retry_after(retry_after_secs),
    }
}

/// Why a held-back sign-in was refused, for the recent problems: without
/// the wait, so that a flood is one line there.
fn held_reason(held: Held) -> &'static str {
    match held {
        Held::Blocked { .. } => "too many failed sign-ins: held back",
        Held::Busy { .. } => "too many sign-ins in progress: asked to retry",
    }
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

/// The value of one cookie in the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The rate limiter's key for the client's address.
pub fn client_key(req_extensions: &axum::http::Extensions) -> String {
    match req_extensions.get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => format!("ip:{}", addr.ip()),
        None => "ip:unknown".to_string(),
    }
}

/// The client's IP address, as the connection says.
pub fn client_ip(req_extensions: &axum::http::Extensions) -> Option<IpAddr> {
    req_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// Who made a request and from where, for the problems it causes: the
/// authenticated user's name (`anonymous` before authentication) and the
/// client's address.
pub struct Caller {
    pub who: String,
    pub ip: Option<IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Self::Rejection> {
        Ok(Caller {
            who: parts
                .extensions
                .get::<Principal>()
                .map_or_else(|| "anonymous".to_string(), |p| p.user.name.clone()),
            ip: client_ip(&parts.extensions),
        })
    }
}

/// Records a refused sign-in in the recent problems.
fn report_sign_in(app: &SharedState, who: &str, ip: Option<IpAddr>, why: &str) {
    let problem = Problem::new(ProblemKind::HttpSignIn, who, why).with_address(ip);
    base::problems::record(problem, app.storage.now_ms());
}

/// Why a password was refused: an unknown user or a wrong password.
fn wrong_password_reason(app: &SharedState, name: &str, via: &str) -> String {
    let what = if app.accounts.get(name).is_some() {
        "wrong password"
    } else {
        "unknown user"
    };
    format!("{what} ({via})")
}

enum Credential {
    Password(String, String),
    Token(String),
    Session(String),
}

/// The credential a request carries; `Err` names what is wrong with it.
fn credential(req: &Request) -> Result<Option<Credential>, &'static str> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or("");
        if let Some(pair) = basic_credentials(value) {
            return Ok(Some(Credential::Password(pair.0, pair.1)));
        }
        for scheme in ["Bearer ", "bearer ", "Token ", "token "] {
            if let Some(secret) = value.strip_prefix(scheme) {
                return Ok(Some(Credential::Token(secret.trim().to_string())));
            }
        }
        return Err("unsupported or malformed Authorization header; use Basic, Bearer or Token");
    }
    if let Some(c) = cookie(req.headers(), SESSION_COOKIE) {
        return Ok(Some(Credential::Session(c)));
    }
    // Players that cannot send headers (a WebSocket from a page of another
    // origin, ffmpeg, VLC) may carry an API token in the URL, for reading.
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        let token = req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .find(|(k, _)| *k == "token")
                .map(|(_, v)| v.to_string())
        });
        if let Some(t) = token {
            return Ok(Some(Credential::Token(t)));
        }
    }
    Ok(None)
}

/// `host[:port]` without the scheme's default port, lowercased.
fn normal_host(host: &str, https: bool) -> String {
    let host = host.trim().to_ascii_lowercase();
    let default = if https { ":443" } else { ":80" };
    host.strip_suffix(default)
        .map_or(host.clone(), str::to_string)
}

/// A request sent by another site's page, which the browser would send
/// with the user's cookie or cached Basic credentials (CSRF): it says so in
/// `Sec-Fetch-Site`, or its `Origin` names another host than the one it was
/// sent to (`Host`, or `X-Forwarded-Host` behind a reverse proxy). Clients
/// that are not browsers send neither header.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return true;
    }
    let Some(origin) = text("origin") else {
        return false;
    };
    if origin == "null" {
        return true;
    }
    let (scheme, origin_host) = origin.split_once("://").unwrap_or(("http", origin));
    let https = scheme.eq_ignore_ascii_case("https");
    let origin_host = normal_host(origin_host, https);
    let candidates = [text("x-forwarded-host"), text("host")];
    !candidates
        .into_iter()
        .flatten()
        .flat_map(|h| h.split(','))
        .any(|h| normal_host(h, https) == origin_host)
}

pub async fn authenticate(
    State(app): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let now_ms = app.storage.now_ms();
    let cred =
        match credential(&req) {
            Ok(Some(c)) => c,
            Ok(None) => return Err(unauthorized_for(
                req.headers(),
                "sign in: a session cookie, Basic auth or an API token (Bearer/Token) is required",
            )),
            Err(why) => {
                let ip = client_ip(req.extensions());
                report_sign_in(&app, "anonymous", ip, why);
                return Err(unauthorized_for(req.headers(), why));
            }
        };
    let ip = client_ip(req.extensions());
    let principal = match cred {
        Credential::Session(cookie) => {
            let Some((user, session)) = app.accounts.session(&cookie, now_ms) else {
                return Err(unauthorized_for(
                    req.headers(),
                    "the session has ended; sign in again",
                ));
            };
            let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
            if cross_site(req.headers()) {
                return Err(ApiError::forbidden(
                    "cross-site request with the session cookie refused",
                ));
            }
            if !safe {
                let given = req
                    .headers()
                    .get(CSRF_HEADER)
                    .map(|v| v.as_bytes())
                    .unwrap_or(b"");
                if !constant_time_eq(given, session.csrf.as_bytes()) {
                    return Err(ApiError::forbidden(
                        "missing or wrong X-CSRF-Token header for a session request",
                    ));
                }
            }
            Principal {
                user,
                via: Via::Session,
            }
        }
        Credential::Password(name, password) => {
            // Browsers replay cached Basic credentials to other sites' forms.
            if cross_site(req.headers()) {
                return Err(ApiError::forbidden(
                    "cross-site request with Basic credentials refused",
                ));
            }
            let who = name.clone();
            match check_password(&app, ip, now_ms, &name, &password).await {
                Verdict::Valid(user) => Principal {
                    user,
                    via: Via::Password,
                },
                Verdict::Wrong => {
                    let why = wrong_password_reason(&app, &who, "Basic auth");
                    report_sign_in(&app, &who, ip, &why);
                    return Err(unauthorized_for(
                        req.headers(),
                        "invalid user name or password",
                    ));
                }
                Verdict::Blocked(held) => {
                    report_sign_in(&app, &who, ip, held_reason(held));
                    return Err(too_many(held));
                }
            }
        }
        Credential::Token(secret) => {
            // A token check is a hash lookup: no queue. A valid token always
            // passes; only the answer to unknown ones changes with their
            // number.
            match app.accounts.verify_token(&secret, now_ms) {
                Some(user) => Principal {
                    user,
                    via: Via::Token,
                },
                None => {
                    let why = "invalid or deleted API token";
                    report_sign_in(&app, "anonymous", ip, why);
                    if let Some(wait) = app.accounts.limiter.token_failed(ip, now_ms) {
                        return Err(ApiError::new(
                            ErrorKind::RateLimited,
                            format!("too many invalid API tokens; try again in {wait} s"),
                        )
                        .with_retry_after(wait));
                    }
                    return Err(unauthorized_for(req.headers(), why));
                }
            }
        }
    };
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(RequestTime(now_ms));
    Ok(next.run(req).await)
}

/// What a password check decided.
pub enum Verdict {
    Valid(UserInfo),
    Wrong,
    /// Not checked: held back after failures, or too many in progress.
    Blocked(Held),
}

/// [`check_password`] for the dashboard's sign-in page, which records what
/// it refuses in the recent problems: a wrong password, an unknown user, too
/// many failures, a device account (which may not sign in there). `keys`
/// are the limiter's keys the page had (`ip:<address>` names the client).
pub async fn verify_password(
    app: &SharedState,
    keys: &[String],
    now_ms: i64,
    name: String,
    password: String,
) -> Verdict {
    let ip = keys
        .iter()
        .find_map(|k| k.strip_prefix("ip:"))
        .and_then(|ip| ip.parse().ok());
    let verdict = check_password(app, ip, now_ms, &name, &password).await;
    let why = match &verdict {
        Verdict::Valid(user) if user.role == Role::Device => {
            "device accounts cannot sign in to the dashboard".to_string()
        }
        Verdict::Valid(_) => return verdict,
        Verdict::Wrong => wrong_password_reason(app, &name, "sign-in page"),
        Verdict::Blocked(held) => held_reason(*held).to_string(),
    };
    report_sign_in(app, &name, ip, &why);
    verdict
}

/// Checks a password from `ip` through the accounts' sign-in limiter,
/// shared with MQTT ([`accounts::Accounts::sign_in`]): credentials verified
/// recently pass at once (Grafana's parallel panels send Basic on every
/// request); others queue for one of a few argon2 checks.
async fn check_password(
    app: &SharedState,
    ip: Option<IpAddr>,
    now_ms: i64,
    name: &str,
    password: &str,
) -> Verdict {
    match app.accounts.sign_in(ip, name, password, now_ms).await {
        SignIn::Valid(user) => Verdict::Valid(user),
        SignIn::Wrong => Verdict::Wrong,
        SignIn::Held(held) => Verdict::Blocked(held),
    }
}

fn role_of(req: &Request) -> Option<Role> {
    req.extensions().get::<Principal>().map(|p| p.user.role)
}

/// 403 for a request its account's role may not make, recorded in the
/// recent problems with the route.
fn refused_for_role(req: &Request, why: &'static str) -> ApiError {
    if let Some(p) = req.extensions().get::<Principal>() {
        let problem = Problem::new(ProblemKind::HttpSignIn, &p.user.name, why)
            .with_address(client_ip(req.extensions()))
            .with_route(req.uri().path());
        // The request's time: this layer has no state; the authentication
        // before it took it from the clock.
        let now_ms = req.extensions().get::<RequestTime>().map_or(0, |t| t.0);
        base::problems::record(problem, now_ms);
    }
    ApiError::forbidden(why)
}

/// When [`authenticate`] took the request, from the store's clock.
#[derive(Clone, Copy)]
struct RequestTime(i64);

/// Routes that read data: admins and viewers (devices only write).
pub async fn readers(req: Request, next: Next) -> Result<Response, ApiError> {
    match role_of(&req) {
        Some(Role::Admin | Role::Viewer) => Ok(next.run(req).await),
        Some(Role::Device) => Err(refused_for_role(
            &req,
            "device accounts may only publish and write",
        )),
        None => Err(sign_in()),
    }
}

/// Routes that write data: admins and devices (viewers only read).
pub async fn writers(req: Request, next: Next) -> Result<Response, ApiError> {
    match role_of(&req) {
        Some(Role::Admin | Role::Device) => Ok(next.run(req).await),
        Some(Role::Viewer) => Err(refused_for_role(
            &req,
            "viewer accounts may read and watch, not write",
        )),
        None => Err(sign_in()),
    }
}

/// Settings, users, tokens, backups: admins only.
pub async fn admins(req: Request, next: Next) -> Result<Response, ApiError> {
    match role_of(&req) {
        Some(Role::Admin) => Ok(next.run(req).await),
        Some(_) => Err(refused_for_role(&req, "only admins may do this")),
        None => Err(sign_in()),
    }
}

/// What a request wants to do with something people look at (cameras).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Watch and read: admins and viewers.
    Watch,
    /// Add, change, delete: admins.
    Manage,
}

/// Whether the principal's role may do what the request needs.
pub fn allowed(principal: &Principal, need: Need) -> Result<(), ApiError> {
    match (principal.user.role, need) {
        (Role::Admin, _) | (Role::Viewer, Need::Watch) => Ok(()),
        (Role::Viewer, Need::Manage) => {
            Err(ApiError::forbidden("viewers may watch, not change cameras"))
        }
        (Role::Device, _) => Err(ApiError::forbidden(
            "device accounts may only publish and write",
        )),
    }
}
