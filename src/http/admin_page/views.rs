//! The page's markup (maud escapes every interpolated value). Views take what to show and
//! return markup; they read nothing and decide nothing.

use std::collections::HashMap;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use tokenledger_events::Timestamp;
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::app::{AuditPage, Cursor, Incident, Minted, STATUSES, TokenPage, TokenQuery};
use crate::monitoring::Flag;
use crate::scope::Scope;
use crate::session::Session;
use crate::text::escape;

const CSS: &str = include_str!("style.css");
const COPY_JS: &str = include_str!("copy.js");

/// A page answer: HTML that is never cached, never framed, and loads nothing from elsewhere.
pub fn page(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    response
}

pub fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · tokenledger" }
                style { (PreEscaped(CSS)) }
                script { (PreEscaped(COPY_JS)) }
            }
            body {
                header {
                    h1 { a href="/admin/tokens" style="color:inherit;text-decoration:none" { "tokenledger" } " · " (title) }
                    @if let Some(s) = session {
                        form method="post" action="/admin/sign-out" {
                            span.muted { "Signed in as " (escape(&s.sub)) " " }
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A refusal for a person: what happened and what to do.
pub fn refusal(status: StatusCode, message: &str) -> Markup {
    let hint = match status.as_u16() {
        401 => {
            html! { p { "Sign in through your Clerk application, or locally with a " a href="/admin/sign-in" { "development session" } "." } }
        }
        503 => {
            html! { p { "Set CLERK_JWT_KEY or CLERK_JWKS_URL with CLERK_ISSUER and CLERK_AUTHORIZED_PARTIES, or create a development session with " code { "tokenledger dev-session" } "." } }
        }
        _ => html! {},
    };
    layout(
        "Admin",
        None,
        html! { section.warning { h2 { (message) } (hint) } },
    )
}

fn status_label(s: TokenStatus) -> &'static str {
    match s {
        TokenStatus::Active => "active",
        TokenStatus::RotatedInGrace => "rotated (in grace)",
        TokenStatus::Expired => "expired",
        TokenStatus::Revoked => "revoked",
    }
}

fn time(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_rfc3339()).unwrap_or_else(|| "never".into())
}

/// The create form's input and what was wrong with it, field by field.
#[derive(Default)]
pub struct CreateForm {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_in: String,
    /// Client networks, separated by spaces, commas or new lines; empty: any address.
    pub allowed_ips: String,
    pub errors: HashMap<&'static str, String>,
}

/// A new plaintext to show once, with what happened.
pub struct Shown<'a> {
    pub minted: &'a Minted,
    pub what: &'static str,
}

/// What the list page shows.
pub struct ListPage<'a> {
    pub tokens: &'a TokenPage,
    /// The filters and cursor the page was asked for: the form shows them, links keep them.
    pub query: &'a TokenQuery,
    pub flags: &'a HashMap<Uuid, Vec<Flag>>,
    pub form: &'a CreateForm,
    pub shown: Option<Shown<'a>>,
    pub notice: Option<String>,
}

fn tokens_word(n: u64) -> &'static str {
    if n == 1 { "token" } else { "tokens" }
}

/// `/admin/tokens` with `query`'s filters and limit, resuming at `cursor`.
fn list_href(query: &TokenQuery, cursor: Option<&str>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(s) = query.status {
        q.append_pair("status", s.as_str());
    }
    if let Some(s) = query.scope {
        q.append_pair("scope", s.as_str());
    }
    if let Some(e) = query.environment {
        q.append_pair("environment", e.as_str());
    }
    if let Some(p) = &query.name_prefix {
        q.append_pair("name_prefix", p);
    }
    if let Some(c) = cursor {
        q.append_pair("cursor", c);
    }
    if let Some(l) = query.limit {
        q.append_pair("limit", &l.to_string());
    }
    let q = q.finish();
    if q.is_empty() {
        "/admin/tokens".to_owned()
    } else {
        format!("/admin/tokens?{q}")
    }
}

