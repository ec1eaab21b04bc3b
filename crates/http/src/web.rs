//! The dashboard's assets (`web/`, embedded at build time) and its pages.
//! Every page path serves the same shell (`web/index.html`), which renders
//! the page in the browser; without a live session a page request is sent
//! to `/login`, or to `/onboarding` while nobody has an account.
//! Assets are served from memory only, so no request path reaches the disk.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};
use sha2::{Digest, Sha256};

use super::auth::{cookie, SESSION_COOKIE};
use super::SharedState;

// Only what the browser loads: `web/` also holds the npm manifest (and,
// while vendoring, node_modules) that must not end up in the binary.
static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web/assets");
static INDEX: &[u8] = include_bytes!("../../../web/index.html");

fn file(path: &str) -> Option<&'static [u8]> {
    if path == "index.html" {
        return Some(INDEX);
    }
    ASSETS
        .get_file(path.strip_prefix("assets/")?)
        .map(|f| f.contents())
}

/// The dashboard's pages: the nav bar's seven, a camera's own page and a
/// device's (whose id may hold `/`, so the rest of the path is its id). The
/// Metrics page lives at `/graph` (as in Prometheus' own UI): `/metrics` is
/// where Prometheus scrapes perch.
const PAGES: &[&str] = &[
    "/overview",
    "/explorer",
    "/devices",
    "/devices/{*id}",
    "/connect",
    "/graph",
    "/alerts",
    "/cameras",
    "/cameras/{name}",
    "/search",
    "/settings",
];

pub fn routes() -> Router<SharedState> {
    let mut r = Router::new()
        .route("/", get(|| async { Redirect::to("/overview") }))
        .route("/login", get(open_page))
        .route("/onboarding", get(open_page))
        .route("/assets/{*path}", get(asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }));
    for page in PAGES {
        r = r.route(page, get(signed_in_page));
    }
    r.layer(tower_http::compression::CompressionLayer::new())
}

fn etags() -> &'static HashMap<String, String> {
    static ETAGS: OnceLock<HashMap<String, String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        let tag = |contents: &[u8]| {
            let digest = Sha256::digest(contents);
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        };
        let mut map = HashMap::new();
        map.insert("index.html".to_string(), tag(INDEX));
        let mut stack = vec![&ASSETS];
        while let Some(dir) = stack.pop() {
            for entry in dir.entries() {
                if let Some(d) = entry.as_dir() {
                    stack.push(d);
                } else if let Some(f) = entry.as_file() {
                    if let Some(p) = f.path().to_str() {
                        map.insert(format!("assets/{p}"), tag(f.contents()));
                    }
                }
            }
        }
        map
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// One embedded file. `no-cache` with an ETag: browsers revalidate (a 304
/// of a few bytes) and never run yesterday's script against today's API.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    if path.split('/').any(|part| part == ".." || part.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (Some(contents), Some(etag)) = (file(path), etags().get(path)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let mut r = contents.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    if path.ends_with(".html") {
        // The dashboard is never framed by another site (clickjacking).
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; \
                 style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
            ),
        );
    }
    r
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&format!("assets/{path}"), &headers)
}

async fn open_page(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn signed_in_page(
    State(app): State<SharedState>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let now = app.storage.now_ms();
    let live =
        cookie(&headers, SESSION_COOKIE).is_some_and(|c| app.accounts.session(&c, now).is_some());
    if live {
        serve("index.html", &headers)
    } else if app.accounts.has_people() {
        // Back to the page asked for (a shared chart link) after signing in.
        let wanted = uri.path_and_query().map_or("/overview", |p| p.as_str());
        let next: String = url::form_urlencoded::byte_serialize(wanted.as_bytes()).collect();
        Redirect::to(&format!("/login?next={next}")).into_response()
    } else {
        Redirect::to("/onboarding").into_response()
    }
}
