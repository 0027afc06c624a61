//! `POST /api/admin/console`: a command is parsed and validated before anything is recorded,
//! and runs only after its use is durable.

use std::sync::atomic::Ordering;

use crate::token_entry::TokenEntry;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::extract::{ApiCaller, AppJson, from_value, parse_json};
use super::policy::{
    CONSOLE_COMMANDS, ConsoleCommand, console_command, console_command_names, path,
};
use super::state::AppState;
use crate::app::{
    ChainCheck, DbHealth, MAX_TOKEN_PAGE, ProjectionStatus, StalePage, StaleQuery, TokenCursor,
};
use crate::monitoring::StaleParams;
use crate::text::shown;

pub fn router() -> Router<AppState> {
    Router::new().route(path::CONSOLE, post(console))
}

/// `{"cmd": "...", "args": {...}}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConsoleRequest)]
pub(super) struct Body {
    /// The command (`tokenledger routes` lists them with the scopes each needs).
    #[schema(required = true, schema_with = command_names)]
    cmd: Option<String>,
    /// The command's arguments: `{}` or absent, except for `tokens:stale` (`unused_days`,
    /// `expiring_days`, `new_ip_hours`, `cursor`, `limit`).
    #[schema(value_type = Option<Object>)]
    args: Option<Value>,
}

/// The console commands' names, from the policy table.
fn command_names() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(CONSOLE_COMMANDS.iter().map(|c| c.name)))
        .build()
}

/// `{"cmd", "result"}`: the command run and what it answered.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct ConsoleAnswer {
    cmd: &'static str,
    result: ConsoleResult,
}

/// Each command's answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum ConsoleResult {
    Pong(Pong),
    DbHealth(DbHealth),
    EventsVerify(ChainCheck),
    ProjectionsStatus(ProjectionStatus),
    TokensStale(StaleResult),
}

/// `ping`: `{"pong": true, "token_id"}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct Pong {
    pong: bool,
    /// The caller's token.
    token_id: uuid::Uuid,
}

/// `tokens:stale`: a page of the monitoring list and the thresholds it used.
#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct StaleResult {
    #[serde(flatten)]
    page: StalePage,
    params: StaleThresholds,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct StaleThresholds {
    unused_days: u32,
    expiring_days: u32,
    new_ip_hours: u32,
}

/// A validated console command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Ping,
    DbHealth,
    EventsVerify,
    ProjectionsStatus,
    TokensStale(StaleQuery),
}

/// `tokens:stale`'s args: the guide's thresholds, and a page of the list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct StaleArgs {
    unused_days: u32,
    expiring_days: u32,
    new_ip_hours: u32,
    /// The `next` of an earlier page.
    cursor: Option<String>,
    limit: Option<u64>,
}

impl Default for StaleArgs {
    fn default() -> Self {
        let p = StaleParams::default();
        StaleArgs {
            unused_days: p.unused_days,
            expiring_days: p.expiring_days,
            new_ip_hours: p.new_ip_hours,
            cursor: None,
            limit: None,
        }
    }
}

/// An empty-args struct: `{}` or absent, nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

