//! The admin page in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the real service on a loopback port with a fresh SQLite log. A person's whole
//! round: sign in with a session cookie, create a token and see it exactly once, revoke it and
//! see the status change, read the audit timeline, get a form error, and look at the page on a
//! phone-sized screen. Screenshots land in `target/` for a human to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver`; without them the test says it was skipped,
//! unless `TEST_BROWSER` is set (CI sets it), when their absence is a failure.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, ensure};
use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use tokenledger::clock::{Clock as _, SystemClock};
use tokenledger::session::{KeySource, SessionConfig};
use tokenledger_projections::TokenStatus;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, spawn_app_with};

const ISSUER: &str = "https://clerk.test";
/// The session's `azp`. The service's port is only known after it binds, so the authorized
/// party is a fixed origin rather than the page's own.
const AZP: &str = "http://localhost";
const KID: &str = "browser-test-key";
const SUB: &str = "user_browser_ci";
const SID: &str = "sess_browser_ci";
const TOKEN_NAME: &str = "browser-ci";
/// How long to wait for a page to show what an action should have produced.
const PAGE_WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_sees_once_and_revokes_a_token_in_a_real_browser() {
    let test = "an_admin_creates_sees_once_and_revokes_a_token_in_a_real_browser";
    let Some(browser) = Browser::find_or_skip(test) else {
        return;
    };
    let started = Instant::now();

    let signer = Signer::new();
    let db = TestDb::sqlite();
    let app = spawn_app_with(&db, |config| {
        config.clerk = Some(SessionConfig {
            keys: KeySource::Pem(signer.public_pem.clone()),
            issuer: ISSUER.into(),
            authorized_parties: vec![AZP.into()],
            admin_role_claim: "metadata.role".into(),
        });
    })
    .await;
    // The signer stamps sessions with the wall clock.
    app.clock.set(SystemClock.now());
    let base = app.base.clone();

    let driver = ChromeDriver::start(&browser)
        .await
        .expect("chromedriver starts");
    let client = driver.connect(&browser).await.expect("a Chromium session");
    // The flow reports failures as errors rather than panics so the browser is always quit.
    let outcome = admin_round(&client, &base, &app, &signer).await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        panic!("{e:#}");
    }
    eprintln!(
        "{test}: passed in {:.1?}; screenshots in {}",
        started.elapsed(),
        target_dir().display()
    );
}

