//! The admin surface over real HTTP: Clerk-style sessions only (here, development sessions
//! signed by the key beside the database), admins only, CSRF on cookie-authenticated changes,
//! and nothing appended for a refused action.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokenledger::app::CreateRequest;
use tokenledger::session::DevKey;
use tokenledger_events::Timestamp;

use crate::helpers::{TestApp, TestDb, spawn_app};

struct Admin {
    app: TestApp,
    key: Option<DevKey>,
    _db: TestDb,
}

impl std::ops::Deref for Admin {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl Admin {
    /// A service; with `sign_in`, development sessions are set up (the key beside the
    /// database exists before start).
    async fn start(sign_in: bool) -> Admin {
        let db = TestDb::sqlite();
        let key = sign_in.then(|| {
            DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key")
        });
        let app = spawn_app(&db).await;
        Admin { app, key, _db: db }
    }

    fn session(&self, sub: &str, admin: bool) -> String {
        self.key
            .as_ref()
            .expect("sign-in set up")
            .sign(sub, admin, self.clock_now())
            .expect("sign")
    }

    fn clock_now(&self) -> Timestamp {
        self.app.now()
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: HeaderMap,
        body: Option<&Value>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .headers(headers);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("body"))
    }

    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        jwt: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {jwt}")).expect("h"),
        );
        let (status, _, text) = self.call(method, path, headers, body).await;
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}"));
        (status, value)
    }
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sign_in_configured_the_admin_surface_is_closed() {
    let svc = Admin::start(false).await;
    let minted = svc
        .ledger()
        .create(CreateRequest {
            name: "machine".into(),
            scopes: vec!["admin".into()],
            expires_in: None,
            actor: "test".into(),
            allowed_ips: Vec::new(),
        })
        .await
        .expect("create");
    for path in ["/api/admin/tokens", "/admin/tokens"] {
        let (status, _, body) = svc
            .call(reqwest::Method::GET, path, HeaderMap::new(), None)
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(
            body.contains("Admin sign-in is not configured"),
            "{path}: {body}"
        );

        // An API token, even an admin-scoped one, is never accepted by a human route.
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {}", minted.token.expose())).expect("h"),
        );
        let (status, _, body) = svc.call(reqwest::Method::GET, path, headers, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        let body: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(
            error_of(&body),
            "API tokens are not accepted on this endpoint"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_creates_rotates_revokes_and_reads_the_timeline() {
    let svc = Admin::start(true).await;
    let jwt = svc.session("alice", true);
    let (status, body) = svc
        .api(reqwest::Method::GET, "/api/admin/tokens", &jwt, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tokens"], json!([]));

    let (status, created) = svc
        .api(
            reqwest::Method::POST,
            "/api/admin/tokens",
            &jwt,
            Some(&json!({"name": "deploy", "scopes": ["console:exec"], "expires_in": "30d"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let plaintext = created["token"].as_str().expect("token").to_owned();
    assert!(plaintext.starts_with("tl_test_"));
    let id = created["id"].as_str().expect("id").to_owned();

    let (_, listed) = svc
        .api(reqwest::Method::GET, "/api/admin/tokens", &jwt, None)
        .await;
    assert_eq!(listed["tokens"][0]["id"], json!(id));
    assert_eq!(listed["tokens"][0]["status"], "active");
    assert!(listed["tokens"][0]["last_used_at"].is_null());
    assert!(
        !listed.to_string().contains(&plaintext),
        "the list never shows a plaintext"
    );

    let (status, rotated) = svc
        .api(
            reqwest::Method::POST,
            &format!("/api/admin/tokens/{id}/rotate"),
            &jwt,
            Some(&json!({"grace": "1h"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    assert_eq!(rotated["rotated_from"], json!(id));
    assert_ne!(rotated["token"], json!(plaintext));

    let (status, revoked) = svc
        .api(
            reqwest::Method::POST,
            &format!("/api/admin/tokens/{id}/revoke"),
            &jwt,
            Some(&json!({"reason": "rotated out"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoke_reason"], "rotated out");

    let (status, timeline) = svc
        .api(
            reqwest::Method::GET,
            &format!("/api/admin/tokens/{id}/audit"),
            &jwt,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{timeline}");
    let events = timeline["events"].as_array().expect("events");
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "API_TOKEN_CREATED",
            "API_TOKEN_ROTATED",
            "API_TOKEN_REVOKED"
        ]
    );
    for e in events {
        let actor = e["actor"].as_str().expect("actor");
        assert!(actor.starts_with("user:alice/session:sess_dev_"), "{actor}");
    }

    let (status, stale) = svc
        .api(reqwest::Method::GET, "/api/admin/tokens/stale", &jwt, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{stale}");
    assert!(stale["tokens"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_actions_say_why_and_append_nothing() {
    let svc = Admin::start(true).await;
    let jwt = svc.session("alice", true);
    let (_, created) = svc
        .api(
            reqwest::Method::POST,
            "/api/admin/tokens",
            &jwt,
            Some(&json!({"name": "x", "scopes": ["admin"]})),
        )
        .await;
    let id = created["id"].as_str().expect("id").to_owned();
    svc.api(
        reqwest::Method::POST,
        &format!("/api/admin/tokens/{id}/revoke"),
        &jwt,
        None,
    )
    .await;
    let head = svc.head().await;
    let unknown = "0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b";
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (
            format!("/api/admin/tokens/{id}/revoke"),
            json!({}),
            409,
            "is already revoked",
        ),
        (
            format!("/api/admin/tokens/{id}/rotate"),
            json!({}),
            409,
            "is already revoked",
        ),
        (
            format!("/api/admin/tokens/{unknown}/revoke"),
            json!({}),
            404,
            "No token with id",
        ),
        (
            "/api/admin/tokens/not-a-uuid/revoke".into(),
            json!({}),
            400,
            "Token id must be a UUID",
        ),
        (
            "/api/admin/tokens".into(),
            json!({"scopes": ["admin"]}),
            400,
            "Missing \"name\"",
        ),
        (
            "/api/admin/tokens".into(),
            json!({"name": "y", "scopes": ["root"]}),
            400,
            "known scopes: admin",
        ),
        (
            "/api/admin/tokens".into(),
            json!({"name": "y", "scopes": ["admin"], "expires_in": "0d"}),
            400,
            "expiry must be positive",
        ),
        (
            "/api/admin/tokens".into(),
            json!({"name": "y", "scopes": ["admin"], "expires_in": "2w"}),
            400,
            "like 90s, 15m, 24h, 30d",
        ),
        (
            "/api/admin/tokens".into(),
            json!({"name": "y", "scopes": ["admin"], "expires_in": "400d"}),
            400,
            "exceeds the maximum",
        ),
        (
            "/api/admin/tokens".into(),
            json!({"name": "y", "scopes": "admin"}),
            400,
            "must be an array",
        ),
        (
            "/api/admin/tokens".into(),
            json!({"name": "y", "scopes": ["admin"], "owner": "z"}),
            400,
            "Unknown field",
        ),
    ];
    for (path, body, status, message) in cases {
        let (got, answer) = svc
            .api(reqwest::Method::POST, &path, &jwt, Some(&body))
            .await;
        assert_eq!(got.as_u16(), status, "{path} {body}: {answer}");
        assert!(
            error_of(&answer).contains(message),
            "{path} {body}: {answer}"
        );
    }
    assert_eq!(svc.head().await, head, "nothing was appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_must_be_valid_admins_and_cookie_changes_must_be_same_origin() {
    let svc = Admin::start(true).await;
    let user = svc.session("bob", false);
    let (status, body) = svc
        .api(reqwest::Method::GET, "/api/admin/tokens", &user, None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_of(&body), "Admin role required");

    let admin = svc.session("alice", true);
    svc.clock.advance(Duration::from_secs(9 * 3600));
    let (status, body) = svc
        .api(reqwest::Method::GET, "/api/admin/tokens", &admin, None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an 8-hour session is over: {body}"
    );

    let admin = svc.session("alice", true);
    let host = svc.base.trim_start_matches("http://").to_owned();
    let head = svc.head().await;
    for (origin, expected) in [
        (None, StatusCode::FORBIDDEN),
        (Some("http://evil.example"), StatusCode::FORBIDDEN),
        (Some(svc.base.as_str()), StatusCode::CREATED),
    ] {
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            HeaderValue::from_str(&format!("__session={admin}")).expect("h"),
        );
        headers.insert("host", HeaderValue::from_str(&host).expect("h"));
        if let Some(o) = origin {
            headers.insert("origin", HeaderValue::from_str(o).expect("h"));
        }
        let (status, _, body) = svc
            .call(
                reqwest::Method::POST,
                "/api/admin/tokens",
                headers,
                Some(&json!({"name": "csrf", "scopes": ["logs:read"]})),
            )
            .await;
        assert_eq!(status, expected, "Origin {origin:?}: {body}");
    }
    assert_eq!(
        svc.head().await,
        head + 1,
        "only the same-origin request appended"
    );

    // Reads by cookie need no Origin; the page renders for the admin.
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("__session={admin}")).expect("h"),
    );
    let (status, page_headers, page) = svc
        .call(reqwest::Method::GET, "/admin/tokens", headers, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("csrf") && page.contains("id=\"create-token\""),
        "{page}"
    );
    let csp = page_headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!page.contains("src=\"http"), "no external assets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_create_form_re_renders_with_each_message_beside_its_field() {
    let svc = Admin::start(true).await;
    let admin = svc.session("alice", true);
    let head = svc.head().await;
    let mut headers = HeaderMap::new();
    headers.insert(
        "cookie",
        HeaderValue::from_str(&format!("__session={admin}")).expect("h"),
    );
    headers.insert("origin", HeaderValue::from_str(&svc.base).expect("h"));
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let response = svc
        .http
        .post(format!("{}/admin/tokens", svc.base))
        .headers(headers.clone())
        .body("name=&scope=root&expires_in=5w")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.expect("page");
    assert!(
        page.contains("<p class=\"error\" id=\"name-error\">name must be 1 to 100 characters"),
        "{page}"
    );
    assert!(
        page.contains("id=\"scope-error\">unknown scope &quot;root&quot;; known scopes"),
        "{page}"
    );
    assert!(
        page.contains("id=\"expires-error\">&quot;5w&quot; is not a duration"),
        "{page}"
    );
    assert_eq!(svc.head().await, head, "nothing was appended");

    let response = svc
        .http
        .post(format!("{}/admin/tokens", svc.base))
        .headers(headers)
        .body("name=web&scope=console%3Aexec&scope=logs%3Aread&expires_in=")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page = response.text().await.expect("page");
    let shown = page.matches("tl_test_").count();
    assert_eq!(shown, 1, "the new plaintext is on the page exactly once");
    assert!(page.contains("It will not be shown again"));
}
