//! The application layer: the imperative shell around the pure decisions. It reads the clock,
//! mints secrets, asks [`crate::lifecycle`] what a command means, appends the events and folds
//! the stored events into the answer. The CLI and the HTTP handlers call only this.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use rand::TryRng as _;
use rand::rngs::SysRng;
use serde::Serialize;
use tokenledger_events::chain::field_commitment;
use tokenledger_events::{
    AppendError, EventLog, ExpectedVersion, NewEvent, Opening, StoredEvent, StreamAppend, StreamId,
    Timestamp, TokenCreated, TokenEvent,
};
use tokenledger_projections::{AuditRow, TokenRow, TokenStatus};
use uuid::Uuid;

use crate::lifecycle::{
    self, CreateToken, DomainError, Policy, RotateToken, UseAttempt, UseDecision, decide_create,
    decide_revoke, decide_rotate, decide_use,
};
use crate::store::{Store, StoreError};
use crate::token::{self, Environment, MintError, PlainToken, TokenPrefix};

/// Where `now` comes from. Domain code never reads a clock; the shell reads this one, and
/// tests move a [`ManualClock`] instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Timestamp::from_micros(micros)
    }
}

/// A clock that moves only when told to.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.as_micros())))
    }

    pub fn advance(&self, by: Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    pub fn set(&self, to: Timestamp) {
        self.0.store(to.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.0.load(Ordering::SeqCst))
    }
}

/// What this deployment mints and accepts.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    pub prefix: TokenPrefix,
    /// The environment minted tokens carry and the only one this server accepts.
    pub environment: Environment,
    pub policy: Policy,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            prefix: TokenPrefix::default(),
            environment: Environment::Test,
            policy: Policy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Refused(#[from] DomainError),
    #[error("no token with id {0}")]
    NotFound(Uuid),
    #[error("token {0} kept changing while this request decided; try again")]
    Busy(Uuid),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Mint(#[from] MintError),
}

impl LedgerError {
    /// A refusal of the request itself (as opposed to an infrastructure failure).
    pub fn is_refusal(&self) -> bool {
        matches!(self, LedgerError::Refused(_) | LedgerError::NotFound(_))
    }
}

/// A new token: its plaintext, shown once, and its row.
#[derive(Debug)]
pub struct Minted {
    pub token: PlainToken,
    pub row: TokenRow,
}

impl Minted {
    /// The answer to a create or rotate, the one place a plaintext is put into JSON:
    /// `{"id","token","name","scopes","environment","expires_at"}`, plus `"rotated_from"`
    /// for a rotation.
    pub fn shown_once_json(&self) -> serde_json::Value {
        let row = &self.row;
        let mut out = serde_json::json!({
            "id": row.id,
            "token": self.token.expose(),
            "name": row.name,
            "scopes": row.scopes,
            "environment": row.environment.as_str(),
            "expires_at": row.expires_at.to_rfc3339(),
        });
        if let Some(from) = row.rotated_from {
            out["rotated_from"] = serde_json::json!(from);
        }
        out
    }
}

/// A token create as asked for; the actor is whoever asked.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_in: Option<Duration>,
    pub actor: String,
}

/// How often a decision is retried when its token changed between reading and appending.
const ATTEMPTS: usize = 5;

pub struct Ledger {
    store: Arc<Store>,
    settings: TokenSettings,
    clock: Arc<dyn Clock>,
}

impl Ledger {
    pub fn new(store: Arc<Store>, settings: TokenSettings, clock: Arc<dyn Clock>) -> Self {
        Ledger {
            store,
            settings,
            clock,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// An event recorded at `now`: the same instant the decision was made at, so one
    /// command reads the clock once.
    fn event(
        &self,
        now: Timestamp,
        actor: &str,
        event: TokenEvent,
        openings: Vec<Opening>,
    ) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            recorded_at: now,
            actor: actor.to_owned(),
            event,
            openings,
        }
    }

    /// Mint a token and the opening of its hash commitment.
    fn mint(&self) -> Result<(PlainToken, Opening), LedgerError> {
        let token = token::mint(&self.settings.prefix, self.settings.environment)?;
        let mut salt = [0u8; 32];
        SysRng
            .try_fill_bytes(&mut salt)
            .map_err(|e| LedgerError::Mint(MintError::from_os(e)))?;
        let opening = Opening {
            field: TokenCreated::SECRET_FIELD.into(),
            salt,
            value: token.hash().0.to_vec(),
        };
        Ok((token, opening))
    }