pub fn list(p: &ListPage<'_>) -> Markup {
    let form = p.form;
    let page = p.tokens;
    let query = p.query;
    html! {
        @if let Some(n) = &p.notice { section.notice id="notice" { (escape(n)) } }
        @if let Some(s) = &p.shown {
            section.warning id="new-token" {
                h2 { (s.what) ": " (escape(&s.minted.row.name)) }
                p { strong { "Copy this token now. It will not be shown again." } " Only its hash is stored." }
                code.secret id="new-token-value" { (s.minted.token.expose()) }
                button id="copy-token" type="button" { "Copy" }
            }
        }
        section id="token-counts" {
            ul.counts {
                li { a href="/admin/tokens" { strong { (page.counts.all()) } " " (tokens_word(page.counts.all())) } }
                @for status in STATUSES {
                    li data-status=(status.as_str()) {
                        a href=(list_href(&TokenQuery { status: Some(status), ..TokenQuery::default() }, None)) {
                            strong { (page.counts.of(status)) } " " (status_label(status))
                        }
                    }
                }
            }
        }
        section id="create" {
            h2 { "Create a token" }
            form id="create-token" method="post" action="/admin/tokens" {
                label for="name" { "Name" }
                input type="text" id="name" name="name" maxlength="100" value=(escape(&form.name)) placeholder="ci-deploy";
                @if let Some(e) = form.errors.get("name") { p.error id="name-error" { (e) } }
                fieldset id="scopes" {
                    legend { strong { "Scopes" } }
                    @for scope in Scope::ALL {
                        label { input type="checkbox" name="scope" value=(scope) checked[form.scopes.iter().any(|s| s == scope.as_str())]; (scope) }
                    }
                }
                @if let Some(e) = form.errors.get("scope") { p.error id="scope-error" { (e) } }
                label for="expires_in" { "Expires in " span.muted { "(like 30d, 24h; default 90d)" } }
                input type="text" id="expires_in" name="expires_in" value=(form.expires_in) placeholder="90d";
                @if let Some(e) = form.errors.get("expires_in") { p.error id="expires-error" { (e) } }
                label for="allowed_ips" { "Allowed IPs " span.muted { "(CIDR blocks or addresses, like 10.0.0.0/8 2001:db8::/32; empty: any address)" } }
                input type="text" id="allowed_ips" name="allowed_ips" value=(form.allowed_ips) placeholder="any address";
                @if let Some(e) = form.errors.get("allowed_ips") { p.error id="allowed-ips-error" { (e) } }
                p { button id="create-submit" type="submit" { "Create token" } }
            }
        }
        section {
            h2 { "Tokens" }
            form.filters id="filter-tokens" method="get" action="/admin/tokens" {
                div {
                    label for="filter-status" { "Status" }
                    select id="filter-status" name="status" {
                        option value="" { "any" }
                        @for status in STATUSES {
                            option value=(status.as_str()) selected[query.status == Some(status)] { (status_label(status)) }
                        }
                    }
                }
                div {
                    label for="filter-scope" { "Scope" }
                    select id="filter-scope" name="scope" {
                        option value="" { "any" }
                        @for scope in Scope::ALL {
                            option value=(scope) selected[query.scope == Some(scope)] { (scope) }
                        }
                    }
                }
                div {
                    label for="filter-name-prefix" { "Name starts with" }
                    input type="text" id="filter-name-prefix" name="name_prefix" maxlength="100"
                        value=(escape(query.name_prefix.as_deref().unwrap_or_default()));
                }
                @if let Some(e) = query.environment { input type="hidden" name="environment" value=(e.as_str()); }
                @if let Some(l) = query.limit { input type="hidden" name="limit" value=(l); }
                div { button id="filter-submit" type="submit" { "Filter" } " " a.button.secondary href="/admin/tokens" { "Clear" } }
            }
            (as_of_picker(""))
            p.muted id="tokens-extent" {
                @let matching = if query.is_filtered() { " matching " } else { " " };
                @if page.complete {
                    "All " (page.total) (matching) (tokens_word(page.total)) "."
                } @else {
                    "Showing " (page.tokens.len()) " of " (page.total) (matching) (tokens_word(page.total)) ", oldest first."
                }
            }
            div.table-wrap {
                table id="tokens" {
                    thead { tr {
                        th { "Name" } th { "ID" } th { "Env" } th { "Scopes" } th { "Created" } th { "Expires" }
                        th { "Last used" } th { "Status" } th { "Actions" }
                    } }
                    tbody {
                        @for t in &page.tokens {
                            @let row_flags = p.flags.get(&t.id).cloned().unwrap_or_default();
                            tr data-token-id=(t.id) {
                                td data-label="Name" { a href={"/admin/tokens/" (t.id)} { (escape(&t.name)) } }
                                td.id data-label="ID" { (t.id) }
                                td data-label="Env" { (t.environment) }
                                td data-label="Scopes" { @for s in &t.scopes { span.badge.admin[s == Scope::Admin.as_str()] { (s) } } }
                                td data-label="Created" { (t.created_at) br; span.muted { (escape(&t.created_by)) } }
                                td data-label="Expires" { (t.expires_at) }
                                td data-label="Last used" {
                                    (t.last_used_at.as_deref().unwrap_or("never"))
                                    @if let Some(ip) = &t.last_used_ip { br; span.muted { "from " (escape(ip)) } }
                                    @if let Some(p) = &t.last_used_path { br; span.muted { "on " (escape(p)) } }
                                }
                                td.status data-label="Status" {
                                    span class={"badge " (t.status.as_str())} { (status_label(t.status)) }
                                    @for f in &row_flags {
                                        @match f {
                                            Flag::Unused => span.badge.stale { "stale" },
                                            Flag::ExpiringSoon => span.badge.expiring { "expiring soon" },
                                            Flag::AdminScope => span.badge.admin { "admin scope" },
                                            Flag::NewIp => span.badge."new-ip" { "new IP" },
                                        }
                                    }
                                }
                                td data-label="Actions" {
                                    @if t.revoked_at.is_none() {
                                        a.button.secondary.revoke href={"/admin/tokens/" (t.id) "/revoke"} { "Revoke" } " "
                                    }
                                    @if t.revoked_at.is_none() && t.rotated_to.is_none() && t.status != TokenStatus::Expired {
                                        a.button.secondary.rotate href={"/admin/tokens/" (t.id) "/rotate"} { "Rotate" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if page.counts.all() == 0 {
                p.muted { "No tokens yet." }
            } @else if page.tokens.is_empty() {
                p.muted id="no-match" { "No tokens match these filters." }
            }
            @if query.after.is_some() || page.next.is_some() {
                p.pages id="token-pages" {
                    @if query.after.is_some() {
                        a.button.secondary id="first-page" href=(list_href(query, None)) { "First page" } " "
                    }
                    @if let Some(next) = &page.next {
                        a.button.secondary id="next-page" href=(list_href(query, Some(next))) { "Next" }
                    }
                }
            }
        }
    }
}

/// A list query the page cannot answer: what was wrong, and the way back.
pub fn bad_list_query(message: &str) -> Markup {
    html! {
        section.warning {
            h2 { (escape(message)) }
            p { a.button.secondary href="/admin/tokens" { "Show every token" } }
        }
    }
}

/// Links to the neighbouring pages of a timeline.
fn page_link(id: Uuid, cursor: Option<Cursor>, newest_first: bool, label: &str) -> Markup {
    let order = if newest_first {
        "newest_first"
    } else {
        "oldest_first"
    };
    let href = match cursor {
        Some(Cursor::After(p)) => Some(format!("/admin/tokens/{id}?after={p}&order={order}")),
        Some(Cursor::Before(p)) => Some(format!("/admin/tokens/{id}?before={p}&order={order}")),
        None => None,
    };
    html! {
        @if let Some(href) = href { a.button.secondary href=(href) { (label) } " " }
    }
}

pub fn token(row: &TokenRow, events: &AuditPage, now: Timestamp) -> Markup {
    let status = row.status_at(now);
    let newest_first = events.order == "newest_first";
    let (newer, older) = if newest_first {
        (events.prev, events.next)
    } else {
        (events.next, events.prev)
    };
    html! {
        section {
            h2 { (escape(&row.name)) " " span class={"badge " (status.as_str())} { (status_label(status)) } }
            p.muted { "ID " code { (row.id) } " · " (row.environment.as_str()) " · scopes " (row.scopes.join(", ")) }
            p { "Expires " (row.expires_at.to_rfc3339()) " · last used " (time(row.last_used_at))
                @if let Some(ip) = &row.last_used_ip { " from " (escape(ip)) }
                @if let Some(p) = &row.last_used_path { " on " (escape(p)) } }
            @if let Some(from) = row.rotated_from { p { "Rotated from " a href={"/admin/tokens/" (from)} { (from) } } }
            @if let Some(to) = row.rotated_to { p { "Rotated to " a href={"/admin/tokens/" (to)} { (to) } } }
            p { a.button.secondary id="incident-link" href={"/admin/tokens/" (row.id) "/incident"} { "Incident report" } }
        }
        section {
            h2 { "Audit timeline" }
            p.muted id="timeline-extent" {
                @if events.complete {
                    "All " (events.total) " events, " (if newest_first { "newest first" } else { "oldest first" }) "."
                } @else {
                    "Showing " (events.events.len()) " of " (events.total) " events, "
                    (if newest_first { "newest first" } else { "oldest first" }) "."
                }
            }
            ol.timeline id="timeline" {
                @for e in &events.events {
                    li data-action=(e.action) data-position=(e.position) {
                        strong { (e.action) } " " span.muted { (e.occurred_at) } br;
                        "by " (escape(&e.actor))
                        @if let Some(ip) = &e.ip { " from " (escape(ip)) }
                        @if let Some(p) = &e.path { " on " (escape(p)) }
                        br; code { (escape(&e.details.to_string())) }
                    }
                }
            }
            p id="timeline-pages" {
                (page_link(row.id, newer, newest_first, "Newer"))
                (page_link(row.id, older, newest_first, "Older"))
            }
        }
        p { a.button.secondary href="/admin/tokens" { "Back to tokens" } }
    }
}

pub fn confirm_revoke(row: &TokenRow, chain: &[TokenRow]) -> Markup {
    html! {
        section.warning {
            h2 { "Revoke " (escape(&row.name)) "?" }
            p { "Token " code { (row.id) } " stops working at once, everywhere this log is read. This cannot be undone." }
            form id="confirm-revoke" method="post" action={"/admin/tokens/" (row.id) "/revoke"} {
                label for="reason" { "Reason " span.muted { "(kept in the audit trail)" } }
                input type="text" id="reason" name="reason" maxlength="500";
                @if !chain.is_empty() {
                    p id="chain-warning" { strong { "Other tokens of this rotation chain still work:" } }
                    ul id="chain-still-valid" {
                        @for t in chain {
                            li { (escape(&t.name)) " " code { (t.id) } " · until " (t.expires_at.to_rfc3339()) }
                        }
                    }
                    label { input type="checkbox" id="chain" name="chain" value="yes"; " Revoke them too, in the same step" }
                }
                p { button.danger id="confirm-revoke-submit" type="submit" { "Revoke token" } " "
                    a.button.secondary href="/admin/tokens" { "Cancel" } }
            }
        }
    }
}

pub fn confirm_rotate(row: &TokenRow) -> Markup {
    html! {
        section.warning {
            h2 { "Rotate " (escape(&row.name)) "?" }
            p { "A new token with the same name, scopes and allowed IPs is created and shown once. The old token keeps working for the grace period, so you can switch your integration over first; a grace of 0s revokes it now, and until-used keeps it working only until the new token is first used (until-used:7d: and at most 7 days)." }
            form id="confirm-rotate" method="post" action={"/admin/tokens/" (row.id) "/rotate"} {
                label for="grace" { "Grace period " span.muted { "(like 24h, 15m, 0s, until-used or until-used:7d)" } }
                input type="text" id="grace" name="grace" value="24h";
                label for="allowed_ips" { "Allowed IPs of the new token " span.muted { "(empty: any address)" } }
                input type="text" id="allowed_ips" name="allowed_ips" value=(row.allowed_ips.join(" "));
                p { button id="confirm-rotate-submit" type="submit" { "Rotate token" } " "
                    a.button.secondary href="/admin/tokens" { "Cancel" } }
            }
        }
    }
}

pub fn sign_in(dev: bool) -> Markup {
    html! {
        section {
            h2 { "Sign in" }
            @if dev {
                p { "Development sign-in: run " code { "tokenledger dev-session --sub YOU --role admin" } " and paste the session it prints." }
                form id="sign-in" method="post" action="/admin/sign-in" {
                    label for="session" { "Session" }
                    input type="text" id="session" name="session" autocomplete="off";
                    p { button id="sign-in-submit" type="submit" { "Sign in" } }
                }
            } @else {
                p { "Sign in through your Clerk application; its " code { "__session" } " cookie is accepted here." }
            }
        }
    }
}

pub fn sign_in_refused(message: &str) -> Markup {
    layout(
        "Sign in",
        None,
        html! { section.warning { h2 { (message) } p { a href="/admin/sign-in" { "Try again" } } } },
    )
}

/// The incident report: the guide's five steps, then the checkpoint. `revoke_form` adds the
/// "Revoke now" button (the page has it; a report written to a file does not).
pub fn incident(r: &Incident, revoke_form: bool) -> Markup {
    let seen = |rows: &[crate::app::SeenView], kind: &str| {
        html! {
            table id={"incident-" (kind)} {
                thead { tr { th { (kind) } th { "Allowed" } th { "Denied" } th { "First seen" } th { "Last seen" } } }
                tbody {
                    @for s in rows {
                        tr data-value=(escape(&s.value)) {
                            td { code { (escape(&s.value)) } @if s.new == Some(true) { " " span.badge.expired { "new" } } }
                            td { (s.used) } td { (s.denied) } td { (s.first_seen) } td { (s.last_seen) }
                        }
                    }
                }
            }
        }
    };
    let related = |list: &[crate::app::Related], id: &str| {
        html! {
            @if list.is_empty() { p.muted id=(id) { "None." } } @else {
                ul id=(id) {
                    @for x in list {
                        li { a href={"/admin/tokens/" (x.id)} { (escape(&x.name)) } " " code { (x.id) } " · " (x.status) " · " (escape(&x.relation))
                            br; span.muted { "Revoke: " code { (x.revoke) } " · rotate: " code { (x.rotate) } } }
                    }
                }
            }
        }
    };
    html! {
        section {
            h2 { "Incident: " (escape(&r.token.name)) " " span class={"badge " (r.token.status.as_str())} { (r.token.status.as_str()) } }
            p.muted { "Token " code { (r.token.id) } " · window " (r.since) " to " (r.until) " · positions " (r.from_position) " to " (r.to_position) }
        }
        section.warning id="incident-revoke" {
            h3 { "1. Revoke" }
            p id="incident-revoke-outcome" { (r.revocation.outcome) }
            @if revoke_form && r.token.revoked_at.is_none() {
                form id="incident-revoke-form" method="post" action={"/admin/tokens/" (r.token.id) "/revoke"} {
                    input type="hidden" name="reason" value="incident";
                    button.danger id="incident-revoke-now" type="submit" { "Revoke now" }
                }
            }
        }
        section id="incident-trail" {
            h3 { "2. Audit trail in the window" }
            p id="incident-totals" {
                @if r.trail.totals.used == 0 { "No uses. " }
                (r.trail.totals.used) " allowed uses, " (r.trail.totals.denied) " denied."
            }
            table id="incident-days" {
                thead { tr { th { "Day (UTC)" } th { "Allowed" } th { "Denied" } } }
                tbody { @for (day, c) in &r.trail.per_day { tr { td { (day) } td { (c.used) } td { (c.denied) } } } }
            }
            table id="incident-commands" {
                thead { tr { th { "Command or route" } th { "Allowed" } th { "Denied" } } }
                tbody { @for (cmd, c) in &r.trail.per_command { tr { td { code { (escape(cmd)) } } td { (c.used) } td { (c.denied) } } } }
            }
            ol.timeline id="incident-events" {
                @for e in &r.trail.events {
                    li data-position=(e.position) { strong { (e.event_type) } " " span.muted { (e.at) } br; "by " (escape(&e.actor)) ": " (escape(&e.what)) }
                }
            }
        }
        section {
            h3 { "3. Addresses and paths" }
            @if r.addresses.is_empty() { p.muted { "No uses." } }
            (seen(&r.addresses, "addresses"))
            (seen(&r.paths, "paths"))
        }
        section {
            h3 { "4. Related tokens" }
            h4 { "Rotation chain" } (related(&r.related.rotation_chain, "incident-chain"))
            h4 { "Created by the same actor" } (related(&r.related.same_creator, "incident-creator"))
            @if r.related.same_creator_total > r.related.same_creator.len() as u64 {
                p.muted { "And " (r.related.same_creator_total - r.related.same_creator.len() as u64) " more." }
            }
            h4 { "Used from the same addresses in the window" } (related(&r.related.same_addresses, "incident-addresses"))
        }
        section id="incident-scopes" {
            h3 { "5. Scopes held over time" }
            ul {
                @for s in &r.scopes {
                    li { code { (s.token_id) } " from " (s.from) " until " (s.until.as_deref().unwrap_or("now")) ": " (s.scopes.join(", "))
                        br; span.muted { "Routes: " (if s.admits.routes.is_empty() { "none".to_owned() } else { s.admits.routes.join("; ") })
                        " · console commands: " (if s.admits.console_commands.is_empty() { "none".to_owned() } else { s.admits.console_commands.join(", ") }) } }
                }
            }
        }
        section id="incident-checkpoint" {
            h3 { "Checkpoint" }
            @match (&r.checkpoint.checkpoint, &r.checkpoint.checkpoint_hint) {
                (Some(c), _) => { p { "The signed tree of " (c.size) " events (signed at " (c.signed_at) ") covers this report's position " (r.checkpoint.position) "." } pre { (c.note) } }
                (None, Some(hint)) => { p { (hint) } }
                (None, None) => { p { "The log is empty." } }
            }
        }
    }
}

/// The incident report as a self-contained HTML document (no scripts, nothing loaded).
pub fn incident_document(r: &Incident) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Incident report · " (escape(&r.token.name)) " · tokenledger" }
                style { (PreEscaped(CSS)) }
            }
            body { main { (incident(r, false)) } }
        }
    }
    .into_string()
}

/// The "as of" picker: the table as it was at a time or position.
fn as_of_picker(value: &str) -> Markup {
    html! {
        form.filters id="as-of" method="get" action="/admin/tokens" {
            div {
                label for="as-of-value" { "As of " span.muted { "(2026-11-24T09:30:00Z, 2026-11-24, position:120, 3d)" } }
                input type="text" id="as-of-value" name="as_of" maxlength="40" value=(escape(value));
            }
            div { button.secondary id="as-of-submit" type="submit" { "Show the table then" } }
        }
    }
}

/// The token table as it was at a point in the log's history.
pub fn as_of_list(p: &crate::app::AsOfPage) -> Markup {
    let point = &p.as_of;
    // The exact point, so that the next page and a reload answer the same table.
    let asked = format!("position:{}", point.position);
    html! {
        section id="as-of-point" {
            h2 { "Tokens as of " (point.at.as_deref().unwrap_or("the start")) }
            p.muted { "The fold of the log up to position " (point.position) " (the head is " (point.head) "). "
                @match (&point.checkpoint, &point.checkpoint_hint) {
                    (Some(c), _) => { "Covered by the checkpoint of " (c.size) " events signed at " (c.signed_at) "." }
                    (None, Some(h)) => { (h) }
                    (None, None) => {}
                }
            }
            (as_of_picker(&asked))
        }
        section {
            @if p.tokens.is_empty() { p id="as-of-empty" { "No tokens existed then." } } @else {
                table id="as-of-tokens" {
                    thead { tr { th { "Name" } th { "Status then" } th { "Scopes" } th { "Expires" } th { "Last used then" } th { "Uses" } th { "Rotation" } } }
                    tbody {
                        @for t in &p.tokens {
                            tr data-id=(t.id) data-status=(t.status.as_str()) {
                                td { a href={"/admin/tokens/" (t.id)} { (escape(&t.name)) } br; code.muted { (t.id) } }
                                td { span class={"badge " (t.status.as_str())} { (status_label(t.status)) } }
                                td { (t.scopes.join(", ")) }
                                td { (t.expires_at) }
                                td { (t.last_used_at.as_deref().unwrap_or("never"))
                                    @if let Some(ip) = &t.last_used_ip { br; span.muted { (escape(ip)) } } }
                                td { (t.use_count) " allowed · " (t.denied_count) " denied" }
                                td { @if let Some(f) = t.rotated_from { "from " code { (f) } br; }
                                     @if let Some(to) = t.rotated_to { "to " code { (to) } } }
                            }
                        }
                    }
                }
            }
            p.muted id="as-of-extent" { "Showing " (p.tokens.len()) " of " (p.total) " " (tokens_word(p.total)) " that existed then." }
            @if let Some(next) = &p.next {
                p { a.button.secondary id="as-of-next" href={"/admin/tokens?as_of=" (url_encode(&asked)) "&cursor=" (next)} { "Next page" } }
            }
            p { a.button.secondary href="/admin/tokens" { "Back to now" } }
        }
    }
}

fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The front page's facts, for the page and its JSON.
pub struct Index {
    pub version: &'static str,
    pub console: bool,
    pub token_auth: bool,
    pub sign_in: &'static str,
    pub docs: &'static str,
}

/// `GET /` for JSON clients.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IndexAnswer {
    service: &'static str,
    version: &'static str,
    about: &'static str,
    switches: IndexSwitches,
    /// Whether admin sign-in is configured, and what to do when it is not.
    admin_sign_in: &'static str,
    links: IndexLinks,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IndexSwitches {
    #[serde(rename = "ADMIN_CONSOLE_ENABLED")]
    console: bool,
    #[serde(rename = "ADMIN_API_TOKEN_AUTH_ENABLED")]
    token_auth: bool,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct IndexLinks {
    admin: &'static str,
    sign_in: &'static str,
    openapi: &'static str,
    docs: &'static str,
    health: &'static str,
    ready: &'static str,
    checkpoint: &'static str,
}

impl Index {
    pub fn json(&self) -> IndexAnswer {
        IndexAnswer {
            service: "tokenledger",
            version: self.version,
            about: "Event-sourced, audit-first machine-to-machine API tokens",
            switches: IndexSwitches {
                console: self.console,
                token_auth: self.token_auth,
            },
            admin_sign_in: self.sign_in,
            links: IndexLinks {
                admin: "/admin/tokens",
                sign_in: "/admin/sign-in",
                openapi: "/openapi.json",
                docs: self.docs,
                health: "/healthz",
                ready: "/readyz",
                checkpoint: "/v1/checkpoint",
            },
        }
    }
}

/// `GET /`: what this is, the switches, and the links.
pub fn index(i: &Index) -> Markup {
    let on = |b: bool| if b { "on" } else { "off" };
    let body = html! {
        section {
            h2 { "tokenledger " (i.version) }
            p { "Event-sourced, audit-first machine-to-machine API tokens: every token action is an immutable, hash-chained event, and every use is recorded before it runs." }
            h3 { "Switches" }
            ul {
                li { code { "ADMIN_CONSOLE_ENABLED" } ": " strong { (on(i.console)) } }
                li { code { "ADMIN_API_TOKEN_AUTH_ENABLED" } ": " strong { (on(i.token_auth)) } }
                li { "Admin sign-in: " strong { (i.sign_in) } }
            }
            h3 { "Where next" }
            ul {
                li { a href="/admin/tokens" { "The admin page" } " (tokens: create, rotate, revoke, audit)" }
                li { a href=(i.docs) { "Documentation (README)" } }
                li { a href="/openapi.json" { "The API description (OpenAPI)" } }
                li { a href="/healthz" { "/healthz" } ", " a href="/readyz" { "/readyz" } ", " a href="/v1/checkpoint" { "/v1/checkpoint" } }
            }
        }
    };
    layout("tokenledger", None, body)
}