async fn admin_round(
    client: &Client,
    base: &str,
    app: &TestApp,
    signer: &Signer,
) -> anyhow::Result<()> {
    // Sign in: be on the origin first, since WebDriver sets cookies for the current page.
    client.goto(&format!("{base}/healthz")).await?;
    // As the service's own sign-in sets it. The domain is explicit: chromedriver refuses the
    // `null` domain that fantoccini sends when none is given.
    let cookie = Cookie::parse(format!(
        "__session={}; Domain=127.0.0.1; Path=/; HttpOnly; SameSite=Lax",
        signer.admin_session()
    ))?;
    client.add_cookie(cookie).await?;

    client.goto(&format!("{base}/admin/tokens")).await?;
    expect_status(client, 200).await?;
    let header = find(client, "header").await?.text().await?;
    ensure!(
        header.contains(&format!("Signed in as {SUB}")),
        "the page header does not show who is signed in: {header:?}"
    );
    ensure!(rows(client).await?.is_empty(), "a fresh log lists tokens");

    // Create.
    find(client, "form#create-token input#name")
        .await?
        .send_keys(TOKEN_NAME)
        .await?;
    find(client, r#"input[name=scope][value="console:exec"]"#)
        .await?
        .click()
        .await?;
    find(client, "button#create-submit").await?.click().await?;
    let value = wait_for(client, "section#new-token code#new-token-value").await?;
    expect_status(client, 201).await?;
    let plaintext = value.text().await?.trim().to_owned();
    ensure!(
        plaintext.starts_with("tl_test_"),
        "the new token does not look like a test token: it starts {:?}",
        plaintext.get(..8).unwrap_or(&plaintext)
    );
    let warning = find(client, "section#new-token").await?.text().await?;
    ensure!(
        warning.contains("It will not be shown again"),
        "the new token is shown without the warning that it is shown once: {warning:?}"
    );
    // The copy button puts the token on the clipboard and says so.
    find(client, "section#new-token button#copy-token")
        .await?
        .click()
        .await?;
    let copied = client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::XPath(
            "//button[@id='copy-token' and normalize-space()='Copied']",
        ))
        .await;
    ensure!(
        copied.is_ok(),
        "the copy button did not say Copied after a click; {}",
        whereabouts(client).await
    );
    let source = client.source().await?;
    let shown = source.matches(&plaintext).count();
    ensure!(
        shown == 1,
        "the plaintext appears {shown} times in the page that shows it, expected exactly once"
    );

    let listed = rows(client).await?;
    ensure!(
        listed.len() == 1,
        "after one create the table lists {} tokens",
        listed.len()
    );
    let id = token_id(&listed[0]).await?;
    let name_cell = listed[0].find(Locator::Css("td")).await?.text().await?;
    ensure!(
        name_cell.contains(TOKEN_NAME),
        "the new row is named {name_cell:?}"
    );
    expect_row_status(client, id, "active").await?;

    // The service knows the plaintext as this token, active, with the scope ticked.
    let row = identify(app, &plaintext)?;
    ensure!(
        row.id() == id,
        "the plaintext is token {}, the table row is {id}",
        row.id()
    );
    ensure!(
        row.status_at(app.now()) == TokenStatus::Active,
        "the new token is {:?}, expected active",
        row.status_at(app.now())
    );
    ensure!(
        row.scope_names() == ["console:exec"],
        "the new token has scopes {:?}, expected the one ticked",
        row.scope_names()
    );

    // Shown once: a fresh load of the page no longer has it anywhere.
    client.goto(&format!("{base}/admin/tokens")).await?;
    expect_status(client, 200).await?;
    ensure!(
        !client.source().await?.contains(&plaintext),
        "the plaintext is still in the page after a reload"
    );
    ensure!(
        client
            .find_all(Locator::Css("#new-token"))
            .await?
            .is_empty(),
        "the new-token section is still there after a reload"
    );

    // Revoke, through the confirmation step.
    find(client, &format!("{} a.revoke", row_css(id)))
        .await?
        .click()
        .await?;
    wait_for(client, "form#confirm-revoke").await?;
    find(client, "form#confirm-revoke input#reason")
        .await?
        .send_keys("browser test")
        .await?;
    find(client, "button#confirm-revoke-submit")
        .await?
        .click()
        .await?;
    let notice = wait_for(client, "section#notice").await?.text().await?;
    expect_status(client, 200).await?;
    ensure!(
        notice.contains(TOKEN_NAME) && notice.contains(&id.to_string()),
        "the revoke notice does not say which token: {notice:?}"
    );
    expect_row_status(client, id, "revoked").await?;
    ensure!(
        client
            .find_all(Locator::Css(&format!("{} a.revoke", row_css(id))))
            .await?
            .is_empty(),
        "a revoked token still offers Revoke"
    );
    let row = identify(app, &plaintext)?;
    ensure!(
        row.status_at(app.now()) == TokenStatus::Revoked,
        "after the revoke the service has the token {:?}",
        row.status_at(app.now())
    );
    screenshot(client, "admin-tokens.png").await?;

    // The audit timeline names both actions and who did them.
    client.goto(&format!("{base}/admin/tokens/{id}")).await?;
    expect_status(client, 200).await?;
    for action in ["API_TOKEN_CREATED", "API_TOKEN_REVOKED"] {
        let item = find(
            client,
            &format!(r#"ol#timeline li[data-action="{action}"]"#),
        )
        .await?
        .text()
        .await?;
        ensure!(
            item.contains(SUB),
            "the timeline's {action} does not name the session's user {SUB}: {item:?}"
        );
    }

    // The "as of" picker: the table as it was after the first event, before the revocation.
    client.goto(&format!("{base}/admin/tokens")).await?;
    find(client, "input#as-of-value")
        .await?
        .send_keys("position:1")
        .await?;
    find(client, "button#as-of-submit").await?.click().await?;
    let then = wait_for(client, &format!(r#"table#as-of-tokens tr[data-id="{id}"]"#)).await?;
    ensure!(
        then.attr("data-status").await?.as_deref() == Some("active"),
        "as of position 1 the token was active, the page says {:?}",
        then.attr("data-status").await?
    );
    screenshot(client, "admin-tokens-as-of.png").await?;

    // A bad form comes back with the message beside the field, and nothing is created.
    client.goto(&format!("{base}/admin/tokens")).await?;
    find(client, r#"input[name=scope][value="console:exec"]"#)
        .await?
        .click()
        .await?;
    find(client, "button#create-submit").await?.click().await?;
    let error = wait_for(client, "form#create-token p#name-error")
        .await?
        .text()
        .await?;
    expect_status(client, 422).await?;
    ensure!(
        !error.trim().is_empty(),
        "the name error beside the empty name is blank"
    );
    ensure!(
        client
            .find_all(Locator::Css("#scope-error"))
            .await?
            .is_empty(),
        "a scope error is shown although a scope was ticked"
    );
    ensure!(
        find(client, r#"input[name=scope][value="console:exec"]"#)
            .await?
            .is_selected()
            .await?,
        "the re-rendered form lost the ticked scope"
    );
    ensure!(
        client
            .find_all(Locator::Css("#new-token"))
            .await?
            .is_empty(),
        "a refused create shows a new token"
    );
    let listed = rows(client).await?.len();
    ensure!(
        listed == 1 && app.ledger().tokens().await.expect("tokens").len() == 1,
        "a refused create changed the tokens: {listed} listed, {} known",
        app.ledger().tokens().await.expect("tokens").len()
    );

    // A phone-sized screen: the list is still there, and the page does not scroll sideways.
    client.set_window_size(390, 844).await?;
    client.goto(&format!("{base}/admin/tokens")).await?;
    ensure!(
        find(client, "table#tokens").await?.is_displayed().await?,
        "the token table is hidden on a narrow screen"
    );
    ensure!(
        find(client, &format!("{} td.status", row_css(id)))
            .await?
            .is_displayed()
            .await?,
        "the token's status is hidden on a narrow screen"
    );
    let widths = client
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            Vec::new(),
        )
        .await?;
    let (scroll, inner) = (widths[0].as_u64(), widths[1].as_u64());
    ensure!(
        matches!((scroll, inner), (Some(s), Some(i)) if i <= 420 && s <= i),
        "on a narrow screen the page is {scroll:?}px wide in a {inner:?}px window"
    );
    // Bring the revoked row into view, so the picture shows its status.
    client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});",
            vec![json!(row_css(id))],
        )
        .await?;
    screenshot(client, "admin-tokens-narrow.png").await?;

    // The incident report of another token, and its "Revoke now".
    let suspect = app.create("suspect", &["console:exec"], None).await.row.id;
    client.set_window_size(1280, 900).await?;
    client
        .goto(&format!("{base}/admin/tokens/{suspect}/incident"))
        .await?;
    expect_status(client, 200).await?;
    let totals = find(client, "p#incident-totals").await?.text().await?;
    ensure!(totals.contains("No uses"), "a token never used: {totals:?}");
    find(client, "button#incident-revoke-now")
        .await?
        .click()
        .await?;
    wait_for(client, "section#notice").await?;
    let row = app.token(suspect).await;
    ensure!(
        row.revoke_reason.as_deref() == Some("incident")
            && row
                .revoked_by
                .as_deref()
                .is_some_and(|by| by.starts_with(&format!("user:{SUB}/"))),
        "Revoke now recorded {:?} by {:?}",
        row.revoke_reason,
        row.revoked_by
    );
    Ok(())
}

// ----- the page -----

/// The element at `css`, or an error that says what page the browser was on instead.
async fn find(client: &Client, css: &str) -> anyhow::Result<Element> {
    match client.find(Locator::Css(css)).await {
        Ok(e) => Ok(e),
        Err(e) => Err(anyhow!(
            "{css} is not on the page ({e}); {}",
            whereabouts(client).await
        )),
    }
}

/// As [`find`], waiting for a navigation an action started.
async fn wait_for(client: &Client, css: &str) -> anyhow::Result<Element> {
    match client
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => Ok(e),
        Err(e) => Err(anyhow!(
            "{css} did not appear within {PAGE_WAIT:?} ({e}); {}",
            whereabouts(client).await
        )),
    }
}

