//! The first minute: `GET /` says what this is (a page, or JSON when asked), the printed
//! one-time sign-in link reaches /admin/tokens once and only once within its 10 minutes, and
//! a development key made while the server runs is accepted without a restart.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use tokenledger::session::DevKey;

use crate::helpers::{TestApp, TestDb, console_on, spawn_app, spawn_app_with};

fn accept(kind: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept", HeaderValue::from_static(kind));
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_page_says_what_this_is_in_html_and_json() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |c| c.switches = console_on()).await;

    let (status, html, headers) = app
        .send_text(
            reqwest::Method::GET,
            "/",
            accept("text/html,application/xhtml+xml,*/*;q=0.8"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/html")
    );
    for needle in [
        "tokenledger",
        "ADMIN_CONSOLE_ENABLED",
        "ADMIN_API_TOKEN_AUTH_ENABLED",
        "href=\"/admin/tokens\"",
        "href=\"/openapi.json\"",
        "href=\"https://github.com/",
    ] {
        assert!(html.contains(needle), "{needle}: {html}");
    }

    let (status, json, _) = app
        .send(reqwest::Method::GET, "/", accept("application/json"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["service"], "tokenledger");
    assert_eq!(json["switches"]["ADMIN_CONSOLE_ENABLED"], true);
    assert_eq!(json["switches"]["ADMIN_API_TOKEN_AUTH_ENABLED"], true);
    assert_eq!(json["links"]["admin"], "/admin/tokens");
    assert_eq!(json["links"]["openapi"], "/openapi.json");
    let docs = json["links"]["docs"].as_str().expect("docs");
    assert!(
        docs.starts_with("https://") && docs.ends_with("#readme"),
        "{docs}"
    );
    assert!(
        json["admin_sign_in"]
            .as_str()
            .expect("text")
            .starts_with("not configured")
    );

    let off = spawn_app(&TestDb::sqlite()).await;
    let (_, json, _) = off
        .send(reqwest::Method::GET, "/", accept("application/json"), None)
        .await;
    assert_eq!(json["switches"]["ADMIN_CONSOLE_ENABLED"], false);
}

/// GET the link (or any path) with the cookie of `cookie`, if any.
async fn get(
    app: &TestApp,
    path_and_query: &str,
    cookie: Option<&str>,
) -> (StatusCode, HeaderMap, String) {
    let mut request = app.http.get(format!("{}{path_and_query}", app.base));
    if let Some(c) = cookie {
        request = request.header("cookie", c);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

/// The `__session=...` pair of a `Set-Cookie` answer.
fn session_of(headers: &HeaderMap) -> Option<String> {
    let set = headers.get("set-cookie")?.to_str().ok()?;
    let pair = set.split(';').next()?.trim();
    (pair.starts_with("__session=") && pair.len() > "__session=".len()).then(|| pair.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_link_signs_in_once_and_reaches_the_token_page() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |c| c.sign_in_link = true).await;
    let link = app
        .sign_in_link
        .clone()
        .expect("a link on a fresh database");
    let prefix = format!("{}/admin/sign-in/link?nonce=", app.base);
    assert!(link.starts_with(&prefix), "{link}");
    let path = &link[app.base.len()..];

    let (status, headers, _) = get(&app, path, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers["location"], "/admin/tokens");
    let cookie = session_of(&headers).expect("a session cookie");
    let (status, _, page) = get(&app, "/admin/tokens", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("dev-admin"),
        "the development admin is signed in"
    );

    let (status, headers, page) = get(&app, path, None).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("already used"), "{page}");
    assert_eq!(session_of(&headers), None);
    assert!(headers.get("set-cookie").is_none());

    let (status, headers, page) = get(&app, "/admin/sign-in/link?nonce=made-up", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("not known"), "{page}");
    assert!(headers.get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_is_refused_and_sets_no_session() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |c| c.sign_in_link = true).await;
    let link = app.sign_in_link.clone().expect("a link");
    app.clock.advance(Duration::from_secs(10 * 60));
    let (status, headers, page) = get(&app, &link[app.base.len()..], None).await;
    assert_eq!(status, StatusCode::GONE);
    assert!(page.contains("expired"), "{page}");
    assert!(headers.get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_is_made_unless_asked_or_in_production() {
    let app = spawn_app(&TestDb::sqlite()).await;
    assert_eq!(app.sign_in_link, None);
    let (status, _, page) = get(&app, "/admin/sign-in/link?nonce=x", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{page}");

    let db = TestDb::sqlite();
    let production = spawn_app_with(&db, |c| {
        c.sign_in_link = true;
        c.production = true;
    })
    .await;
    assert_eq!(production.sign_in_link, None);
    assert!(
        !DevKey::path_for(&db.url()).exists(),
        "no development key made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_session_minted_after_start_is_accepted() {
    let db = TestDb::sqlite();
    let app = spawn_app(&db).await;
    let bearer = |jwt: &str| {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {jwt}")).expect("header"),
        );
        h
    };
    let (status, body, _) = app
        .send(
            reqwest::Method::GET,
            "/api/admin/tokens",
            HeaderMap::new(),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no sign-in yet: {body}"
    );

    // What `tokenledger dev-session --role admin` does while the server runs.
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("key");
    let jwt = key.sign("late", true, app.now()).expect("sign");
    let (status, body, _) = app
        .send(
            reqwest::Method::GET,
            "/api/admin/tokens",
            bearer(&jwt),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let _: &Value = &body["tokens"];
}

/// Ends the child process when dropped, whatever the test did.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_the_link_on_standard_output_and_one_click_reaches_the_tokens() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("log.db").display());
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"))
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env("BIND_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env_remove("APP_ENV")
            .env_remove("CLERK_JWT_KEY")
            .env_remove("CLERK_JWKS_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let link = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.trim().starts_with("http://").then(|| l.trim().to_owned()))
    })
    .await
    .expect("reader")
    .expect("a link on standard output");
    let (base, rest) = link
        .split_once("/admin/sign-in/link?nonce=")
        .expect("the link's path");
    assert!(
        base.starts_with("http://127.0.0.1:") && !rest.is_empty(),
        "{link}"
    );

    // One click, as a browser follows the redirect with the cookie it was given.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let answer = browser.get(&link).send().await.expect("click");
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    let cookie = session_of(answer.headers()).expect("a session cookie");
    let page = browser
        .get(format!("{base}/admin/tokens"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("tokens");
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(
        browser.get(&link).send().await.expect("again").status(),
        StatusCode::GONE
    );
}
