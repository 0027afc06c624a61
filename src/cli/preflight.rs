//! `tokenledger preflight`: the seed guide's "Production Deployment Checklist" and "Security
//! Verification Steps", run against a deployment. Each check is one line (✅, ❌ or ⚠ and
//! the reason); any ❌ exits 1; `--json` gives the same result as data.
//!
//! Throwaway tokens are minted through the database (the ledger, as `token create` does),
//! used over HTTP against `--url`, and revoked; they are recorded with the actor
//! `preflight:<user>` and named `preflight-<check>-<uuid>`, so the audit says whose they were.
//! Nothing is minted before the URL has answered as a tokenledger service and every migration
//! is applied (preflight never migrates: it opens the log only when nothing is pending).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Failure;
use super::output::say;
use crate::app::{self, CreateRequest, Minted, Refusal, Services};
use crate::clock::{Clock as _, SystemClock};
use crate::config::{DatabaseUrl, SigningConfig, TokenArgs, parse_positive_duration};
use crate::scope::Scope;
use crate::store::migrate::AppliedState;
use crate::token::{Environment, hash_token};

#[derive(Debug, clap::Args)]
pub struct PreflightArgs {
    /// The deployment's base URL as its clients reach it: http://HOST:PORT or https://HOST.
    #[arg(long, value_name = "URL", value_parser = parse_base_url)]
    pub url: String,
    /// Print the result as JSON: {"ok", "url", "checks": [{"check", "status", "reason"}]},
    /// status one of pass, fail, warn.
    #[arg(long)]
    pub json: bool,
    /// How long the expiry check's throwaway token lives; preflight waits for it to expire.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_positive_duration)]
    pub expiry: Duration,
    /// The deployment's TRUST_PROXY_HOPS, as configured here: reported beside what the
    /// server is seen to do with X-Forwarded-For.
    #[arg(long, env = "TRUST_PROXY_HOPS", value_name = "N", default_value = "0",
          value_parser = crate::config::parse_trust_proxy_hops)]
    pub trust_proxy_hops: u8,
}

/// `--url`: http or https, a host, no query or fragment; a trailing slash is dropped.
fn parse_base_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    let bad = |why: &str| {
        format!(
            "--url {} {why}; expected the deployment's base URL like http://127.0.0.1:3000 or https://tokens.example.com",
            crate::text::shown(raw)
        )
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| bad("is not http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("names no host"));
    }
    if rest.contains(['?', '#', ' ', '@']) || rest.chars().any(crate::text::is_unsafe) {
        return Err(bad("holds a query, a fragment, credentials or a space"));
    }
    Ok(url.to_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Pass,
    Fail,
    Warn,
}

impl Status {
    fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✅",
            Status::Fail => "❌",
            Status::Warn => "⚠",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warn",
        }
    }
}

struct Check {
    name: &'static str,
    status: Status,
    reason: String,
}

#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(&mut self, name: &'static str, status: Status, reason: impl Into<String>) {
        self.0.push(Check {
            name,
            status,
            reason: reason.into(),
        });
    }
    fn pass(&mut self, name: &'static str, reason: impl Into<String>) {
        self.add(name, Status::Pass, reason);
    }
    fn fail(&mut self, name: &'static str, reason: impl Into<String>) {
        self.add(name, Status::Fail, reason);
    }
    fn warn(&mut self, name: &'static str, reason: impl Into<String>) {
        self.add(name, Status::Warn, reason);
    }
    fn ok(&self) -> bool {
        self.0.iter().all(|c| c.status != Status::Fail)
    }
}

