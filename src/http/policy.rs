//! The route policy: every route the service answers, who may call it, the switch it needs,
//! and the console commands with the scopes they need. This table is the one place access is
//! declared; the router applies it ([`super::extract::apply_policy`]) and `tokenledger
//! routes` prints it. It holds data only: the handlers live in their modules.

use std::fmt::Write as _;

use crate::config::Switches;
use crate::scope::Scope;

/// A safety switch a route depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// `ADMIN_CONSOLE_ENABLED`
    Console,
    /// `ADMIN_API_TOKEN_AUTH_ENABLED`
    TokenAuth,
    /// `GITHUB_SECRET_SCANNING_KEYS` (set, rather than true)
    GithubSecretScanning,
}

impl Switch {
    pub fn variable(self) -> &'static str {
        match self {
            Switch::Console => "ADMIN_CONSOLE_ENABLED",
            Switch::TokenAuth => "ADMIN_API_TOKEN_AUTH_ENABLED",
            Switch::GithubSecretScanning => "GITHUB_SECRET_SCANNING_KEYS",
        }
    }

    /// `X is not true`, or `X is not set` for a switch that is a setting.
    pub fn when_off(self) -> String {
        match self {
            Switch::GithubSecretScanning => format!("{} is not set", self.variable()),
            _ => format!("{} is not true", self.variable()),
        }
    }

    pub fn is_on(self, switches: &Switches) -> bool {
        match self {
            Switch::Console => switches.console_enabled,
            Switch::TokenAuth => switches.token_auth_enabled,
            Switch::GithubSecretScanning => switches.github_secret_scanning,
        }
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health checks, sign-in).
    Public,
    /// Machines: an API token holding at least one of `any_of`. With `tokens_switch` off a
    /// bearer token gets 401 `API token authentication is disabled`.
    ApiToken {
        any_of: &'static [Scope],
        tokens_switch: Option<Switch>,
    },
    /// Humans: an admin's Clerk session only; an API token gets 401 `API tokens are not
    /// accepted on this endpoint`.
    Session,
    /// An admin's Clerk session, or an API token holding at least one of `any_of` (a bearer
    /// that is not a session JWT is taken as a token).
    SessionOrApiToken { any_of: &'static [Scope] },
}

/// How a refusal is answered: JSON for clients, a page for people in a browser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Json,
    Html,
}

pub struct Route {
    /// The methods answered, comma-separated.
    pub methods: &'static str,
    pub path: &'static str,
    pub access: Access,
    /// The switch that must be on for the route to exist (404 otherwise).
    pub switch: Option<Switch>,
    pub answer: Answer,
    pub summary: &'static str,
}

/// The paths, named once for the table and the module routers.
pub mod path {
    pub const INDEX: &str = "/";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const CONSOLE: &str = "/api/admin/console";
    pub const VERIFY: &str = "/v1/verify";
    pub const ROTATE_SELF: &str = "/v1/tokens/self/rotate";
    pub const CHECKPOINT: &str = "/v1/checkpoint";
    pub const PAGE_TOKENS: &str = "/admin/tokens";
    pub const PAGE_TOKEN: &str = "/admin/tokens/{id}";
    pub const PAGE_REVOKE: &str = "/admin/tokens/{id}/revoke";
    pub const PAGE_ROTATE: &str = "/admin/tokens/{id}/rotate";
    pub const SIGN_IN: &str = "/admin/sign-in";
    pub const SIGN_IN_LINK: &str = "/admin/sign-in/link";
    pub const SIGN_OUT: &str = "/admin/sign-out";
    pub const API_TOKENS: &str = "/api/admin/tokens";
    pub const API_STALE: &str = "/api/admin/tokens/stale";
    pub const API_REVOKE: &str = "/api/admin/tokens/{id}/revoke";
    pub const API_ROTATE: &str = "/api/admin/tokens/{id}/rotate";
    pub const API_TIMELINE: &str = "/api/admin/tokens/{id}/audit";
    pub const API_INCIDENT: &str = "/api/admin/tokens/{id}/incident";
    pub const PAGE_INCIDENT: &str = "/admin/tokens/{id}/incident";
    pub const API_AUDIT: &str = "/api/admin/audit";
    pub const OPENAPI: &str = "/openapi.json";
    pub const LEAKS_GITHUB: &str = "/v1/leaks/github";
    pub const LEAKS: &str = "/v1/leaks";
}