/// The current URL and the start of the page's text, for failure messages.
async fn whereabouts(client: &Client) -> String {
    let url = client
        .current_url()
        .await
        .map_or_else(|e| format!("<unknown: {e}>"), |u| u.to_string());
    let text = match client.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let text: String = text.chars().take(600).collect();
    format!("the browser is on {url} showing {text:?}")
}

/// The HTTP status of the page on screen (Chromium's Navigation Timing has it).
async fn expect_status(client: &Client, expected: u64) -> anyhow::Result<()> {
    let status = client
        .execute(
            "return performance.getEntriesByType('navigation')[0].responseStatus;",
            Vec::new(),
        )
        .await?;
    ensure!(
        status.as_u64() == Some(expected),
        "the page answered {status}, expected {expected}; {}",
        whereabouts(client).await
    );
    Ok(())
}

async fn rows(client: &Client) -> anyhow::Result<Vec<Element>> {
    Ok(client
        .find_all(Locator::Css("table#tokens tr[data-token-id]"))
        .await?)
}

fn row_css(id: Uuid) -> String {
    format!(r#"table#tokens tr[data-token-id="{id}"]"#)
}

async fn token_id(row: &Element) -> anyhow::Result<Uuid> {
    let raw = row
        .attr("data-token-id")
        .await?
        .context("a token row without data-token-id")?;
    Uuid::parse_str(&raw).with_context(|| format!("data-token-id {raw:?} is not a UUID"))
}

async fn expect_row_status(client: &Client, id: Uuid, expected: &str) -> anyhow::Result<()> {
    let status = find(client, &format!("{} td.status", row_css(id)))
        .await?
        .text()
        .await?;
    ensure!(
        status.contains(expected),
        "token {id}'s status reads {status:?}, expected {expected:?}"
    );
    Ok(())
}

/// The token the service's bearer check finds for `plaintext`.
fn identify(
    app: &TestApp,
    plaintext: &str,
) -> anyhow::Result<tokenledger::token_entry::TokenEntry> {
    app.ledger()
        .identify(plaintext)
        .map_err(|refusal| anyhow!("the service does not know the shown token: {refusal:?}"))
}

fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target")
}

