//! What a hostile or careless client, proxy or local user can no longer do: hold connections
//! with slow headers, slow bodies or idle keep-alives, take more than `MAX_CONNECTIONS`, forge
//! the recorded client address through `X-Forwarded-For`, read the SQLite files, or have the
//! session cookie sent over plain HTTP in production.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use rsa::RsaPrivateKey;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use serde_json::{Value, json};
use tokenledger::config::{Limits, Switches};
use tokenledger::session::ClerkArgs;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{START, TestApp, TestDb, console_on, spawn_app, spawn_app_with};

// ----- raw HTTP/1.1 over a socket -----

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect")
}

/// A raw answer: its status, head (status line and headers, lowercased) and body.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

/// Read one answer, its body by `Content-Length`; `None` when the server closes first.
async fn read_answer(stream: &mut TcpStream) -> Option<Raw> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().expect("content-length"));
            if bytes.len() >= end + 4 + length {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]).into();
                return Some(Raw { status, head, body });
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Wait for the server to close `stream` (end of stream or a reset), reading anything it
/// sends first; panics past `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the connection was still open after {limit:?}"));
    seen
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

fn limits(change: impl FnOnce(&mut Limits)) -> Limits {
    let mut limits = Limits::default();
    change(&mut limits);
    limits
}