/// The guide: the console needs `console:exec` or `admin`.
pub const CONSOLE_SCOPES: &[Scope] = &[Scope::ConsoleExec, Scope::Admin];
pub const VERIFY_SCOPES: &[Scope] = &[Scope::TokensVerify];
pub const ROTATE_SELF_SCOPES: &[Scope] = &[Scope::TokensRotateSelf];
pub const LEAK_SCOPES: &[Scope] = &[Scope::LeaksReport];

const fn public(methods: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        methods,
        path,
        access: Access::Public,
        switch: None,
        answer: Answer::Json,
        summary,
    }
}

/// A public page for people (HTML or a redirect).
const fn public_page(methods: &'static str, path: &'static str, summary: &'static str) -> Route {
    Route {
        answer: Answer::Html,
        ..public(methods, path, summary)
    }
}

const fn admin(
    methods: &'static str,
    path: &'static str,
    answer: Answer,
    summary: &'static str,
) -> Route {
    Route {
        methods,
        path,
        access: Access::Session,
        switch: None,
        answer,
        summary,
    }
}

pub static ROUTES: &[Route] = &[
    public(
        "GET",
        path::INDEX,
        "what this service is, its switches, and links (a page; JSON with Accept: application/json)",
    ),
    public("GET", path::HEALTHZ, "liveness"),
    public(
        "GET",
        path::READYZ,
        "database reachable and projections caught up (503 otherwise)",
    ),
    public(
        "GET",
        path::CHECKPOINT,
        "the latest signed checkpoint of the log's Merkle tree (a C2SP signed note, text/plain)",
    ),
    public(
        "GET",
        path::OPENAPI,
        "the OpenAPI 3.1 document of the JSON API (docs/openapi.json)",
    ),
    Route {
        methods: "POST",
        path: path::CONSOLE,
        access: Access::ApiToken {
            any_of: CONSOLE_SCOPES,
            tokens_switch: Some(Switch::TokenAuth),
        },
        switch: Some(Switch::Console),
        answer: Answer::Json,
        summary: "run a console command {\"cmd\", \"args\"}",
    },
    Route {
        methods: "POST",
        path: path::VERIFY,
        access: Access::ApiToken {
            any_of: VERIFY_SCOPES,
            tokens_switch: None,
        },
        switch: None,
        answer: Answer::Json,
        summary: "check another token {\"token\", \"scopes\", \"ip\", \"path\"}",
    },
    Route {
        methods: "POST",
        path: path::ROTATE_SELF,
        access: Access::ApiToken {
            any_of: ROTATE_SELF_SCOPES,
            tokens_switch: None,
        },
        switch: None,
        answer: Answer::Json,
        summary: "the calling token rotates itself {\"expires_in\"} (successor once; reuse revokes the chain)",
    },
    admin(
        "GET,POST",
        path::PAGE_TOKENS,
        Answer::Html,
        "the token admin page; POST creates (form)",
    ),
    admin(
        "GET",
        path::PAGE_TOKEN,
        Answer::Html,
        "one token and its audit timeline",
    ),
    admin(
        "GET,POST",
        path::PAGE_REVOKE,
        Answer::Html,
        "confirm, then revoke (form)",
    ),
    admin(
        "GET,POST",
        path::PAGE_ROTATE,
        Answer::Html,
        "confirm with a grace period, then rotate (form)",
    ),
    admin(
        "GET",
        path::PAGE_INCIDENT,
        Answer::Html,
        "the incident report of one token, with a revoke-now button (?since=T)",
    ),
    public_page(
        "GET,POST",
        path::SIGN_IN,
        "sign in (development sessions), setting the __session cookie",
    ),
    Route {
        methods: "GET",
        path: path::SIGN_IN_LINK,
        access: Access::Public,
        switch: None,
        answer: Answer::Html,
        summary: "the one-time development sign-in link serve prints (?nonce=): sets the __session cookie",
    },
    public_page("POST", path::SIGN_OUT, "clear the __session cookie"),
    admin(
        "GET,POST",
        path::API_TOKENS,
        Answer::Json,
        "admin API: list tokens; create one (plaintext once)",
    ),
    admin(
        "GET",
        path::API_STALE,
        Answer::Json,
        "admin API: the monitoring list",
    ),
    admin(
        "POST",
        path::API_REVOKE,
        Answer::Json,
        "admin API: revoke {\"reason\"}",
    ),
    admin(
        "POST",
        path::API_ROTATE,
        Answer::Json,
        "admin API: rotate {\"grace\"} (plaintext once)",
    ),
    admin(
        "GET",
        path::API_TIMELINE,
        Answer::Json,
        "admin API: one token's audit timeline",
    ),
    admin(
        "GET",
        path::API_INCIDENT,
        Answer::Json,
        "admin API: the incident report of one token (?since=T)",
    ),
    admin(
        "GET",
        path::API_AUDIT,
        Answer::Json,
        "admin API: the audit view, filtered and paged by cursor",
    ),
    Route {
        methods: "POST",
        path: path::LEAKS_GITHUB,
        // The caller is GitHub: the handler checks its ECDSA signature over the raw body.
        access: Access::Public,
        switch: Some(Switch::GithubSecretScanning),
        answer: Answer::Json,
        summary: "GitHub secret scanning reports [{\"token\", \"type\", \"url\", \"source\"}], signed; answers GitHub's feedback labels",
    },
    Route {
        methods: "POST",
        path: path::LEAKS,
        access: Access::SessionOrApiToken {
            any_of: LEAK_SCOPES,
        },
        switch: None,
        answer: Answer::Json,
        summary: "report leaked tokens [{\"token\", \"location\"}]; 202 with no detail",
    },
];

