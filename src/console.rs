//! Console commands: parsed and validated before anything is recorded, run only after the
//! use is durable.

use std::time::Instant;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokenledger_events::EventLog;
use tokenledger_projections::TokenRow;

use crate::app::AppState;
use crate::http::{ApiError, used_rows};
use crate::monitoring::{StaleParams, stale};
use crate::routes::{ConsoleCommand, console_command, console_command_names};
use crate::store::{self, StoreError};

/// A validated console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ping,
    DbHealth,
    EventsVerify,
    ProjectionsStatus,
    TokensStale(StaleParams),
}

impl Command {
    pub fn spec(&self) -> &'static ConsoleCommand {
        let name = match self {
            Command::Ping => "ping",
            Command::DbHealth => "db:health",
            Command::EventsVerify => "events:verify",
            Command::ProjectionsStatus => "projections:status",
            Command::TokensStale(_) => "tokens:stale",
        };
        console_command(name).expect("every command is in the route table")
    }
}

/// An empty-args struct: `{}` or absent, nothing else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

fn args<T: DeserializeOwned>(cmd: &str, args: Value) -> Result<T, ApiError> {
    serde_json::from_value(args).map_err(|e| {
        // serde's messages name fields and expected types; with deny_unknown_fields they list
        // the accepted fields too.
        ApiError::bad_request(format!("Invalid args for {cmd}: {e}"))
    })
}

/// Validate `{"cmd": "...", "args": {...}}`.
pub fn parse(body: &Map<String, Value>) -> Result<Command, ApiError> {
    for key in body.keys() {
        if key != "cmd" && key != "args" {
            return Err(ApiError::bad_request(format!(
                "Unknown field {key:?}; the body is {{\"cmd\": \"...\", \"args\": {{...}}}}"
            )));
        }
    }
    let cmd = match body.get("cmd") {
        Some(Value::String(c)) => c.as_str(),
        Some(_) => return Err(ApiError::bad_request("\"cmd\" must be a string")),
        None => {
            return Err(ApiError::bad_request(format!(
                "Missing \"cmd\"; known commands: {}",
                console_command_names()
            )));
        }
    };
    let raw_args = match body.get("args") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(_) => return Err(ApiError::bad_request("\"args\" must be a JSON object")),
    };
    let Some(spec) = console_command(cmd) else {
        let shown = if cmd.len() <= 40 {
            format!("{cmd:?}")
        } else {
            "(too long to show)".into()
        };
        return Err(ApiError::bad_request(format!(
            "Unknown command {shown}; known commands: {}",
            console_command_names()
        )));
    };
    Ok(match spec.name {
        "ping" => {
            args::<NoArgs>(cmd, raw_args)?;
            Command::Ping
        }
        "db:health" => {
            args::<NoArgs>(cmd, raw_args)?;
            Command::DbHealth
        }
        "events:verify" => {
            args::<NoArgs>(cmd, raw_args)?;
            Command::EventsVerify
        }
        "projections:status" => {
            args::<NoArgs>(cmd, raw_args)?;
            Command::ProjectionsStatus
        }
        _ => {
            let p: StaleParams = args(cmd, raw_args)?;
            if p.unused_days == 0 || p.expiring_days == 0 || p.new_ip_hours == 0 {
                return Err(ApiError::bad_request(
                    "Invalid args for tokens:stale: unused_days, expiring_days and new_ip_hours must be positive whole numbers",
                ));
            }
            Command::TokensStale(p)
        }
    })
}

fn unavailable(what: &str, e: &StoreError) -> ApiError {
    tracing::error!(error = %e, "{what} failed");
    ApiError::new(503, format!("{what} unavailable"))
}

/// Run a command whose use is already recorded.
pub async fn run(state: &AppState, token: &TokenRow, command: Command) -> Result<Value, ApiError> {
    match command {
        Command::Ping => Ok(json!({"pong": true, "token_id": token.id})),
        Command::DbHealth => {
            let started = Instant::now();
            let head = state.store.head().await;
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            Ok(match head {
                Ok(head) => json!({
                    "backend": state.store.backend(),
                    "reachable": true,
                    "latency_ms": (latency_ms * 1000.0).round() / 1000.0,
                    "head_position": head.position,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "db:health: database unreachable");
                    json!({
                        "backend": state.store.backend(),
                        "reachable": false,
                        "latency_ms": (latency_ms * 1000.0).round() / 1000.0,
                        "head_position": null,
                    })
                }
            })
        }
        Command::EventsVerify => match store::verify_chain(state.store.as_ref()).await {
            Ok(report) => Ok(json!({
                "ok": true,
                "events": report.events,
                "head": report.head.hash.to_string(),
            })),
            Err(StoreError::Chain(e)) => Ok(json!({
                "ok": false,
                "first_bad_position": e.position,
                "problem": e.problem.to_string(),
            })),
            Err(e) => Err(unavailable("Event log", &e)),
        },
        Command::ProjectionsStatus => {
            let head = state
                .store
                .head()
                .await
                .map_err(|e| unavailable("Event log", &StoreError::from(e)))?
                .position;
            let audit = state
                .audit_checkpoint()
                .await
                .map_err(|e| unavailable("Projection status", &e))?;
            let memory = state.cache.position();
            Ok(json!({
                "head": head,
                "projections": [
                    // api_tokens is written in the append transaction: always at the head.
                    {"name": "api_tokens", "checkpoint": head, "lag": 0},
                    {"name": "audit_logs", "checkpoint": audit, "lag": head.saturating_sub(audit)},
                    {"name": "tokens (this node's memory)", "checkpoint": memory, "lag": head.saturating_sub(memory)},
                ],
            }))
        }
        Command::TokensStale(params) => {
            let uses = used_rows(state).await?;
            let rows = state.cache.rows();
            let flagged = stale(&rows, &uses, state.ledger.now(), params);
            Ok(json!({"params": {
                "unused_days": params.unused_days,
                "expiring_days": params.expiring_days,
                "new_ip_hours": params.new_ip_hours,
            }, "tokens": flagged}))
        }
    }
}