async fn screenshot(client: &Client, name: &str) -> anyhow::Result<()> {
    let png = client.screenshot().await?;
    let dir = target_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

// ----- the session -----

/// A test RSA key standing in for Clerk's: its public half is configured, its private half
/// signs the sessions.
struct Signer {
    encoding: EncodingKey,
    public_pem: String,
}

impl Signer {
    fn new() -> Signer {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
        let public_pem = RsaPublicKey::from(&private)
            .to_public_key_pem(LineEnding::LF)
            .expect("public PEM");
        // DER, not PEM: jsonwebtoken is built without its `use_pem` feature.
        let private_der = private.to_pkcs1_der().expect("private DER");
        Signer {
            encoding: EncodingKey::from_rsa_der(private_der.as_bytes()),
            public_pem,
        }
    }

    /// A Clerk-shaped session of an admin, valid for the next hour.
    fn admin_session(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let claims = json!({
            "iss": ISSUER,
            "azp": AZP,
            "sub": SUB,
            "sid": SID,
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + 3600,
            "metadata": { "role": "admin" },
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(KID.into());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("sign session")
    }
}

// ----- the browser -----

/// Where Chromium and its WebDriver are installed.
struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Browser {
    /// Both programs, or `None` after saying the test is skipped; a failure instead when
    /// `TEST_BROWSER` is set, so CI cannot pass by skipping.
    fn find_or_skip(test: &str) -> Option<Browser> {
        let chromium = installed(&["chromium", "chromium-browser"]);
        let chromedriver = installed(&["chromedriver"]);
        let required = std::env::var_os("TEST_BROWSER").is_some_and(|v| !v.is_empty());
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Some(Browser {
                chromium,
                chromedriver,
            }),
            (chromium, chromedriver) if required => panic!(
                "TEST_BROWSER is set but the browser is missing (chromium: {chromium:?}, \
                 chromedriver: {chromedriver:?}); install Debian's packages: apt-get install \
                 chromium chromium-driver"
            ),
            _ => {
                eprintln!(
                    "skipped {test}: chromium/chromedriver not installed (set TEST_BROWSER=1 to require)"
                );
                None
            }
        }
    }
}

/// The first of `names` in /usr/bin or else on PATH.
fn installed(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .collect();
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver of our own on a free loopback port, killed (with the Chromium it started)
/// when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
    /// Chromium's profile, so a killed browser leaves nothing behind in /tmp.
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start(browser: &Browser) -> anyhow::Result<ChromeDriver> {
        let port = free_port()?;
        let quiet = std::env::var_os("TEST_LOG").is_none();
        let output = || {
            if quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            }
        };
        let child = Command::new(&browser.chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(output())
            .stderr(output())
            // Its own process group, so that Drop can end the browser it starts as well.
            .process_group(0)
            .spawn()
            .with_context(|| format!("run {}", browser.chromedriver.display()))?;
        let mut driver = ChromeDriver {
            child,
            port,
            profile: tempfile::tempdir()?,
        };
        driver.wait_until_ready().await?;
        Ok(driver)
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let status = format!("http://127.0.0.1:{}/status", self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = self.child.try_wait()? {
                return Err(anyhow!(
                    "chromedriver exited ({exit}) before answering; run with TEST_LOG=1 to see why"
                ));
            }
            if let Ok(response) = http.get(&status).send().await
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == json!(true)
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "chromedriver did not answer on {status} within 30s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn connect(&self, browser: &Browser) -> anyhow::Result<Client> {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": browser.chromium,
                "args": args,
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        // Plain HTTP to a local chromedriver: no TLS stack needed.
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .context("start a Chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium it left running.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