// ----- timeouts and the connection cap -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_a_second_are_cut_at_the_header_timeout() {
    let db = TestDb::sqlite();
    let timeout = Duration::from_secs(2);
    let svc = spawn_app_with(&db, |c| {
        c.limits = limits(|l| l.header_read_timeout = timeout);
    })
    .await;
    let mut stream = connect(&svc).await;
    let opened = Instant::now();
    let (mut read, mut write) = stream.split();
    let trickle = async {
        for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: yes\r\n\r\n" {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let mut seen = Vec::new();
    let closed = async {
        let mut chunk = [0u8; 1024];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return opened.elapsed(),
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let elapsed = tokio::select! {
        elapsed = closed => elapsed,
        () = trickle => panic!("the whole head was sent a byte a second and never cut"),
    };
    println!("HEADER_READ_TIMEOUT={timeout:?}: a byte-a-second head was closed after {elapsed:?}");
    assert!(
        elapsed >= timeout - Duration::from_millis(100) && elapsed < timeout * 2,
        "closed after {elapsed:?}"
    );
    assert!(
        !String::from_utf8_lossy(&seen).contains(" 200 "),
        "a cut head is never answered: {:?}",
        String::from_utf8_lossy(&seen)
    );
    let (status, _, _) = svc
        .send_text(reqwest::Method::GET, "/healthz", HeaderMap::new(), None)
        .await;
    assert_eq!(status, StatusCode::OK, "others are still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_slower_than_the_request_timeout_is_answered_408_json() {
    let db = TestDb::sqlite();
    let timeout = Duration::from_secs(2);
    let svc = spawn_app_with(&db, |c| {
        c.switches = console_on();
        c.limits = limits(|l| l.request_timeout = timeout);
    })
    .await;
    let token = svc.create("slow", &["console:exec"], None).await;
    let body = br#"{"cmd":"ping","args":{}}"#;
    let mut stream = connect(&svc).await;
    let head = format!(
        "POST /api/admin/console HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        token.token.expose(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let sent = Instant::now();
    let (mut read, mut write) = stream.split();
    let trickle = async {
        for byte in body {
            if write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    };
    let answer = async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return bytes,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
            if bytes.windows(4).any(|w| w == b"\r\n\r\n") && bytes.ends_with(b"}") {
                return bytes;
            }
        }
    };
    let bytes = tokio::select! {
        bytes = answer => bytes,
        () = trickle => unreachable!(),
    };
    let elapsed = sent.elapsed();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    println!("REQUEST_TIMEOUT={timeout:?}: a byte-a-second body was answered after {elapsed:?}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let head = head.to_lowercase();
    assert!(head.starts_with("http/1.1 408"), "{text}");
    assert!(head.contains("content-type: application/json"), "{text}");
    assert!(head.contains("x-request-id: "), "{text}");
    let json: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(json, json!({"error": "Request timed out"}));
    assert!(
        elapsed >= timeout - Duration::from_millis(100) && elapsed < timeout * 2,
        "answered after {elapsed:?}"
    );
    assert_eq!(svc.runs(), 0, "the command never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_at_the_keep_alive_timeout() {
    let db = TestDb::sqlite();
    let header = Duration::from_secs(1);
    let keep_alive = Duration::from_secs(3);
    let svc = spawn_app_with(&db, |c| {
        c.limits = limits(|l| {
            l.header_read_timeout = header;
            l.keep_alive_timeout = keep_alive;
        });
    })
    .await;

    // Idle for longer than the header timeout and less than the keep-alive: still served.
    let mut stream = connect(&svc).await;
    stream.write_all(HEALTHZ).await.expect("first");
    assert_eq!(read_answer(&mut stream).await.expect("first").status, 200);
    tokio::time::sleep(header * 2).await;
    stream.write_all(HEALTHZ).await.expect("second");
    let second = read_answer(&mut stream)
        .await
        .expect("a second request after 2 s idle");
    assert_eq!(second.status, 200);

    // Then idle: closed at the keep-alive timeout.
    let idle_from = Instant::now();
    let seen = closed_within(&mut stream, keep_alive * 2).await;
    let idle = idle_from.elapsed();
    println!("KEEP_ALIVE_TIMEOUT={keep_alive:?}: an idle connection was closed after {idle:?}");
    assert!(seen.is_empty(), "{:?}", String::from_utf8_lossy(&seen));
    assert!(
        idle >= keep_alive - Duration::from_millis(100),
        "closed after {idle:?}, before the keep-alive timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_connection_waits_until_one_closes() {
    let db = TestDb::sqlite();
    let svc = spawn_app_with(&db, |c| c.limits = limits(|l| l.max_connections = 2)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&svc).await;
        stream.write_all(HEALTHZ).await.expect("request");
        assert_eq!(read_answer(&mut stream).await.expect("served").status, 200);
        held.push(stream);
    }

    // The kernel completes the handshake into the backlog; the server does not accept it.
    let mut third = connect(&svc).await;
    third.write_all(HEALTHZ).await.expect("request");
    let waited = tokio::time::timeout(Duration::from_millis(1500), read_answer(&mut third)).await;
    assert!(waited.is_err(), "a third connection was served: {waited:?}");

    let freed = Instant::now();
    drop(held.remove(0));
    let answer = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut third))
        .await
        .expect("served once a connection closed")
        .expect("an answer");
    assert_eq!(answer.status, 200);
    println!(
        "MAX_CONNECTIONS=2: the third connection was served {:?} after one closed",
        freed.elapsed()
    );

    drop(third);
    drop(held);
    for _ in 0..5 {
        let client = reqwest::Client::new();
        let response = client
            .get(format!("{}/healthz", svc.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("served after the cap was reached");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_client_addresses_still_work_across_requests() {
    let db = TestDb::sqlite();
    let svc = spawn_app_with(&db, |c| c.switches = console_on()).await;
    let token = svc.create("many", &["console:exec"], None).await;
    for _ in 0..3 {
        let (status, body) = svc.console(Some(token.token.expose()), "ping").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(svc.runs(), 3);
    let row = svc.token(token.row.id).await;
    assert_eq!(row.last_used_ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_finishes_the_request_in_flight() {
    let db = TestDb::sqlite();
    let svc = spawn_app_with(&db, |c| c.switches = console_on()).await;
    let token = svc.create("stop", &["console:exec"], None).await;
    let body = br#"{"cmd":"ping","args":{}}"#;
    let mut stream = connect(&svc).await;
    let head = format!(
        "POST /api/admin/console HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        token.token.expose(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    stream.write_all(&body[..5]).await.expect("part");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let port = svc.port;
    drop(svc);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[5..]).await.expect("rest");
    let answer = read_answer(&mut stream).await.expect("answered");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("pong"), "{answer:?}");
    assert!(answer.head.contains("connection: close"), "{answer:?}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "no longer listening"
    );
}

// ----- configuration -----

fn serve_with(db: &TestDb, envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tokenledger"));
    command
        .args(args)
        .env("DATABASE_URL", db.url_string())
        .env_remove("RUST_LOG");
    for (k, v) in envs {
        command.env(k, v);
    }
    command.output().expect("run tokenledger")
}

#[test]
fn bad_limits_and_the_removed_trust_proxy_stop_the_process_naming_the_variable() {
    let db = TestDb::sqlite();
    for (var, value, message) in [
        (
            "HEADER_READ_TIMEOUT",
            "10",
            "HEADER_READ_TIMEOUT: \"10\" is not a duration; expected a whole number and a unit",
        ),
        (
            "REQUEST_TIMEOUT",
            "0s",
            "REQUEST_TIMEOUT=\"0s\" is zero; a timeout must be positive",
        ),
        (
            "KEEP_ALIVE_TIMEOUT",
            "1w",
            "KEEP_ALIVE_TIMEOUT: \"1w\" is not a duration",
        ),
        (
            "MAX_CONNECTIONS",
            "0",
            "MAX_CONNECTIONS=\"0\" is not a connection count; expected a whole number from 1",
        ),
        (
            "MAX_CONNECTIONS",
            "lots",
            "MAX_CONNECTIONS=\"lots\" is not a connection count",
        ),
        (
            "TRUST_PROXY_HOPS",
            "-1",
            "TRUST_PROXY_HOPS=\"-1\" is not a number of proxies; expected a whole number from 0",
        ),
        (
            "TRUST_PROXY",
            "false",
            "TRUST_PROXY=\"false\" is no longer read; set TRUST_PROXY_HOPS=1",
        ),
    ] {
        let out = serve_with(&db, &[(var, value)], &["serve"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(stderr.contains(message), "{var}={value}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{var}: one line: {stderr}"
        );
    }
}

#[test]
fn serve_help_lists_the_limits_and_the_proxy_hops() {
    let db = TestDb::sqlite();
    let out = serve_with(&db, &[], &["serve", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{help}");
    for (variable, default) in [
        ("HEADER_READ_TIMEOUT", "10s"),
        ("REQUEST_TIMEOUT", "30s"),
        ("KEEP_ALIVE_TIMEOUT", "60s"),
        ("MAX_CONNECTIONS", "1024"),
        ("TRUST_PROXY_HOPS", "0"),
    ] {
        assert!(
            help.contains(&format!("[env: {variable}=]")),
            "{variable}: {help}"
        );
        assert!(
            help.contains(&format!("[default: {default}]")),
            "{variable}: {help}"
        );
    }
    assert!(!help.contains("[env: TRUST_PROXY=]"), "{help}");
}

// ----- the client address behind proxies -----

/// Call the console through a proxy chain whose `X-Forwarded-For` headers are `forwarded`;
/// the address the use was recorded with.
async fn recorded_ip(hops: u8, forwarded: &[&str]) -> String {
    let db = TestDb::sqlite();
    let svc = spawn_app_with(&db, |c| {
        c.switches = Switches {
            trust_proxy_hops: hops,
            ..console_on()
        };
    })
    .await;
    let token = svc.create("proxied", &["console:exec"], None).await;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", token.token.expose())).expect("h"),
    );
    for value in forwarded {
        headers.append("x-forwarded-for", HeaderValue::from_str(value).expect("h"));
    }
    let (status, body, _) = svc
        .send(
            reqwest::Method::POST,
            "/api/admin/console",
            headers,
            Some(br#"{"cmd":"ping"}"#.to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    svc.token(token.row.id)
        .await
        .last_used_ip
        .expect("recorded ip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_is_the_nth_forwarded_entry_from_the_right() {
    // The client forged two entries; the outer proxy appended the client's address with its
    // port on a header of its own; the inner proxy appended the outer proxy's, bracketed.
    let chain = [
        "6.6.6.6, 7.7.7.7",
        "198.51.100.20:40000",
        "[2001:db8::a]:443",
    ];
    assert_eq!(recorded_ip(1, &chain).await, "2001:db8::a");
    assert_eq!(recorded_ip(2, &chain).await, "198.51.100.20");
    assert_eq!(
        recorded_ip(3, &chain).await,
        "7.7.7.7",
        "N=3 trusts one entry too many"
    );

    // One proxy that appends `ip:port`: the client's forged entry never wins.
    assert_eq!(
        recorded_ip(1, &["6.6.6.6", "203.0.113.9:5555"]).await,
        "203.0.113.9"
    );
    assert_eq!(
        recorded_ip(1, &["6.6.6.6, 2001:db8::7"]).await,
        "2001:db8::7"
    );
    // The proxy's entry is unusable or missing: the socket, never an entry further left.
    assert_eq!(recorded_ip(1, &["6.6.6.6, unknown"]).await, "127.0.0.1");
    assert_eq!(recorded_ip(2, &["203.0.113.9"]).await, "127.0.0.1");
    assert_eq!(recorded_ip(1, &[]).await, "127.0.0.1");
    // Not trusted: the socket, whatever the header says.
    assert_eq!(recorded_ip(0, &chain).await, "127.0.0.1");
}

// ----- files -----

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_sqlite_database_and_its_wal_and_shm_are_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let db = TestDb::sqlite();
    let TestDb::Sqlite(file) = &db else {
        unreachable!()
    };
    let svc = spawn_app(&db).await;
    svc.create("written", &["console:exec"], None).await;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", file.path().display());
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{path}: {:o}", mode & 0o777);
    }
}

// ----- the session cookie -----

/// A signed-in admin's `Set-Cookie` from the sign-in form and from signing out, on a service
/// with `production` as given and a Clerk PEM key.
async fn session_cookies(production: bool) -> (String, String) {
    let key = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa key");
    let pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem");
    let clerk = ClerkArgs {
        clerk_jwt_key: Some(pem),
        clerk_jwks_url: None,
        clerk_issuer: Some("https://clerk.tokenledger.test".into()),
        clerk_authorized_parties: vec!["https://admin.tokenledger.test".into()],
        admin_role_claim: "metadata.role".into(),
    }
    .config()
    .expect("clerk config");
    let db = TestDb::sqlite();
    let svc = spawn_app_with(&db, |c| {
        c.production = production;
        c.clerk = clerk;
    })
    .await;
    let now = START / 1_000_000;
    let claims = json!({
        "iss": "https://clerk.tokenledger.test",
        "azp": "https://admin.tokenledger.test",
        "sub": "user_1",
        "sid": "sess_1",
        "iat": now - 30,
        "nbf": now - 40,
        "exp": now + 600,
        "sts": "active",
        "metadata": { "role": "admin" },
    });
    let der = key.to_pkcs1_der().expect("der");
    let jwt = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_der(der.as_bytes()),
    )
    .expect("sign");
    let form = |path: &str, body: String| {
        svc.http
            .post(format!("{}{path}", svc.base))
            .header("origin", &svc.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let signed_in = form("/admin/sign-in", format!("session={jwt}"))
        .await
        .expect("sign in");
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    let signed_out = form("/admin/sign-out", String::new())
        .await
        .expect("sign out");
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    let cookie = |r: &reqwest::Response| {
        r.headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("set-cookie")
            .to_owned()
    };
    (cookie(&signed_in), cookie(&signed_out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_in_production_only() {
    let (signed_in, signed_out) = session_cookies(true).await;
    assert!(signed_in.starts_with("__session=ey"), "{signed_in}");
    assert!(signed_in.ends_with("; Secure"), "{signed_in}");
    assert!(signed_in.contains("HttpOnly; SameSite=Lax"), "{signed_in}");
    assert!(signed_out.ends_with("Max-Age=0; Secure"), "{signed_out}");

    let (signed_in, signed_out) = session_cookies(false).await;
    assert!(!signed_in.contains("Secure"), "{signed_in}");
    assert!(!signed_out.contains("Secure"), "{signed_out}");
}
