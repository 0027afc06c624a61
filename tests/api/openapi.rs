//! The OpenAPI document: what `GET /openapi.json` serves, `tokenledger openapi` prints and
//! `docs/openapi.json` holds are one document, and it covers exactly the JSON routes of the
//! policy table. (CI also runs `tests/schemathesis.sh`: the live service against it.)

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokenledger::http::openapi::operations;
use tokenledger::http::policy::{Answer, ROUTES};

use crate::helpers::{TestDb, console_on, error_of, spawn_app_with, stdout, tokenledger};

const REGENERATE: &str =
    "regenerate it with `cargo run -- openapi > docs/openapi.json` and commit it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_printed_and_committed_documents_are_one() {
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |c| c.switches = console_on()).await;
    let (status, served, headers) = app
        .send_text(Method::GET, "/openapi.json", HeaderMap::new(), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let printed = tokenledger(&db.url_string(), &["openapi"]);
    assert!(printed.status.success());
    assert_eq!(
        stdout(&printed),
        served,
        "`tokenledger openapi` prints what is served"
    );

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let committed = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read docs/openapi.json ({e}); {REGENERATE}"));
    let parse = |text: &str| serde_json::from_str::<Value>(text).expect("JSON");
    assert!(
        parse(&committed) == parse(&served) && committed == served,
        "docs/openapi.json differs from the document the service serves; {REGENERATE}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_route_is_documented_and_every_documented_operation_is_routed() {
    let documented = operations();
    for route in ROUTES.iter().filter(|r| r.answer == Answer::Json) {
        for method in route.methods.split(',') {
            assert!(
                documented
                    .iter()
                    .any(|(m, p)| m == method && p == route.path),
                "{method} {} answers JSON but is not in the OpenAPI document",
                route.path
            );
        }
    }

    let db = TestDb::sqlite();
    // Every switch on, so that every documented route exists.
    let app = spawn_app_with(&db, |c| {
        c.switches = console_on();
        c.github_secret_scanning_keys = Some(tokenledger::app::leaks::KeySource::File(
            "/nonexistent/secret_scanning.json".into(),
        ));
    })
    .await;
    let id = uuid::Uuid::now_v7().to_string();
    for (method, path) in &documented {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let body = (method == Method::POST).then(|| b"{}".to_vec());
        let (status, text, _) = app
            .send_text(
                method.clone(),
                &path.replace("{id}", &id),
                HeaderMap::new(),
                body,
            )
            .await;
        let error = serde_json::from_str::<Value>(&text)
            .map(|v| error_of(&v).to_owned())
            .unwrap_or_default();
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED
                && status != StatusCode::INTERNAL_SERVER_ERROR
                && error != "Not found",
            "{method} {path} is documented but not routed: {status} {text}"
        );
    }
    app.stop().await;
}
