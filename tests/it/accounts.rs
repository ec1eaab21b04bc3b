//! Accounts and access end to end: onboarding, sessions with CSRF, API
//! tokens, roles, the sign-in rate limit, and the dashboard's static files.
//! Every route without credentials answers 401.

use crate::common;

use std::io::{Read, Write};

use common::{basic, Perch, Resp};

const NO_BODY: Option<&[u8]> = None;

/// Every API route perch serves, with a method it answers.
const API_ROUTES: &[(&str, &str)] = &[
    ("POST", "/write"),
    ("POST", "/api/v2/write"),
    ("POST", "/api/put"),
    ("POST", "/api/v1/import"),
    ("POST", "/api/v1/publish"),
    ("GET", "/api/v1/export"),
    ("GET", "/api/v1/export/csv"),
    ("GET", "/api/v1/status/tsdb"),
    ("GET", "/api/v1/status/footprint"),
    ("GET", "/api/v1/forward"),
    ("GET", "/api/v1/forward/targets"),
    ("POST", "/api/v1/forward/targets"),
    ("PUT", "/api/v1/forward/targets/central"),
    ("DELETE", "/api/v1/forward/targets/central"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/topics"),
    ("GET", "/api/v1/messages"),
    ("GET", "/api/v1/live"),
    ("GET", "/api/v1/search?q=x"),
    ("GET", "/api/v1/search/histogram?q=x"),
    ("GET", "/api/v1/search/status"),
    ("GET", "/api/v1/series/search?q=x"),
    ("GET", "/api/v1/query?query=1"),
    ("POST", "/api/v1/query"),
    ("GET", "/api/v1/query_range"),
    ("GET", "/api/v1/series"),
    ("GET", "/api/v1/labels"),
    ("GET", "/api/v1/label/__name__/values"),
    ("GET", "/api/v1/metadata"),
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/devices/kitchen/plug"),
    ("GET", "/api/v1/status/buildinfo"),
    ("GET", "/api/v1/format_query"),
    ("GET", "/api/v1/query_exemplars"),
    ("GET", "/query?q=SHOW%20DATABASES"),
    ("GET", "/api/v1/dashboards"),
    ("GET", "/api/v1/dashboards/home"),
    ("PUT", "/api/v1/dashboards/home"),
    ("DELETE", "/api/v1/dashboards/home"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/settings"),
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("DELETE", "/api/v1/users/someone"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("DELETE", "/api/v1/tokens/abc"),
    ("GET", "/api/v1/backup"),
    ("GET", "/api/v1/cameras"),
    ("POST", "/api/v1/cameras"),
    ("GET", "/api/v1/cameras/yard"),
    ("PUT", "/api/v1/cameras/yard"),
    ("DELETE", "/api/v1/cameras/yard"),
    ("GET", "/api/v1/cameras/yard/live"),
    ("GET", "/api/v1/cameras/yard/hls/index.m3u8"),
    ("GET", "/api/v1/cameras/yard/snapshots"),
    ("GET", "/api/v1/cameras/yard/latest.jpg"),
    ("POST", "/api/v1/cameras/yard/snapshot"),
];

/// Routes only admins may use.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/users"),
    ("POST", "/api/v1/users"),
    ("GET", "/api/v1/tokens"),
    ("POST", "/api/v1/tokens"),
    ("GET", "/api/v1/settings"),
    ("GET", "/api/v1/backup"),
    ("PUT", "/api/v1/dashboards/home"),
    ("POST", "/api/v1/cameras"),
    ("GET", "/api/v1/forward/targets"),
    ("POST", "/api/v1/forward/targets"),
    ("DELETE", "/api/v1/forward/targets/central"),
];

fn send(p: &Perch, auth: Option<&str>, method: &str, path: &str) -> Resp {
    let body: Option<&[u8]> = if method == "GET" { None } else { Some(b"{}") };
    p.request_as(
        auth,
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
    )
}

#[test]
fn every_route_but_the_public_ones_needs_credentials() {
    let p = Perch::start();
    for (method, path) in API_ROUTES {
        let r = send(&p, None, method, path);
        assert_eq!(
            r.status, 401,
            "{method} {path} without credentials: {}",
            r.body
        );
        assert!(r.header("www-authenticate").is_some(), "{method} {path}");
        assert_eq!(r.json()["errorType"], "unauthorized");
    }
    // Wrong schemes and secrets are refused the same way.
    for auth in [
        "Bearer nope",
        "Token perch_abc_def",
        "Digest x",
        &basic(common::ADMIN, "wrong"),
    ] {
        let r = send(&p, Some(auth), "GET", "/api/v1/labels");
        assert_eq!(r.status, 401, "{auth}: {}", r.body);
    }
    // Public: health, the sign-in API and page, the assets.
    assert_eq!(p.get_anon("/healthz").status, 200);
    // InfluxDB's probes, as InfluxDB answers them without credentials.
    assert_eq!(p.get_anon("/ping").status, 204);
    assert_eq!(p.get_anon("/health").status, 200);
    let state = p.get_anon("/api/v1/auth/state");
    assert_eq!(state.status, 200);
    assert_eq!(state.json()["onboarding"], false);
    assert!(state.json()["user"].is_null());
    let login = p.get_anon("/login");
    assert_eq!(login.status, 200);
    assert!(login
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(login.header("x-frame-options"), Some("DENY"));
    // Pages send a stranger to sign in.
    for page in [
        "/overview",
        "/explorer",
        "/devices",
        "/devices/kitchen/plug",
        "/graph",
        "/cameras",
        "/cameras/yard",
        "/search",
        "/settings",
    ] {
        let r = p.get_anon(page);
        assert_eq!(r.status, 303, "{page}");
        let back = common::urlencode(page);
        assert_eq!(
            r.header("location"),
            Some(format!("/login?next={back}").as_str()),
            "{page}"
        );
    }
    assert_eq!(p.get_anon("/").header("location"), Some("/overview"));
}

#[test]
fn roles_decide_what_an_account_may_do() {
    let p = Perch::start();
    for (name, role) in [("vera", "viewer"), ("dev1", "device"), ("ada", "admin")] {
        let r = p.request(
            "POST",
            "/api/v1/users",
            Some(&format!(
                r#"{{"name":"{name}","role":"{role}","password":"pass-word-1"}}"#
            )),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let viewer = basic("vera", "pass-word-1");
    let device = basic("dev1", "pass-word-1");
    let admin2 = basic("ada", "pass-word-1");
    for (method, path) in ADMIN_ROUTES {
        let r = send(&p, Some(&viewer), method, path);
        assert_eq!(r.status, 403, "viewer {method} {path}: {}", r.body);
        let r = send(&p, Some(&device), method, path);
        assert_eq!(r.status, 403, "device {method} {path}: {}", r.body);
    }
    // Viewers read, devices write; neither does the other's.
    let write = |auth: &str| {
        p.post_with_headers("/write", &[("Authorization", auth)], "roles v=1\n")
            .status
    };
    assert_eq!(write(&viewer), 403);
    assert_eq!(write(&device), 204);
    assert_eq!(send(&p, Some(&viewer), "GET", "/api/v1/labels").status, 200);
    assert_eq!(send(&p, Some(&device), "GET", "/api/v1/labels").status, 403);
    assert_eq!(
        send(&p, Some(&viewer), "GET", "/api/v1/dashboards").status,
        200
    );
    // A second admin may everything the first may.
    assert_eq!(send(&p, Some(&admin2), "GET", "/api/v1/users").status, 200);
    // Devices cannot sign in to the dashboard.
    let r = p.request_as(
        None,
        "POST",
        "/api/v1/auth/login",
        &[("Content-Type", "application/json")],
        Some(br#"{"username":"dev1","password":"pass-word-1"}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // The last admin cannot be deleted; another can.
    assert_eq!(p.request("DELETE", "/api/v1/users/ada", None).status, 204);
    let r = p.request("DELETE", &format!("/api/v1/users/{}", common::ADMIN), None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(send(&p, Some(&admin2), "GET", "/api/v1/users").status, 401);
}

fn cookie_of(r: &Resp) -> String {
    let set = r.header("set-cookie").expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

#[test]
fn onboarding_creates_the_first_admin_and_sessions_need_csrf_tokens() {
    let p = Perch::start_bare("");
    let state = p.get_anon("/api/v1/auth/state").json();
    assert_eq!(state["onboarding"], true);
    assert_eq!(
        p.get_anon("/overview").header("location"),
        Some("/onboarding")
    );
    assert_eq!(p.get_anon("/onboarding").status, 200);
    // Even before the first account, the API is closed.
    assert_eq!(p.get_anon("/api/v1/labels").status, 401);
    let onboard = |body: &[u8]| {
        p.request_as(
            None,
            "POST",
            "/api/v1/auth/onboard",
            &[("Content-Type", "application/json")],
            Some(body),
        )
    };
    let r = onboard(br#"{"username":"root","password":"short"}"#);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("at least 8"), "{}", r.body);
    let r = onboard(br#"{"username":"root","password":"first-admin-pw"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let set = r.header("set-cookie").unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let cookie = cookie_of(&r);
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    assert_eq!(r.json()["user"]["role"], "admin");
    // Only once.
    let r = onboard(br#"{"username":"mallory","password":"second-admin"}"#);
    assert_eq!(r.status, 409, "{}", r.body);
    // The session reads; writes need the CSRF token too.
    let with = |method: &str, path: &str, extra: &[(&str, &str)], body: Option<&[u8]>| {
        let mut headers = vec![
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        p.request_as(None, method, path, &headers, body)
    };
    assert_eq!(with("GET", "/api/v1/users", &[], None).status, 200);
    assert_eq!(with("GET", "/overview", &[], None).status, 200);
    let new_user = br#"{"name":"vera","role":"viewer","password":"pass-word-1"}"#;
    let r = with("POST", "/api/v1/users", &[], Some(new_user));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("X-CSRF-Token"), "{}", r.body);
    let r = with(
        "POST",
        "/api/v1/users",
        &[("X-CSRF-Token", "wrong")],
        Some(new_user),
    );
    assert_eq!(r.status, 403);
    let r = with(
        "POST",
        "/api/v1/users",
        &[("X-CSRF-Token", &csrf)],
        Some(new_user),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // Another site's page cannot use the cookie even for reading.
    let r = with(
        "GET",
        "/api/v1/users",
        &[("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(r.status, 403);
    // Signing in as the viewer; wrong passwords are told apart from nothing.
    let login = |user: &str, pw: &str| {
        p.request_as(
            None,
            "POST",
            "/api/v1/auth/login",
            &[("Content-Type", "application/json")],
            Some(format!(r#"{{"username":"{user}","password":"{pw}"}}"#).as_bytes()),
        )
    };
    let wrong = login("vera", "wrong-pass");
    assert_eq!(wrong.status, 401);
    // No Basic challenge where a browser's dialog would get in the way.
    assert!(wrong.header("www-authenticate").is_none());
    let r = p.request_as(
        None,
        "GET",
        "/api/v1/labels",
        &[("Sec-Fetch-Mode", "cors")],
        NO_BODY,
    );
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_none());
    let r = login("vera", "pass-word-1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["user"]["role"], "viewer");
    let viewer_cookie = cookie_of(&r);
    let r = p.request_as(
        None,
        "GET",
        "/api/v1/users",
        &[("Cookie", &viewer_cookie)],
        NO_BODY,
    );
    assert_eq!(r.status, 403);
    // Signing out ends the session.
    let r = with("POST", "/api/v1/auth/logout", &[], None);
    assert_eq!(r.status, 204);
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(with("GET", "/api/v1/users", &[], None).status, 401);
    assert_eq!(
        with("GET", "/graph?q=up&range=1h", &[], None).header("location"),
        Some("/login?next=%2Fgraph%3Fq%3Dup%26range%3D1h")
    );
    // Deleting a user ends their sessions.
    assert_eq!(
        p.get_auth("/api/v1/users", "root", "first-admin-pw").status,
        200
    );
    let r = p.request_as(
        Some(&basic("root", "first-admin-pw")),
        "DELETE",
        "/api/v1/users/vera",
        &[],
        NO_BODY,
    );
    assert_eq!(r.status, 204);
    let r = p.request_as(
        None,
        "GET",
        "/api/v1/labels",
        &[("Cookie", &viewer_cookie)],
        NO_BODY,
    );
    assert_eq!(r.status, 401);
}

#[test]
fn api_tokens_work_as_bearer_token_and_in_urls_for_reading() {
    let p = Perch::start();
    let r = p.request(
        "POST",
        "/api/v1/tokens",
        Some(r#"{"name":"grafana","role":"viewer"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let grafana = r.json()["token"].as_str().unwrap().to_string();
    let id = r.json()["id"].as_str().unwrap().to_string();
    let telegraf = p.api_token("device");
    // The secret is shown once; the list never has it.
    let list = p.get("/api/v1/tokens");
    assert!(!list.body.contains(&grafana), "{}", list.body);
    assert_eq!(list.json().as_array().unwrap().len(), 2);
    // Telegraf's InfluxDB v2 output sends `Token`.
    let now_s = common::now_ms() / 1000;
    let r = p.post_with_headers(
        "/api/v2/write?bucket=b&precision=s",
        &[("Authorization", &format!("Token {telegraf}"))],
        format!("tok v=42 {now_s}\n"),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let bearer = format!("Bearer {grafana}");
    let r = send(
        &p,
        Some(&bearer),
        "GET",
        &format!("/api/v1/query?query=tok_v&time={now_s}"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["result"][0]["value"][1], "42");
    // In the URL: reading only.
    let r = p.get_anon(&format!("/api/v1/labels?token={grafana}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let r = p.request_as(
        None,
        "POST",
        &format!("/write?token={telegraf}"),
        &[],
        Some(b"x v=1\n"),
    );
    assert_eq!(r.status, 401);
    // A viewer's token may not write; a deleted token is dead.
    let r = p.post_with_headers("/write", &[("Authorization", &bearer)], "x v=1\n");
    assert_eq!(r.status, 403);
    assert_eq!(
        p.request("DELETE", &format!("/api/v1/tokens/{id}"), None)
            .status,
        204
    );
    assert_eq!(send(&p, Some(&bearer), "GET", "/api/v1/labels").status, 401);
    let used = p.get("/api/v1/tokens").json();
    assert!(used[0]["last_used_ms"].as_i64().unwrap() > 0, "{used}");
}

#[test]
fn failed_sign_ins_are_rate_limited() {
    let p = Perch::start();
    let login = |pw: &str| {
        p.request_as(
            None,
            "POST",
            "/api/v1/auth/login",
            &[("Content-Type", "application/json")],
            Some(format!(r#"{{"username":"{}","password":"{pw}"}}"#, common::ADMIN).as_bytes()),
        )
    };
    for i in 0..5 {
        assert_eq!(login(&format!("guess-{i}")).status, 401);
    }
    let r = login("guess-5");
    assert_eq!(r.status, 429, "{}", r.body);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Even the right password waits: guessing does not pay.
    assert_eq!(login(common::ADMIN_PASSWORD).status, 429);
    // Basic auth from the same address is held back as well.
    assert_eq!(
        send(
            &p,
            Some(&basic(common::ADMIN, "guess-6")),
            "GET",
            "/api/v1/labels"
        )
        .status,
        429
    );
}

#[test]
fn static_files_are_cached_compressed_and_never_leave_the_binary() {
    let p = Perch::start();
    let index = p.get_anon("/login");
    let etag = index.header("etag").unwrap().to_string();
    assert_eq!(index.header("cache-control"), Some("no-cache"));
    let r = p.request_as(None, "GET", "/login", &[("If-None-Match", &etag)], NO_BODY);
    assert_eq!(r.status, 304);
    // Compressed for browsers that ask (raw: the test client would
    // decompress and hide it).
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", p.http_port)).unwrap();
    write!(
        conn,
        "GET /login HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    conn.read_to_end(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(
        head.contains("content-encoding: gzip"),
        "{}",
        &head[..head.len().min(600)]
    );
    for path in [
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/%2e%2e/etc/passwd",
        "/assets/..%2f..%2fCargo.toml",
        "/assets//etc/passwd",
        "/assets/nothing.js",
    ] {
        assert_eq!(p.get_anon(path).status, 404, "{path}");
    }
    // Snapshot names are checked too.
    for path in [
        "/api/v1/cameras/yard/snapshots/..%2f..%2fFORMAT",
        "/api/v1/cameras/..%2f..%2fdb/snapshots/x.jpg",
    ] {
        let r = p.get(path);
        assert!(
            r.status == 404 || r.status == 400,
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(!r.body.contains("perch data directory format"), "{path}");
    }
}

#[test]
fn dashboards_are_saved_listed_and_guarded() {
    let p = Perch::start();
    let doc = r#"{"range":{"from":"now-1h","to":"now"},"panels":[{"title":"Temp","kind":"line","queries":["env_temp"]}]}"#;
    let r = p.request("PUT", "/api/v1/dashboards/Green%20house", Some(doc));
    assert_eq!(r.status, 200, "{}", r.body);
    let got = p.get("/api/v1/dashboards/Green%20house").json();
    assert_eq!(got["panels"][0]["queries"][0], "env_temp");
    assert_eq!(got["name"], "Green house");
    let list = p.get("/api/v1/dashboards").json();
    assert_eq!(list[0]["name"], "Green house");
    assert!(list[0]["updated_ms"].as_i64().unwrap() > 0);
    for bad in [
        "[1,2]",
        "not json",
        &format!(r#"{{"x":"{}"}}"#, "a".repeat(300_000)),
    ] {
        let r = p.request("PUT", "/api/v1/dashboards/bad", Some(bad));
        assert_eq!(r.status, 400, "{}", &r.body[..r.body.len().min(200)]);
    }
    assert_eq!(p.get("/api/v1/dashboards/bad").status, 404);
    assert_eq!(
        p.request("DELETE", "/api/v1/dashboards/Green%20house", None)
            .status,
        204
    );
    assert_eq!(
        p.get("/api/v1/dashboards").json().as_array().unwrap().len(),
        0
    );
}

#[test]
fn a_backup_downloaded_while_running_restores_into_a_working_perch() {
    let mut p = Perch::start();
    let now = common::now_ms();
    let mut lines = String::new();
    for i in 0..500 {
        lines.push_str(&format!(
            "backup,room=r{} t={i} {}\n",
            i % 5,
            (now - 500_000 + i * 1000) * 1_000_000
        ));
    }
    assert_eq!(p.post("/write", "text/plain", &lines).status, 204);
    let r = p.request("PUT", "/api/v1/dashboards/home", Some(r#"{"panels":[]}"#));
    assert_eq!(r.status, 200);
    let r = p.request(
        "POST",
        "/api/v1/users",
        Some(r#"{"name":"vera","role":"viewer","password":"pass-word-1"}"#),
    );
    assert_eq!(r.status, 201);
    // Download as the browser does: a known length, then the bytes.
    let mut resp = ureq::get(&p.url("/api/v1/backup"))
        .header("Authorization", p.auth.as_deref().unwrap())
        .call()
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-tar");
    let length: usize = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let tar = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .unwrap();
    assert_eq!(tar.len(), length);
    // The staging links go once the last byte is out.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let staged =
        |p: &Perch| std::fs::read_dir(p.data_dir.join("backup-staging")).map_or(0, |d| d.count());
    while staged(&p) > 0 {
        assert!(std::time::Instant::now() < deadline, "staging left behind");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Restore into a fresh directory and run perch on it.
    let backup = p.dir.path().join("backup.tar");
    std::fs::write(&backup, &tar).unwrap();
    p.stop();
    let old = p.dir.path().join("old-data");
    std::fs::rename(&p.data_dir, &old).unwrap();
    let (code, out, err) = p.cli(&["restore", backup.to_str().unwrap()], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restored"), "{out}");
    // Refused over an existing directory.
    let (code, _, err) = p.cli(&["restore", backup.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");
    let (code, out, err) = p.cli(&["check"], None);
    assert_eq!(code, 0, "perch check after restore: {out}{err}");
    p.restart();
    let series = p.export("{__name__=\"backup_t\"}");
    assert_eq!(series.len(), 5);
    assert_eq!(series.iter().map(|s| s.1.len()).sum::<usize>(), 500);
    assert_eq!(p.get("/api/v1/dashboards/home").status, 200);
    assert_eq!(
        p.get_auth("/api/v1/labels", "vera", "pass-word-1").status,
        200
    );
    // Not a perch backup: a clear refusal.
    let junk = p.dir.path().join("junk.tar");
    std::fs::write(&junk, b"definitely not a tar archive, just text").unwrap();
    let fresh = p.dir.path().join("fresh");
    let (code, _, err) = common::run_cli(
        &[
            "restore",
            junk.to_str().unwrap(),
            "--data-dir",
            fresh.to_str().unwrap(),
        ],
        &fresh,
        &p.config_path,
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot restore"), "{err}");
}

#[test]
fn other_sites_cannot_ride_on_a_browsers_credentials() {
    let p = Perch::start_bare("");
    let json = ("Content-Type", "application/json");
    // A page elsewhere cannot claim a fresh box...
    let r = p.request_as(
        None,
        "POST",
        "/api/v1/auth/onboard",
        &[json, ("Sec-Fetch-Site", "cross-site")],
        Some(br#"{"username":"mallory","password":"mallory-pw"}"#),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(p.get_anon("/api/v1/auth/state").json()["onboarding"], true);
    // ...nor use Basic credentials the browser cached.
    let (code, _, err) = p.cli(
        &[
            "user",
            "add",
            "root",
            "--role",
            "admin",
            "--password",
            "root-pass-1",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let root = basic("root", "root-pass-1");
    let new_user = br#"{"name":"x","role":"admin","password":"pass-word-1"}"#;
    let r = p.request_as(
        Some(&root),
        "POST",
        "/api/v1/users",
        &[json, ("Origin", "http://evil.example")],
        Some(new_user),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Same origin behind a TLS proxy (Host is the upstream address): fine,
    // and the cookie is marked Secure.
    let r = p.request_as(
        None,
        "POST",
        "/api/v1/auth/login",
        &[
            json,
            ("Origin", "https://perch.example"),
            ("X-Forwarded-Host", "perch.example"),
            ("X-Forwarded-Proto", "https"),
        ],
        Some(br#"{"username":"root","password":"root-pass-1"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("set-cookie").unwrap().contains("Secure"));
    let cookie = cookie_of(&r);
    let csrf = r.json()["csrf"].as_str().unwrap().to_string();
    let r = p.request_as(
        None,
        "POST",
        "/api/v1/users",
        &[
            json,
            ("Cookie", &cookie),
            ("X-CSRF-Token", &csrf),
            ("Origin", "https://perch.example:443"),
            ("X-Forwarded-Host", "perch.example"),
        ],
        Some(new_user),
    );
    assert_eq!(r.status, 201, "{}", r.body);
}

#[test]
fn guesses_are_counted_per_user_and_a_valid_sign_in_does_not_reset_them() {
    let p = Perch::start();
    let r = p.request(
        "POST",
        "/api/v1/users",
        Some(r#"{"name":"vera","role":"viewer","password":"pass-word-1"}"#),
    );
    assert_eq!(r.status, 201);
    // Valid Basic requests, Grafana's way (a dashboard's panels at once,
    // before anything is cached), are never held back.
    let vera = basic("vera", "pass-word-1");
    std::thread::scope(|scope| {
        let all: Vec<_> = (0..12)
            .map(|_| scope.spawn(|| send(&p, Some(&vera), "GET", "/api/v1/labels").status))
            .collect();
        for h in all {
            assert_eq!(h.join().unwrap(), 200);
        }
    });
    let guess = |i: usize| {
        send(
            &p,
            Some(&basic(common::ADMIN, &format!("guess-{i}"))),
            "GET",
            "/api/v1/labels",
        )
        .status
    };
    for i in 0..4 {
        assert_eq!(guess(i), 401);
    }
    // The guesser signs in with their own account in between...
    let r = p.request_as(
        None,
        "POST",
        "/api/v1/auth/login",
        &[("Content-Type", "application/json")],
        Some(br#"{"username":"vera","password":"pass-word-1"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // ...which does not give them fresh guesses.
    assert_eq!(guess(4), 401);
    assert_eq!(guess(5), 429);
    // Only the guessed name is held back: others at the address (behind the
    // same NAT or proxy) are not.
    assert_eq!(send(&p, Some(&vera), "GET", "/api/v1/labels").status, 200);
}