    pub async fn create(&self, req: CreateRequest) -> Result<Minted, LedgerError> {
        let (token, opening) = self.mint()?;
        let id = Uuid::now_v7();
        let now = self.now();
        let created = decide_create(
            &CreateToken {
                name: req.name,
                scopes: req.scopes,
                expires_in: req.expires_in,
                environment: self.settings.environment,
                actor: req.actor.clone(),
            },
            id,
            field_commitment(&opening.field, &opening.salt, &opening.value),
            now,
            &self.settings.policy,
        )?;
        let stored = self
            .store
            .append(vec![StreamAppend {
                stream_id: StreamId::for_token(id),
                expected: ExpectedVersion::NoStream,
                events: vec![self.event(
                    now,
                    &req.actor,
                    TokenEvent::Created(created),
                    vec![opening],
                )],
            }])
            .await?;
        let row = fold_new(&stored, id)?;
        tracing::info!(token_id = %id, actor = %req.actor, "token created");
        Ok(Minted { token, row })
    }

    pub async fn token(&self, id: Uuid) -> Result<TokenRow, LedgerError> {
        self.store.token(id).await?.ok_or(LedgerError::NotFound(id))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, LedgerError> {
        Ok(self.store.tokens().await?)
    }

    pub async fn revoke(
        &self,
        id: Uuid,
        actor: &str,
        reason: Option<String>,
    ) -> Result<TokenRow, LedgerError> {
        for _ in 0..ATTEMPTS {
            let mut row = self.token(id).await?;
            let now = self.now();
            let revoked = decide_revoke(&row, actor, reason.clone())?;
            let append = StreamAppend {
                stream_id: StreamId::for_token(id),
                expected: ExpectedVersion::Exact(row.version),
                events: vec![self.event(now, actor, TokenEvent::Revoked(revoked), Vec::new())],
            };
            match self.store.append(vec![append]).await {
                Ok(stored) => {
                    fold_into(&mut row, &stored)?;
                    tracing::info!(token_id = %id, actor, "token revoked");
                    return Ok(row);
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Busy(id))
    }

    pub async fn rotate(&self, id: Uuid, cmd: RotateToken) -> Result<Minted, LedgerError> {
        for _ in 0..ATTEMPTS {
            let row = self.token(id).await?;
            let (token, opening) = self.mint()?;
            let successor = Uuid::now_v7();
            let now = self.now();
            let rotation = decide_rotate(
                &row,
                &cmd,
                successor,
                field_commitment(&opening.field, &opening.salt, &opening.value),
                now,
                &self.settings.policy,
            )?;
            let mut old_events = vec![self.event(
                now,
                &cmd.actor,
                TokenEvent::Rotated(rotation.rotated),
                Vec::new(),
            )];
            if let Some(revoked) = rotation.revoked {
                old_events.push(self.event(
                    now,
                    &cmd.actor,
                    TokenEvent::Revoked(revoked),
                    Vec::new(),
                ));
            }
            let batch = vec![
                StreamAppend {
                    stream_id: StreamId::for_token(id),
                    expected: ExpectedVersion::Exact(row.version),
                    events: old_events,
                },
                StreamAppend {
                    stream_id: StreamId::for_token(successor),
                    expected: ExpectedVersion::NoStream,
                    events: vec![self.event(
                        now,
                        &cmd.actor,
                        TokenEvent::Created(rotation.created),
                        vec![opening],
                    )],
                },
            ];
            match self.store.append(batch).await {
                Ok(stored) => {
                    let new_row = fold_new(&stored, successor)?;
                    tracing::info!(token_id = %id, successor_id = %successor, actor = %cmd.actor, "token rotated");
                    return Ok(Minted {
                        token,
                        row: new_row,
                    });
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Busy(id))
    }

    /// Decide a use of a known token at `now` and append the answer: `TokenUsed` when it is
    /// allowed, `TokenUseDenied` when not. The caller acts only on `Allowed`, and only after
    /// this returns: the event is durable by then (audit first).
    ///
    /// `row` may be a moment old. A use is appended only to a token that is still unrevoked
    /// under the append lock; if a revocation got there first, the use is decided again on
    /// the stored row, and so recorded (and answered) as denied.
    pub async fn record_use(
        &self,
        row: &TokenRow,
        attempt: &UseAttempt,
    ) -> Result<(UseDecision, StoredEvent), LedgerError> {
        let mut current = std::borrow::Cow::Borrowed(row);
        for _ in 0..ATTEMPTS {
            let now = self.now();
            let decision = decide_use(&current, attempt, now);
            let event = match &decision {
                UseDecision::Allowed(used) => TokenEvent::Used(used.clone()),
                UseDecision::Denied(denied) => TokenEvent::UseDenied(denied.clone()),
            };
            let actor = format!("token:{}", row.id);
            let appended = self
                .store
                .append(vec![StreamAppend {
                    stream_id: StreamId::for_token(row.id),
                    expected: ExpectedVersion::Any,
                    events: vec![self.event(now, &actor, event, Vec::new())],
                }])
                .await;
            match appended {
                Ok(mut stored) => {
                    let event = stored
                        .pop()
                        .ok_or_else(|| corrupt("an append answered no event"))?;
                    return Ok((decision, event));
                }
                Err(AppendError::Closed { .. }) => {
                    current = std::borrow::Cow::Owned(self.token(row.id).await?);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Busy(row.id))
    }

    /// Bring the audit view up to the head (the server's subscriber does this continuously;
    /// the CLI after each command).
    pub async fn settle(&self) -> Result<u64, LedgerError> {
        Ok(self.store.catch_up_audit().await?)
    }
}

fn corrupt(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Store(StoreError::Db(format!(
        "a stored event does not decode: {e}"
    )))
}

/// The row of the token a batch just created.
fn fold_new(stored: &[StoredEvent], id: Uuid) -> Result<TokenRow, LedgerError> {
    let mut rows = std::collections::HashMap::new();
    for e in stored.iter().filter(|e| e.stream_id.token_id() == Some(id)) {
        tokenledger_projections::tokens::fold(&mut rows, e, &e.decode().map_err(corrupt)?);
    }
    rows.remove(&id).ok_or(LedgerError::NotFound(id))
}

fn fold_into(row: &mut TokenRow, stored: &[StoredEvent]) -> Result<(), LedgerError> {
    let id = row.id;
    for e in stored.iter().filter(|e| e.stream_id.token_id() == Some(id)) {
        row.apply(e, &e.decode().map_err(corrupt)?);
    }
    Ok(())
}

/// A token as people and clients see it: no hash, times in RFC 3339, status at `now`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub environment: &'static str,
    pub scopes: Vec<String>,
    pub status: TokenStatus,
    pub created_at: String,
    pub created_by: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub rotated_from: Option<Uuid>,
    pub rotated_to: Option<Uuid>,
    pub last_used_at: Option<String>,
    pub last_used_ip: Option<String>,
    pub last_used_path: Option<String>,
    pub use_count: u64,
    pub denied_count: u64,
}

impl TokenView {
    pub fn new(row: &TokenRow, now: Timestamp) -> TokenView {
        let time = |t: Option<Timestamp>| t.map(Timestamp::to_rfc3339);
        TokenView {
            id: row.id,
            name: row.name.clone(),
            environment: row.environment.as_str(),
            scopes: row.scopes.clone(),
            status: row.status_at(now),
            created_at: row.created_at.to_rfc3339(),
            created_by: row.created_by.clone(),
            expires_at: row.expires_at.to_rfc3339(),
            revoked_at: time(row.revoked_at),
            revoked_by: row.revoked_by.clone(),
            revoke_reason: row.revoke_reason.clone(),
            rotated_from: row.rotated_from,
            rotated_to: row.rotated_to,
            last_used_at: time(row.last_used_at),
            last_used_ip: row.last_used_ip.clone(),
            last_used_path: row.last_used_path.clone(),
            use_count: row.use_count,
            denied_count: row.denied_count,
        }
    }
}

/// An audit row as people and clients see it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditView {
    pub position: u64,
    pub event_id: Uuid,
    pub action: &'static str,
    pub token_id: Uuid,
    pub actor: String,
    pub ip: Option<String>,
    pub path: Option<String>,
    pub scopes: Vec<String>,
    pub occurred_at: String,
    pub details: serde_json::Value,
}

impl From<&AuditRow> for AuditView {
    fn from(r: &AuditRow) -> Self {
        AuditView {
            position: r.position,
            event_id: r.event_id,
            action: r.action.as_str(),
            token_id: r.token_id,
            actor: r.actor.clone(),
            ip: r.ip.clone(),
            path: r.path.clone(),
            scopes: r.scopes.clone(),
            occurred_at: r.occurred_at.to_rfc3339(),
            details: r.details.clone(),
        }
    }
}

/// Re-exported for callers that build requests.
pub use lifecycle::RotateToken as RotateRequest;
