//! The route policy: every route the service answers, who may call it, and with which scopes.
//! The router is built from this table ([`crate::app::router`]), so a route cannot exist without
//! a policy; `tokenledger routes` prints it.

use std::fmt::Write as _;

use axum::routing::{MethodRouter, get, post};

use crate::app::AppState;
use crate::{admin, admin_page, http};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks).
    Public,
    /// Machines: an API token holding at least one of these scopes.
    ApiToken { scopes_any: &'static [&'static str] },
    /// Humans: a Clerk session only; a bearer API token gets 401 `API tokens are not
    /// accepted on this endpoint`.
    Session,
}

pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// The switch that must be on for the route to exist (404 otherwise).
    pub switch: Option<&'static str>,
    pub summary: &'static str,
    pub handler: fn() -> MethodRouter<AppState>,
}

/// Scopes that admit a console call (each command adds its own; see [`CONSOLE_COMMANDS`]).
pub const CONSOLE_SCOPES: &[&str] = &["console:exec", "admin"];
pub const VERIFY_SCOPES: &[&str] = &["tokens:verify"];

pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/healthz",
        access: Access::Public,
        switch: None,
        summary: "liveness",
        handler: || get(http::healthz),
    },
    Route {
        method: "GET",
        path: "/readyz",
        access: Access::Public,
        switch: None,
        summary: "database reachable and projections caught up (503 otherwise)",
        handler: || get(http::readyz),
    },
    Route {
        method: "POST",
        path: "/api/admin/console",
        access: Access::ApiToken {
            scopes_any: CONSOLE_SCOPES,
        },
        switch: Some("ADMIN_CONSOLE_ENABLED (tokens also need ADMIN_API_TOKEN_AUTH_ENABLED)"),
        summary: "run a console command {\"cmd\", \"args\"}",
        handler: || post(http::console),
    },
    Route {
        method: "POST",
        path: "/v1/verify",
        access: Access::ApiToken {
            scopes_any: VERIFY_SCOPES,
        },
        switch: None,
        summary: "check another token {\"token\", \"scopes\", \"ip\", \"path\"}",
        handler: || post(http::verify),
    },
    Route {
        method: "GET,POST",
        path: "/admin/tokens",
        access: Access::Session,
        switch: None,
        summary: "the token admin page; POST creates (form)",
        handler: || get(admin_page::tokens).post(admin_page::create),
    },
    Route {
        method: "GET",
        path: "/admin/tokens/{id}",
        access: Access::Session,
        switch: None,
        summary: "one token and its audit timeline",
        handler: || get(admin_page::token),
    },
    Route {
        method: "GET,POST",
        path: "/admin/tokens/{id}/revoke",
        access: Access::Session,
        switch: None,
        summary: "confirm, then revoke (form)",
        handler: || get(admin_page::confirm_revoke).post(admin_page::revoke),
    },
    Route {
        method: "GET,POST",
        path: "/admin/tokens/{id}/rotate",
        access: Access::Session,
        switch: None,
        summary: "confirm with a grace period, then rotate (form)",
        handler: || get(admin_page::confirm_rotate).post(admin_page::rotate),
    },
    Route {
        method: "GET,POST",
        path: "/admin/sign-in",
        access: Access::Public,
        switch: None,
        summary: "sign in (development sessions), setting the __session cookie",
        handler: || get(admin_page::sign_in_page).post(admin_page::sign_in),
    },
    Route {
        method: "POST",
        path: "/admin/sign-out",
        access: Access::Public,
        switch: None,
        summary: "clear the __session cookie",
        handler: || post(admin_page::sign_out),
    },
    Route {
        method: "GET,POST",
        path: "/api/admin/tokens",
        access: Access::Session,
        switch: None,
        summary: "admin API: list tokens; create one (plaintext once)",
        handler: || get(admin::api_list).post(admin::api_create),
    },
    Route {
        method: "GET",
        path: "/api/admin/tokens/stale",
        access: Access::Session,
        switch: None,
        summary: "admin API: the monitoring list",
        handler: || get(admin::api_stale),
    },
    Route {
        method: "POST",
        path: "/api/admin/tokens/{id}/revoke",
        access: Access::Session,
        switch: None,
        summary: "admin API: revoke {\"reason\"}",
        handler: || post(admin::api_revoke),
    },
    Route {
        method: "POST",
        path: "/api/admin/tokens/{id}/rotate",
        access: Access::Session,
        switch: None,
        summary: "admin API: rotate {\"grace\"} (plaintext once)",
        handler: || post(admin::api_rotate),
    },
    Route {
        method: "GET",
        path: "/api/admin/tokens/{id}/audit",
        access: Access::Session,
        switch: None,
        summary: "admin API: one token's audit timeline",
        handler: || get(admin::api_timeline),
    },
];

/// A console command and the scope it needs on top of `console:exec` (`admin` holds them
/// all).
pub struct ConsoleCommand {
    pub name: &'static str,
    pub scope: Option<&'static str>,
    pub summary: &'static str,
}

pub const CONSOLE_COMMANDS: &[ConsoleCommand] = &[
    ConsoleCommand {
        name: "db:health",
        scope: Some("logs:read"),
        summary: "backend, reachability, round-trip latency, head position",
    },
    ConsoleCommand {
        name: "events:verify",
        scope: Some("logs:read"),
        summary: "recompute the hash chain; the first bad position if any",
    },
    ConsoleCommand {
        name: "ping",
        scope: None,
        summary: "answer pong (a cheap authenticated call)",
    },
    ConsoleCommand {
        name: "projections:status",
        scope: Some("logs:read"),
        summary: "each projection's checkpoint and lag",
    },
    ConsoleCommand {
        name: "tokens:stale",
        scope: Some("admin"),
        summary: "tokens unused 90+ days, expiring within 7 days, admin-scoped, or used from a new IP in 24h",
    },
];

pub fn console_command(name: &str) -> Option<&'static ConsoleCommand> {
    CONSOLE_COMMANDS.iter().find(|c| c.name == name)
}

pub fn console_command_names() -> String {
    CONSOLE_COMMANDS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table as `tokenledger routes` prints it.
pub fn render() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<20} {:<34} SWITCH",
        "METHOD", "PATH", "ACCEPTS"
    );
    for r in ROUTES {
        for method in r.method.split(',') {
            let accepts = match r.access {
                Access::Public => "anyone".to_owned(),
                Access::ApiToken { scopes_any } => {
                    format!("API token: {}", scopes_any.join(" or "))
                }
                Access::Session => "Clerk admin session (no API tokens)".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<6} {:<30} {:<36} {}",
                method,
                r.path,
                accepts,
                r.switch.unwrap_or("-")
            );
        }
    }
    let _ = writeln!(
        out,
        "\nConsole commands (POST /api/admin/console, on top of console:exec or admin):"
    );
    for c in CONSOLE_COMMANDS {
        let _ = writeln!(
            out,
            "  {:<20} {:<28} {}",
            c.name,
            c.scope
                .map(|s| match s {
                    "admin" => "needs admin".to_owned(),
                    s => format!("needs {s} or admin"),
                })
                .unwrap_or_else(|| "no further scope".into()),
            c.summary
        );
    }
    out
}