/// One HTTP answer: status and JSON body (`Null` when it is not JSON).
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn is(&self, status: u16, error: &str) -> bool {
        self.status == status && self.error() == error
    }

    fn shown(&self) -> String {
        match self.body["error"].as_str() {
            Some(e) => format!("{} {:?}", self.status, crate::token::redact(e)),
            None => self.status.to_string(),
        }
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(base: &str) -> Result<Http, Failure> {
        // As for Clerk's JWKS: rustls with ring, the process default (see session/jwks.rs).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenledger-preflight/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure(format!("cannot build the HTTP client: {e}")))?;
        Ok(Http {
            client,
            base: base.to_owned(),
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
        forwarded_for: Option<&str>,
    ) -> Result<Answer, String> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(ip) = forwarded_for {
            request = request.header("x-forwarded-for", ip);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("{} does not answer: {}", self.base, error_chain(&e)))?;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Ok(Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    /// `POST /v1/verify {"token": checked}` with `bearer`.
    async fn verify(
        &self,
        bearer: &str,
        checked: &str,
        forwarded_for: Option<&str>,
    ) -> Result<Answer, String> {
        let body = json!({"token": checked});
        self.send(
            reqwest::Method::POST,
            "/v1/verify",
            Some(bearer),
            Some(&body),
            forwarded_for,
        )
        .await
    }

    async fn console(&self, bearer: Option<&str>, cmd: &str) -> Result<Answer, String> {
        let body = json!({"cmd": cmd, "args": {}});
        self.send(
            reqwest::Method::POST,
            "/api/admin/console",
            bearer,
            Some(&body),
            None,
        )
        .await
    }

    /// Wait (up to 10 s) until the server's token cache has folded the log up to `position`,
    /// as `/readyz` reports it, so that a fresh token is not refused as unknown.
    async fn reach(&self, position: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(a) = self
                .send(reqwest::Method::GET, "/readyz", None, None, None)
                .await
                && a.body["projections"]["tokens"]
                    .as_u64()
                    .is_some_and(|p| p >= position)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An error and its causes, one line (reqwest's own message leaves out why it failed).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// `preflight:<user>`, from the CLI's own `cli:<user>`.
fn actor() -> String {
    let cli = super::cli_actor();
    format!(
        "preflight:{}",
        cli.strip_prefix("cli:").unwrap_or(cli.as_str())
    )
}

pub async fn run(
    url: &DatabaseUrl,
    tokens: &TokenArgs,
    signing: &SigningConfig,
    args: PreflightArgs,
) -> Result<bool, Failure> {
    let http = Http::new(&args.url)?;

    // Is it there, and is it tokenledger? Nothing is minted otherwise.
    let health = http
        .send(reqwest::Method::GET, "/healthz", None, None, None)
        .await
        .map_err(Failure)?;
    if health.status != 200 || health.body != json!({"status": "ok"}) {
        return Err(Failure(format!(
            "{} is not a tokenledger service: GET /healthz answered {} without {{\"status\":\"ok\"}}",
            args.url, health.status
        )));
    }

    let mut report = Report::default();
    let answers = crate::server::edge_answers();

    // The switches, as the console answers.
    let console = http.console(None, "ping").await.map_err(Failure)?;
    let console_on = console.status != 404;
    let mut token_auth_on = false;
    if console_on {
        report.fail(
            "console switch",
            format!(
                "ADMIN_CONSOLE_ENABLED is on: POST /api/admin/console answered {} instead of 404; the guide keeps it off until these checks pass",
                console.shown()
            ),
        );
        let probe = http
            .console(Some("preflight-probe"), "ping")
            .await
            .map_err(Failure)?;
        if probe.is(401, &answers.token_auth_disabled) {
            report.pass(
                "token auth switch",
                format!(
                    "ADMIN_API_TOKEN_AUTH_ENABLED is off: a bearer on the console gets 401 {:?}",
                    answers.token_auth_disabled
                ),
            );
        } else {
            token_auth_on = true;
            report.fail(
                "token auth switch",
                format!(
                    "ADMIN_API_TOKEN_AUTH_ENABLED is on: a bearer on the console got {} instead of 401 {:?}",
                    probe.shown(),
                    answers.token_auth_disabled
                ),
            );
        }
    } else {
        report.pass(
            "console switch",
            "ADMIN_CONSOLE_ENABLED is off: POST /api/admin/console answers 404",
        );
        report.pass(
            "token auth switch",
            "no API token reaches the console while it answers 404 (ADMIN_API_TOKEN_AUTH_ENABLED \
             itself is checked only behind the console switch, so it cannot be seen over HTTP now)",
        );
    }

    // Migrations, before the log is opened: opening it would apply them.
    let states = app::migrate(url, true)
        .await
        .map_err(|e| Failure(e.to_string()))?;
    let not_applied: Vec<String> = states
        .iter()
        .filter(|m| m.state != AppliedState::Applied)
        .map(|m| format!("{} {} {}", m.version, m.name, m.state))
        .collect();
    if not_applied.is_empty() {
        report.pass(
            "migrations",
            format!(
                "all {} applied on {}",
                states.len(),
                crate::text::shown(&url.redacted())
            ),
        );
    } else {
        report.fail(
            "migrations",
            format!(
                "not applied: {}; run `tokenledger migrate`; no token was minted",
                not_applied.join(", ")
            ),
        );
        route_policy(&mut report);
        production(&mut report, url, tokens, signing, None, &args);
        return Ok(print(&report, &args));
    }

    let services = Services::open(url, tokens.settings(), Arc::new(SystemClock))
        .await
        .map_err(|e| Failure(e.to_string()))?;
    if let Err(Failure(e)) = schema(&mut report, &services).await {
        report.fail("api_tokens", format!("could not be read: {e}"));
    }

    let mut run = Throwaways {
        services: &services,
        actor: actor(),
        minted: Vec::new(),
    };
    // The expiry token first: its clock runs while the other checks do.
    run.mint("expiry", &[Scope::TokensVerify], Some(args.expiry))
        .await?;
    run.mint("scope", &[Scope::LogsRead], None).await?;
    run.mint("revocation", &[Scope::TokensVerify], None).await?;
    let [expiring, scoped, revoked] = [&run.minted[0], &run.minted[1], &run.minted[2]];
    let last = run.minted.iter().map(|m| m.row.position).max().unwrap_or(0);
    http.reach(last).await;

    let mut probe = Probe {
        http: &http,
        services: &services,
        actor: &run.actor,
        environment: tokens.settings().environment,
        report: &mut report,
    };
    let mut seen_ip = None;
    let result = async {
        // The expiry token's use before it expires comes first: the others take time.
        let before = retry_unknown(|| probe.use_token(expiring, None)).await?;
        seen_ip = probe.revocation(revoked, &answers).await?;
        probe.scope(scoped, token_auth_on).await?;
        probe.expiry(expiring, &before, args.expiry).await
    }
    .await;

    // Whatever happened, no throwaway token stays usable.
    let leftover = run.revoke_all().await;
    if let Err(e) = result {
        report.fail("throwaway tokens", format!("the checks stopped: {e}"));
    }
    if !leftover.is_empty() {
        report.fail(
            "throwaway tokens",
            format!(
                "could not revoke {}; revoke them with `tokenledger token revoke`",
                leftover.join(", ")
            ),
        );
    }
    if let Err(Failure(e)) = audit(&mut report, &services, &run).await {
        report.fail("audit holds no secrets", format!("could not be read: {e}"));
    }
    route_policy(&mut report);
    production(
        &mut report,
        url,
        tokens,
        signing,
        Some((&services, seen_ip)),
        &args,
    );
    Ok(print(&report, &args))
}

/// What the token checks share.
struct Probe<'a> {
    http: &'a Http,
    services: &'a Services,
    actor: &'a str,
    /// The environment of the tokens minted here.
    environment: Environment,
    report: &'a mut Report,
}

impl Probe<'_> {
    /// `token` checks itself on `POST /v1/verify`: its own use is what is judged.
    async fn use_token(
        &self,
        token: &Minted,
        forwarded_for: Option<&str>,
    ) -> Result<Answer, String> {
        let plain = token.token.expose();
        self.http.verify(plain, plain, forwarded_for).await
    }

    /// The guide's revocation test: the token works, is revoked through the ledger, and is
    /// then refused. On the way, a session route must refuse it, and its first use tells
    /// whether the server took the address forged in X-Forwarded-For.
    async fn revocation(
        &mut self,
        token: &Minted,
        answers: &crate::server::EdgeAnswers,
    ) -> Result<Option<bool>, String> {
        const FORGED: &str = "203.0.113.254";
        let first = retry_unknown(|| self.use_token(token, Some(FORGED))).await?;
        if first.status != 200 || first.body["valid"] != json!(true) {
            let hint = environment_hint(&first, self.environment);
            self.report.fail(
                "revocation",
                format!(
                    "a fresh tokens:verify token was not accepted: {}{hint}",
                    first.shown()
                ),
            );
            return Ok(None);
        }
        // The use recorded the client address the server settled on.
        let uses = self
            .services
            .queries()
            .audit(&app::AuditQuery {
                token_id: Some(token.row.id),
                limit: Some(app::MAX_PAGE),
                ..app::AuditQuery::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let ips: Vec<String> = uses.events.into_iter().filter_map(|e| e.ip).collect();
        let seen = (!ips.is_empty()).then(|| ips.iter().any(|ip| ip == FORGED));

        let page = self
            .http
            .send(
                reqwest::Method::GET,
                "/api/admin/tokens",
                Some(token.token.expose()),
                None,
                None,
            )
            .await?;
        let refused = &answers.tokens_refused;
        if page.is(401, refused) {
            self.report.pass(
                "session routes",
                format!("GET /api/admin/tokens with an API token: 401 {refused:?}"),
            );
        } else {
            self.report.fail(
                "session routes",
                format!(
                    "GET /api/admin/tokens with an API token answered {} instead of 401 {refused:?}",
                    page.shown()
                ),
            );
        }

        self.services
            .ledger()
            .revoke(
                token.row.id,
                self.actor,
                Some("preflight revocation check".into()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let expected = Refusal::Revoked.to_string();
        // Another node refuses it once its cache has folded the revocation.
        let after = retry_while(|| self.use_token(token, None), |a| a.status == 200).await?;
        if after.is(401, &expected) {
            self.report.pass(
                "revocation",
                format!("worked (200), revoked, then refused: 401 {expected:?}"),
            );
        } else {
            self.report.fail(
                "revocation",
                format!(
                    "after revoking, the token got {} instead of 401 {expected:?}",
                    after.shown()
                ),
            );
        }
        Ok(seen)
    }

    /// The guide's scope test with a `logs:read` token: refused on `/v1/verify` (which needs
    /// `tokens:verify`), and on the console when it takes tokens.
    async fn scope(&mut self, token: &Minted, console_takes_tokens: bool) -> Result<(), String> {
        let needed = Refusal::MissingScope {
            required_any: vec![Scope::TokensVerify],
        }
        .to_string();
        let answer = retry_unknown(|| self.use_token(token, None)).await?;
        let mut ok = answer.is(403, &needed);
        let mut reason = format!("a logs:read token on POST /v1/verify: {}", answer.shown());
        if ok && console_takes_tokens {
            let console_needs = Refusal::MissingScope {
                required_any: vec![Scope::ConsoleExec, Scope::Admin],
            }
            .to_string();
            let c = self
                .http
                .console(Some(token.token.expose()), "db:health")
                .await?;
            ok = c.is(403, &console_needs);
            reason.push_str(&format!("; on the console (db:health): {}", c.shown()));
        } else if ok {
            reason.push_str(" (the console takes no tokens here, so it was not tried)");
        }
        if ok {
            self.report.pass("scope enforcement", reason);
        } else {
            let hint = environment_hint(&answer, self.environment);
            self.report.fail(
                "scope enforcement",
                format!("{reason}; expected 403 {needed:?}{hint}"),
            );
        }
        Ok(())
    }

    /// The guide's expiry test: the token worked (`before`), and once past its expiry is
    /// refused.
    async fn expiry(
        &mut self,
        token: &Minted,
        before: &Answer,
        lifetime: Duration,
    ) -> Result<(), String> {
        let expired = Refusal::Expired.to_string();
        let left = token.row.expires_at.as_micros() - SystemClock.now().as_micros();
        let left = Duration::from_micros(u64::try_from(left).unwrap_or(0));
        // A margin for the clocks of this machine and the server's.
        tokio::time::sleep(left + Duration::from_millis(1500)).await;
        let after = self.use_token(token, None).await?;
        if before.status != 200 {
            let hint = environment_hint(before, self.environment);
            self.report.fail(
                "expiry",
                format!(
                    "the token was refused before its expiry: {}{hint}",
                    before.shown()
                ),
            );
            return Ok(());
        }
        if after.is(401, &expired) {
            self.report.pass(
                "expiry",
                format!(
                    "a token living {} s: worked (200), then refused: 401 {expired:?}",
                    lifetime.as_secs_f64()
                ),
            );
        } else {
            self.report.fail(
                "expiry",
                format!(
                    "past its expiry the token got {} instead of 401 {expired:?} (is the server's clock behind?)",
                    after.shown()
                ),
            );
        }
        Ok(())
    }
}

/// What a refusal says about the environment preflight minted for.
fn environment_hint(answer: &Answer, minted: Environment) -> String {
    if answer.error().starts_with("Token environment mismatch") {
        format!(
            " (preflight minted {} tokens: run it with the deployment's APP_ENV and API_TOKEN_PREFIX_ENV)",
            minted.as_str()
        )
    } else if answer.error() == Refusal::Malformed.to_string() {
        " (run preflight with the deployment's API_TOKEN_PREFIX)".to_owned()
    } else {
        String::new()
    }
}

/// Call again while the answer is `Invalid token`: another node may not have folded a fresh
/// token yet.
async fn retry_unknown<F, Fut>(call: F) -> Result<Answer, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Answer, String>>,
{
    let unknown = Refusal::Unknown.to_string();
    retry_while(call, |a| a.is(401, &unknown)).await
}

/// Call again (up to about 5 s, backing off) while `again` holds.
async fn retry_while<F, Fut>(call: F, again: impl Fn(&Answer) -> bool) -> Result<Answer, String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Answer, String>>,
{
    let mut pause = Duration::from_millis(100);
    for _ in 0..6 {
        let answer = call().await?;
        if !again(&answer) {
            return Ok(answer);
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    call().await
}

struct Throwaways<'a> {
    services: &'a Services,
    actor: String,
    minted: Vec<Minted>,
}

impl Throwaways<'_> {
    async fn mint(
        &mut self,
        check: &str,
        scopes: &[Scope],
        expires_in: Option<Duration>,
    ) -> Result<(), Failure> {
        let minted = self
            .services
            .ledger()
            .create(CreateRequest {
                name: format!("preflight-{check}-{}", Uuid::new_v4()),
                scopes: scopes.iter().map(ToString::to_string).collect(),
                // Ten minutes at most: a token preflight failed to revoke dies soon anyway.
                expires_in: Some(expires_in.unwrap_or(Duration::from_secs(600))),
                actor: self.actor.clone(),
                allowed_ips: Vec::new(),
            })
            .await?;
        self.minted.push(minted);
        Ok(())
    }

    /// Revoke every throwaway token still active; the ids of those that could not be.
    async fn revoke_all(&self) -> Vec<String> {
        let mut left = Vec::new();
        let now = SystemClock.now().as_micros();
        for m in &self.minted {
            let Ok(row) = self.services.ledger().token(m.row.id).await else {
                left.push(m.row.id.to_string());
                continue;
            };
            if row.revoked_at.is_some() || row.expires_at.as_micros() <= now {
                continue;
            }
            if self
                .services
                .ledger()
                .revoke(m.row.id, &self.actor, Some("preflight done".into()))
                .await
                .is_err()
            {
                left.push(m.row.id.to_string());
            }
        }
        left
    }
}

async fn schema(report: &mut Report, services: &Services) -> Result<(), Failure> {
    let store = services.store();
    let columns = store.columns("api_tokens").await?;
    if columns.is_empty() {
        report.fail("api_tokens", "the api_tokens table does not exist");
        return Ok(());
    }
    let has = |name: &str| columns.iter().any(|c| c.name == name);
    let mut problems = Vec::new();
    match columns.iter().find(|c| c.name == "hash") {
        Some(c) if matches!(c.data_type.as_str(), "blob" | "bytea") => {}
        Some(c) => problems.push(format!("hash is {}, not bytes", c.data_type)),
        None => problems.push("no hash column".to_owned()),
    }
    let plaintext: Vec<&str> = columns
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| {
            [
                "token",
                "plaintext",
                "secret",
                "raw_token",
                "token_plaintext",
                "value",
            ]
            .contains(n)
        })
        .collect();
    if !plaintext.is_empty() {
        problems.push(format!(
            "columns that may hold a plaintext: {}",
            plaintext.join(", ")
        ));
    }
    let bad = store.hashes_not_32_bytes().await?;
    if bad > 0 {
        problems.push(format!("{bad} rows hold a hash that is not 32 bytes"));
    }
    let last_used = ["last_used_at", "last_used_ip", "last_used_path"];
    let missing: Vec<&str> = last_used.iter().copied().filter(|c| !has(c)).collect();
    if !missing.is_empty() {
        problems.push(format!("missing {}", missing.join(", ")));
    }
    if problems.is_empty() {
        report.pass(
            "api_tokens",
            "stores only the SHA-256 (hash, 32 bytes in every row), no plaintext column; has last_used_at, last_used_ip, last_used_path",
        );
    } else {
        report.fail("api_tokens", problems.join("; "));
    }
    Ok(())
}

/// The guide's audit check: the events and audit rows exist, and hold no secret of the
/// throwaway tokens in any encoding.
async fn audit(
    report: &mut Report,
    services: &Services,
    run: &Throwaways<'_>,
) -> Result<(), Failure> {
    let ids: Vec<Uuid> = run.minted.iter().map(|m| m.row.id).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let stored = services.store().rows_of_tokens(&ids).await?;
    let plaintexts: Vec<&str> = run.minted.iter().map(|m| m.token.expose()).collect();
    let mut leaks = leaks(&stored.cells, &canaries(&plaintexts, &stored.salts));
    let mut actions = std::collections::BTreeSet::new();
    for id in &ids {
        let page = services
            .queries()
            .audit(&app::AuditQuery {
                token_id: Some(*id),
                limit: Some(app::MAX_PAGE),
                ..app::AuditQuery::default()
            })
            .await?;
        for e in page.events {
            if e.actor != run.actor
                && e.action != "API_TOKEN_USED"
                && e.action != "API_TOKEN_DENIED"
            {
                leaks.push(format!(
                    "an event of a preflight token recorded with actor {:?}",
                    e.actor
                ));
            }
            actions.insert(e.action);
        }
    }
    let missing: Vec<&str> = ["API_TOKEN_CREATED", "API_TOKEN_USED", "API_TOKEN_REVOKED"]
        .into_iter()
        .filter(|a| !actions.contains(a))
        .collect();
    if !leaks.is_empty() {
        report.fail("audit holds no secrets", leaks.join("; "));
    } else {
        report.pass(
            "audit holds no secrets",
            format!(
                "no plaintext, hash or salt of the {} preflight tokens (raw, hex, base64, base64url) in their {} events and audit rows",
                ids.len(),
                stored.rows
            ),
        );
    }
    if missing.is_empty() {
        report.pass(
            "audit entries",
            format!(
                "the preflight tokens' rows: {} (actor {})",
                actions.iter().copied().collect::<Vec<_>>().join(", "),
                run.actor
            ),
        );
    } else {
        report.fail(
            "audit entries",
            format!("no {} row for the preflight tokens", missing.join(", ")),
        );
    }
    Ok(())
}

/// Every secret of these tokens, in every encoding it could leak in: what it is (never the
/// secret itself) and its bytes.
fn canaries(plaintexts: &[&str], salts: &[Vec<u8>]) -> Vec<(String, Vec<u8>)> {
    let mut canaries: Vec<(String, Vec<u8>)> = Vec::new();
    for plain in plaintexts {
        canaries.push(("a plaintext".into(), plain.as_bytes().to_vec()));
        // The part after `tl_live_`: a leak that dropped the prefix is still a leak.
        if let Some(body) = plain.rsplit('_').next() {
            canaries.push(("a plaintext's secret part".into(), body.as_bytes().to_vec()));
        }
        let hash = hash_token(plain).0;
        canaries.push(("a hash (raw)".into(), hash.to_vec()));
        for (encoding, text) in encodings(&hash) {
            canaries.push((format!("a hash ({encoding})"), text.into_bytes()));
        }
    }
    for salt in salts {
        canaries.push(("a salt (raw)".into(), salt.clone()));
        for (encoding, text) in encodings(salt) {
            canaries.push((format!("a salt ({encoding})"), text.into_bytes()));
        }
    }
    canaries
}

/// One line per canary found in a cell.
fn leaks(cells: &[crate::store::preflight::Cell], canaries: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut leaks = Vec::new();
    for cell in cells {
        for (what, needle) in canaries {
            if contains(&cell.bytes, needle) {
                leaks.push(format!("{what} in {}", cell.place));
            }
        }
    }
    leaks
}

fn encodings(bytes: &[u8]) -> [(&'static str, String); 6] {
    [
        ("hex", hex::encode(bytes)),
        ("HEX", hex::encode_upper(bytes)),
        ("base64", STANDARD.encode(bytes)),
        ("base64 unpadded", STANDARD_NO_PAD.encode(bytes)),
        ("base64url", URL_SAFE.encode(bytes)),
        ("base64url unpadded", URL_SAFE_NO_PAD.encode(bytes)),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && needle.len() <= haystack.len()
        && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The guide's "what gets token auth", from the policy table.
fn route_policy(report: &mut Report) {
    let routes = crate::server::token_routes();
    let (total, sessions) = crate::server::route_counts();
    let listed: Vec<String> = routes
        .iter()
        .map(|r| {
            let switches = if r.switches.is_empty() {
                String::new()
            } else {
                format!(", with {}", r.switches.join(" and "))
            };
            format!(
                "{} {} ({}{switches})",
                r.methods,
                r.path,
                r.scopes.join(" or "),
            )
        })
        .collect();
    // The guide: the console takes console:exec or admin, and nothing narrower or wider.
    let console_ok = routes.iter().any(|r| {
        let mut scopes = r.scopes.clone();
        scopes.sort();
        r.path == "/api/admin/console" && scopes == ["admin", "console:exec"]
    });
    let reason = format!(
        "API tokens accepted on {} of {total} routes: {}; {sessions} take a Clerk session only (`tokenledger routes`)",
        routes.len(),
        listed.join(", ")
    );
    if console_ok {
        report.pass("route policy", reason);
    } else {
        report.fail(
            "route policy",
            format!("{reason}; the guide needs console:exec or admin on the console"),
        );
    }
}

/// The production defaults, from the local configuration and what the server was seen to do.
fn production(
    report: &mut Report,
    url: &DatabaseUrl,
    tokens: &TokenArgs,
    signing: &SigningConfig,
    served: Option<(&Services, Option<bool>)>,
    args: &PreflightArgs,
) {
    let production = tokens.is_production();
    if production {
        report.pass(
            "APP_ENV",
            "production here: development sessions refused and the session cookie Secure \
             (local configuration; the server's own cannot be read over HTTP)",
        );
    } else {
        let app_env = tokens.app_env.as_deref().unwrap_or("unset");
        report.warn(
            "APP_ENV",
            format!(
                "{app_env} here: run preflight with the deployment's configuration \
                 (APP_ENV=production gives live tokens, no development sessions, Secure cookies)"
            ),
        );
    }

    // The revocation check's first use was accepted: the server takes this environment.
    let accepted = served.is_some()
        && report
            .0
            .iter()
            .any(|c| c.name == "revocation" && c.status == Status::Pass);
    let (status, reason) = match (tokens.settings().environment, accepted) {
        (Environment::Live, true) => (
            Status::Pass,
            "live: the server accepted the live tokens minted here",
        ),
        (Environment::Live, false) => (Status::Warn, "live here; not confirmed by the server"),
        (Environment::Test, true) => (
            Status::Warn,
            "test: the server accepted test tokens; production mints live ones \
             (APP_ENV=production, API_TOKEN_PREFIX_ENV=auto)",
        ),
        (Environment::Test, false) => (
            Status::Warn,
            "test here; production deployments mint live ones",
        ),
    };
    report.add("token environment", status, reason);

    let hops = args.trust_proxy_hops;
    let local = if hops == 0 {
        "TRUST_PROXY_HOPS=0 here: the socket's address is the client".to_owned()
    } else {
        format!(
            "TRUST_PROXY_HOPS={hops} here: X-Forwarded-For entry {hops} from the right is the client"
        )
    };
    let forged = "the address preflight forged in X-Forwarded-For";
    let (status, reason) = match served.and_then(|(_, seen)| seen) {
        Some(true) if hops == 0 => (
            Status::Fail,
            format!("{local}, but the server recorded {forged}: it trusts the header"),
        ),
        Some(true) => (
            Status::Warn,
            format!("{local}; the server recorded {forged}: only your proxy may reach it"),
        ),
        Some(false) => (
            Status::Pass,
            format!("{local}; the server did not record {forged}"),
        ),
        None => (Status::Warn, format!("{local} (not observed over HTTP)")),
    };
    report.add("TRUST_PROXY_HOPS", status, reason);

    let Some((services, _)) = served else {
        report.warn("signing key", "not checked: the log was not opened");
        return;
    };
    use tokenledger_events::EventLog as _;
    let log_id = services.store().log_id();
    let path = signing.key_path(url, log_id);
    match crate::signing::SigningKeys::require(&path, &signing.origin(log_id)) {
        Ok(keys) => report.pass(
            "signing key",
            format!(
                "{} key(s) for {} in {} (checked locally; the server's own file cannot be \
                 seen over HTTP)",
                keys.verifier_keys().len(),
                keys.origin(),
                path.display()
            ),
        ),
        Err(e) if production => report.fail(
            "signing key",
            format!("{e}: serve refuses to start in production without one"),
        ),
        Err(e) => report.warn("signing key", e.to_string()),
    }
}

/// Print the report; whether every check passed or warned.
fn print(report: &Report, args: &PreflightArgs) -> bool {
    if args.json {
        let checks: Vec<Value> = report
            .0
            .iter()
            .map(|c| json!({"check": c.name, "status": c.status.name(), "reason": c.reason}))
            .collect();
        say!(
            "{}",
            super::output::json(&json!({"ok": report.ok(), "url": args.url, "checks": checks}))
        );
    } else {
        for c in &report.0 {
            say!(
                "{} {}: {}",
                c.status.mark(),
                c.name,
                crate::text::escape(&crate::token::redact(&c.reason))
            );
        }
    }
    report.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::preflight::Cell;

    const PLAIN: &str = "tl_live_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG123456";

    fn cell(bytes: impl Into<Vec<u8>>) -> Cell {
        Cell {
            place: "events position 1 column body".into(),
            bytes: bytes.into(),
        }
    }

    #[test]
    fn a_secret_in_any_encoding_is_found_and_named_without_itself() {
        let salt = vec![9u8; 32];
        let canaries = canaries(&[PLAIN], std::slice::from_ref(&salt));
        let hash = hash_token(PLAIN).0;
        for planted in [
            format!("{{\"note\":\"{PLAIN}\"}}").into_bytes(),
            PLAIN.as_bytes()["tl_live_".len()..].to_vec(),
            hash.to_vec(),
            hex::encode_upper(hash).into_bytes(),
            URL_SAFE_NO_PAD.encode(hash).into_bytes(),
            STANDARD.encode(&salt).into_bytes(),
            salt.clone(),
        ] {
            let found = leaks(&[cell(planted)], &canaries);
            assert!(!found.is_empty());
            for line in &found {
                assert!(line.ends_with("in events position 1 column body"), "{line}");
                assert!(!line.contains(&PLAIN["tl_live_".len()..]), "{line}");
            }
        }
    }

    #[test]
    fn clean_cells_have_no_leaks() {
        let canaries = canaries(&[PLAIN], &[vec![9u8; 32]]);
        let clean = cell(b"{\"ip\":\"127.0.0.1\",\"path\":\"/v1/verify\"}".to_vec());
        assert!(leaks(&[clean, cell(Vec::new())], &canaries).is_empty());
    }

    #[test]
    fn the_base_url_must_be_http_with_a_host() {
        assert_eq!(
            parse_base_url("http://127.0.0.1:3000/").as_deref(),
            Ok("http://127.0.0.1:3000")
        );
        assert!(parse_base_url("https://tokens.example.com").is_ok());
        for bad in [
            "",
            "127.0.0.1:3000",
            "ftp://x",
            "http://",
            "http://a/?q",
            "http://u@h",
        ] {
            let err = parse_base_url(bad).expect_err(bad);
            assert!(
                err.contains("--url") && err.contains("like http://"),
                "{err}"
            );
        }
    }
}
