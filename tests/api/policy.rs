//! The route policy, walked: every route of `http::policy::ROUTES` is called, with every
//! method it answers, by the callers its access column refuses, and each is refused with the
//! authentication table's answer before anything runs. A route added without a row here
//! cannot be reached at all (the policy layer answers 500), so the walk covers the router.

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokenledger::config::Switches;
use tokenledger::http::policy::{Access, ROUTES, Switch};
use tokenledger::scope::Scope;
use tokenledger::session::DevKey;

use crate::helpers::{TestApp, TestDb, console_on, error_of, spawn_app_with};

fn bearer(credential: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {credential}")).expect("header"),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

async fn call(app: &TestApp, method: &str, path: &str, headers: HeaderMap) -> (StatusCode, String) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let body = (method == Method::POST).then(|| b"{}".to_vec());
    let (status, text, _) = app.send_text(method, path, headers, body).await;
    (status, text)
}

fn error_in(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .map(|v| error_of(&v).to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_what_its_access_column_refuses() {
    let db = TestDb::sqlite();
    let key = DevKey::load_or_create(&DevKey::path_for(&db.url())).expect("development key");
    // Every refused call of a known token is its own event here (no denial window), so the
    // count below is exact.
    let app = spawn_app_with(&db, |c| {
        c.switches = console_on();
        c.tokens.denial_window = std::time::Duration::ZERO;
    })
    .await;
    let all = Scope::ALL.map(Scope::as_str);
    let target = app.create("target", &all, None).await;
    let revoked = app.create("revoked", &all, None).await;
    app.revoke(revoked.row.id).await;
    let narrow = app.create("narrow", &["registry:read"], None).await;
    let admin_session = key.sign("alice", true, app.now()).expect("sign");
    let user_session = key.sign("bob", false, app.now()).expect("sign");
    let head = app.head().await;
    let mut checked = 0;

    for route in ROUTES {
        let path = route.path.replace("{id}", &target.row.id.to_string());
        for method in route.methods.split(',') {
            let what = format!("{method} {}", route.path);
            match route.access {
                Access::Public => {
                    // Same-origin, as a browser's form post is: the sign-in forms' own
                    // cross-site check is not the policy's.
                    let mut headers = HeaderMap::new();
                    let origin = HeaderValue::from_str(&app.base).expect("origin");
                    headers.insert("origin", origin);
                    let (status, text) = call(&app, method, &path, headers).await;
                    assert!(
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                        "{what} is public but answered {status}: {text}"
                    );
                }
                Access::ApiToken { any_of, .. } => {
                    let refusals = [
                        (HeaderMap::new(), 401, "Missing credentials".to_owned()),
                        (
                            bearer(narrow.token.expose()),
                            403,
                            format!("Missing required scope: {}", Scope::alternatives(any_of)),
                        ),
                        (
                            bearer(revoked.token.expose()),
                            401,
                            "Token has been revoked".to_owned(),
                        ),
                        (bearer(&admin_session), 401, "Malformed token".to_owned()),
                        (bearer("tl_test_nope"), 401, "Malformed token".to_owned()),
                    ];
                    for (headers, status, message) in refusals {
                        let (got, text) = call(&app, method, &path, headers).await;
                        assert_eq!(got.as_u16(), status, "{what}: {text}");
                        assert_eq!(error_in(&text), message, "{what}");
                    }
                    let mut twice = bearer(target.token.expose());
                    twice.append(
                        "authorization",
                        HeaderValue::from_str(&format!("Bearer {}", narrow.token.expose()))
                            .expect("header"),
                    );
                    let (got, text) = call(&app, method, &path, twice).await;
                    assert_eq!(got, StatusCode::BAD_REQUEST, "{what}: {text}");
                    assert_eq!(error_in(&text), "Send exactly one Authorization header");
                }
                Access::SessionOrApiToken { any_of } => {
                    // A token is refused as on a token route; a session as on a session route.
                    let refusals = [
                        (HeaderMap::new(), 401, "Missing credentials".to_owned()),
                        (
                            bearer(narrow.token.expose()),
                            403,
                            format!("Missing required scope: {}", Scope::alternatives(any_of)),
                        ),
                        (
                            bearer(revoked.token.expose()),
                            401,
                            "Token has been revoked".to_owned(),
                        ),
                        (bearer("tl_test_nope"), 401, "Malformed token".to_owned()),
                        (bearer(&user_session), 403, "Admin role required".to_owned()),
                    ];
                    for (headers, status, message) in refusals {
                        let (got, text) = call(&app, method, &path, headers).await;
                        assert_eq!(got.as_u16(), status, "{what}: {text}");
                        assert_eq!(error_in(&text), message, "{what}");
                    }
                }
                Access::Session => {
                    let (got, text) = call(&app, method, &path, HeaderMap::new()).await;
                    assert_eq!(
                        got,
                        StatusCode::UNAUTHORIZED,
                        "{what} without a session: {text}"
                    );
                    let (got, text) =
                        call(&app, method, &path, bearer(target.token.expose())).await;
                    assert_eq!(got, StatusCode::UNAUTHORIZED, "{what}: {text}");
                    assert_eq!(
                        error_in(&text),
                        "API tokens are not accepted on this endpoint",
                        "{what}"
                    );
                    let (got, text) = call(&app, method, &path, bearer(&user_session)).await;
                    assert_eq!(got, StatusCode::FORBIDDEN, "{what} as a non-admin: {text}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= ROUTES.len(), "every route was called");
    // The refused token calls left denials (narrow, revoked) and nothing else: no command ran,
    // no token changed.
    assert_eq!(app.runs(), 0, "no console command ran");
    assert_eq!(
        app.token(target.row.id).await.use_count,
        0,
        "no refused call was recorded as a use"
    );
    let denials = app.head().await - head;
    let token_routes = ROUTES
        .iter()
        .filter(|r| {
            matches!(
                r.access,
                Access::ApiToken { .. } | Access::SessionOrApiToken { .. }
            )
        })
        .count() as u64;
    assert_eq!(
        denials,
        2 * token_routes,
        "one denial per refused known token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_whose_switch_is_off_does_not_exist() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |c| c.switches = Switches::default()).await;
    let token = app.create("ops", &["console:exec"], None).await;
    for route in ROUTES.iter().filter(|r| r.switch.is_some()) {
        for method in route.methods.split(',') {
            let (status, text) = call(&app, method, route.path, bearer(token.token.expose())).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{method} {}: {text}",
                route.path
            );
            assert_eq!(error_in(&text), "Not found");
        }
    }
    // The console's tokens need their own switch too.
    let console = ROUTES
        .iter()
        .find(|r| r.switch == Some(Switch::Console))
        .expect("the console route");
    let app = spawn_app_with(&db, |c| {
        c.switches = Switches {
            console_enabled: true,
            ..Switches::default()
        }
    })
    .await;
    let (status, text) = call(&app, "POST", console.path, bearer(token.token.expose())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_in(&text), "API token authentication is disabled");
}