impl Command {
    fn parse(body: Body) -> Result<(Command, &'static ConsoleCommand), ApiError> {
        let Some(cmd) = body.cmd else {
            return Err(ApiError::BadRequest(format!(
                "Missing \"cmd\"; known commands: {}",
                console_command_names()
            )));
        };
        let args = match body.args {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(args @ Value::Object(_)) => args,
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "\"args\" must be a JSON object".into(),
                ));
            }
        };
        let Some(spec) = console_command(&cmd) else {
            return Err(ApiError::BadRequest(format!(
                "Unknown command {}; known commands: {}",
                shown(&cmd),
                console_command_names()
            )));
        };
        let what = format!("Invalid args for {}", spec.name);
        let no_args = |args| from_value::<NoArgs>(&what, args);
        let command = match spec.name {
            "ping" => no_args(args).map(|_| Command::Ping)?,
            "db:health" => no_args(args).map(|_| Command::DbHealth)?,
            "events:verify" => no_args(args).map(|_| Command::EventsVerify)?,
            "projections:status" => no_args(args).map(|_| Command::ProjectionsStatus)?,
            _ => {
                let a: StaleArgs = from_value(&what, args)?;
                if a.unused_days == 0 || a.expiring_days == 0 || a.new_ip_hours == 0 {
                    return Err(ApiError::BadRequest(format!(
                        "{what}: unused_days, expiring_days and new_ip_hours must be positive whole numbers"
                    )));
                }
                let after = a
                    .cursor
                    .map(|c| TokenCursor::parse(&c))
                    .transpose()
                    .map_err(|e| ApiError::BadRequest(format!("{what}: \"cursor\" {e}")))?;
                if a.limit == Some(0) {
                    return Err(ApiError::BadRequest(format!(
                        "{what}: \"limit\" must be a whole number of at least 1 (more than {MAX_TOKEN_PAGE} is lowered to {MAX_TOKEN_PAGE})"
                    )));
                }
                Command::TokensStale(StaleQuery {
                    params: StaleParams {
                        unused_days: a.unused_days,
                        expiring_days: a.expiring_days,
                        new_ip_hours: a.new_ip_hours,
                    },
                    after,
                    limit: a.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                })
            }
        };
        Ok((command, spec))
    }
}

/// Decode a console body as the handler does (the JSON object, then the command and its
/// args) and name the command; nothing runs and nothing is recorded. The entry point for
/// fuzzing and property tests: a rejection is the exact answer a caller would get.
pub fn decode_body(bytes: &[u8]) -> Result<&'static str, ApiError> {
    let body: Body = parse_json(bytes)?;
    Command::parse(body).map(|(_, spec)| spec.name)
}

/// DESIGN's order: the policy layer has authenticated the caller and checked the route's
/// scopes; here the body is parsed, the command's own scope checked and the use recorded,
/// and only then does the command run.
#[utoipa::path(post, path = path::CONSOLE, operation_id = "run_console_command", tag = "console",
    request_body(content = Body, content_type = "application/json"),
    responses(
        (status = 200, description = "the command ran after its use was recorded", body = ConsoleAnswer),
        (status = 400, description = "the body, the command or its args are not accepted (the text names what)", body = super::error::ErrorBody),
        (status = 403, description = "the token lacks the scope this command is narrowed to", body = super::error::ErrorBody),
        (status = 409, description = "the token kept changing while this request decided; try again", body = super::error::ErrorBody),
        (status = 413, description = "the body is over 64 KiB", body = super::error::ErrorBody),
        (status = 415, description = "a body that is not application/json", body = super::error::ErrorBody),
    ))]
pub(super) async fn console(
    State(state): State<AppState>,
    caller: ApiCaller,
    AppJson(body): AppJson<Body>,
) -> Result<Json<ConsoleAnswer>, ApiError> {
    let (command, spec) = Command::parse(body)?;
    let attempt = caller
        .call
        .attempt(&state, spec.required_any(), Some(spec.name.to_owned()));
    state.ledger.admit(&caller.token, &attempt).await?;
    // The use is durable; only now does the command run.
    state.metrics.console_runs.fetch_add(1, Ordering::Relaxed);
    let result = run(&state, &caller.token, command).await?;
    Ok(Json(ConsoleAnswer {
        cmd: spec.name,
        result,
    }))
}

/// Run a command whose use is already recorded.
async fn run(
    state: &AppState,
    token: &TokenEntry,
    command: Command,
) -> Result<ConsoleResult, ApiError> {
    let q = &state.queries;
    Ok(match command {
        Command::Ping => ConsoleResult::Pong(Pong {
            pong: true,
            token_id: token.id(),
        }),
        Command::DbHealth => ConsoleResult::DbHealth(q.db_health().await),
        Command::EventsVerify => ConsoleResult::EventsVerify(q.verify_chain().await?),
        Command::ProjectionsStatus => {
            ConsoleResult::ProjectionsStatus(q.projection_status().await?)
        }
        Command::TokensStale(query) => {
            let params = query.params;
            ConsoleResult::TokensStale(StaleResult {
                page: q.stale(&query).await?,
                params: StaleThresholds {
                    unused_days: params.unused_days,
                    expiring_days: params.expiring_days,
                    new_ip_hours: params.new_ip_hours,
                },
            })
        }
    })
}