/// The policy row of a routed path (as axum matched it).
pub fn route(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.path == path)
}

/// A console command. `console:exec` or `admin` admits every command the guide names; a
/// command the guide does not name may be narrowed to a further scope, and says why.
pub struct ConsoleCommand {
    pub name: &'static str,
    /// The scope needed on top of `console:exec` (`admin` holds every scope).
    pub narrowed_to: Option<Narrowing>,
    pub summary: &'static str,
}

pub struct Narrowing {
    pub scope: Scope,
    pub why: &'static str,
}

impl ConsoleCommand {
    /// The scopes any one of which the command needs beyond the route's.
    pub fn required_any(&self) -> Vec<Scope> {
        match &self.narrowed_to {
            None => Vec::new(),
            Some(n) if n.scope == Scope::Admin => vec![Scope::Admin],
            Some(n) => vec![n.scope, Scope::Admin],
        }
    }
}

/// The commands the guide names: these are admitted by `console:exec` alone.
pub const GUIDE_COMMANDS: &[&str] = &["db:health"];

pub static CONSOLE_COMMANDS: &[ConsoleCommand] = &[
    ConsoleCommand {
        name: "db:health",
        narrowed_to: None,
        summary: "backend, reachability, round-trip latency, head position",
    },
    ConsoleCommand {
        name: "events:verify",
        narrowed_to: Some(Narrowing {
            scope: Scope::LogsRead,
            why: "reads the whole log",
        }),
        summary: "recompute the hash chain; the first bad position if any",
    },
    ConsoleCommand {
        name: "ping",
        narrowed_to: None,
        summary: "answer pong (a cheap authenticated call)",
    },
    ConsoleCommand {
        name: "projections:status",
        narrowed_to: Some(Narrowing {
            scope: Scope::LogsRead,
            why: "reports the log's state",
        }),
        summary: "each projection's checkpoint and lag",
    },
    ConsoleCommand {
        name: "tokens:stale",
        narrowed_to: Some(Narrowing {
            scope: Scope::Admin,
            why: "lists other tokens",
        }),
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

/// What a token holding `scopes` is admitted to: the routes that accept it and, when the
/// console is one, the console commands. For the incident report's "what the scopes allowed".
pub fn admitted(scopes: &[String]) -> crate::app::Admitted {
    let routes: Vec<String> = ROUTES
        .iter()
        .filter(|r| match r.access {
            Access::ApiToken { any_of, .. } | Access::SessionOrApiToken { any_of } => {
                Scope::any_held(any_of, scopes)
            }
            _ => false,
        })
        .map(|r| format!("{} {}", r.methods, r.path))
        .collect();
    let console = ROUTES.iter().any(|r| {
        r.path == path::CONSOLE
            && matches!(r.access, Access::ApiToken { any_of, .. } if Scope::any_held(any_of, scopes))
    });
    let console_commands = if console {
        CONSOLE_COMMANDS
            .iter()
            .filter(|c| {
                let needed = c.required_any();
                needed.is_empty() || Scope::any_held(&needed, scopes)
            })
            .map(|c| c.name.to_owned())
            .collect()
    } else {
        Vec::new()
    };
    crate::app::Admitted {
        routes,
        console_commands,
    }
}

/// The table as `tokenledger routes` prints it.
pub fn render() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:<30} {:<36} SWITCH",
        "METHOD", "PATH", "ACCEPTS"
    );
    for r in ROUTES {
        let accepts = match r.access {
            Access::Public => "anyone".to_owned(),
            Access::ApiToken { any_of, .. } => {
                format!("API token: {}", Scope::alternatives(any_of))
            }
            Access::Session => "Clerk admin session (no API tokens)".to_owned(),
            Access::SessionOrApiToken { any_of } => {
                format!("session or API token: {}", Scope::alternatives(any_of))
            }
        };
        let mut switches: Vec<String> = r.switch.iter().map(|s| s.variable().to_owned()).collect();
        if let Access::ApiToken {
            tokens_switch: Some(s),
            ..
        } = r.access
        {
            switches.push(format!("(tokens also need {})", s.variable()));
        }
        let switch = if switches.is_empty() {
            "-".to_owned()
        } else {
            switches.join(" ")
        };
        for method in r.methods.split(',') {
            let _ = writeln!(out, "{method:<9} {:<30} {accepts:<36} {switch}", r.path);
        }
    }
    let _ = writeln!(
        out,
        "\nConsole commands (POST {}): console:exec or admin runs every command the guide names ({}); \
         a command it does not name may be narrowed:",
        path::CONSOLE,
        GUIDE_COMMANDS.join(", ")
    );
    for c in CONSOLE_COMMANDS {
        let needs = match &c.narrowed_to {
            None => "no further scope".to_owned(),
            Some(n) if n.scope == Scope::Admin => format!("needs admin ({})", n.why),
            Some(n) => format!("needs {} or admin ({})", n.scope, n.why),
        };
        let _ = writeln!(out, "  {:<20} {:<52} {}", c.name, needs, c.summary);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_commands_need_nothing_beyond_the_console_scope() {
        for name in GUIDE_COMMANDS {
            let command = console_command(name).expect("the guide's commands exist");
            assert!(command.narrowed_to.is_none(), "{name} is narrowed");
            assert!(command.required_any().is_empty());
        }
    }

    #[test]
    fn every_path_has_one_row() {
        for r in ROUTES {
            assert_eq!(
                ROUTES.iter().filter(|o| o.path == r.path).count(),
                1,
                "{}",
                r.path
            );
            assert!(std::ptr::eq(route(r.path).expect("found"), r));
        }
    }
}
