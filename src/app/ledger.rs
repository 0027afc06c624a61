//! Every token action as one call: read the clock, mint, ask [`crate::lifecycle`] what the
//! command means, append the events, fold them into the token cache, and only then return, so
//! a caller always sees its own write. The CLI and the HTTP handlers change tokens through
//! nothing else.

use std::sync::Arc;
use std::time::Duration;

use rand::TryRng as _;
use rand::rngs::SysRng;
use tokenledger_events::chain::field_commitment;
use tokenledger_events::{
    AppendError, DenyReason, EventLog, ExpectedVersion, NewEvent, Opening, StoredEvent,
    StreamAppend, StreamId, Timestamp, TokenCreated, TokenEvent, TokenLeakReported,
};
use tokenledger_projections::{TokenRow, TokenStatus};
use uuid::Uuid;

use crate::app::denials::{self, Denials};
use crate::app::leaks::{
    Label, LeakReport, MAX_SOURCE_CHARS, MAX_TYPE_CHARS, MAX_URL_CHARS, Reporter, inert,
};
use crate::app::token_cache::TokenCache;
use crate::clock::Clock;
use crate::config::TokenSettings;
use crate::lifecycle::{
    CreateToken, DomainError, Grace, RotateToken, UseAttempt, UseDecision, decide_create,
    decide_revoke, decide_rotate, decide_use,
};
use crate::scope::Scope;
use crate::store::{Store, StoreError};
use crate::token::{self, Environment, MintError, PlainToken};
use crate::token_entry::TokenEntry;

/// Why a presented token was refused: the exact answers of the authentication table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Missing credentials")]
    MissingCredentials,
    /// Not of our form, prefix or checksum.
    #[error("Malformed token")]
    Malformed,
    /// Of the other environment (and so unknown here), or a known token of the other one.
    #[error("Token environment mismatch: expected {}", expected.as_str())]
    EnvironmentMismatch { expected: Environment },
    /// Well-formed but not a token of this deployment.
    #[error("Invalid token")]
    Unknown,
    #[error("Token has been revoked")]
    Revoked,
    #[error("Token has expired")]
    Expired,
    #[error("Missing required scope: {}", Scope::alternatives(required_any))]
    MissingScope {
        /// Any one of these would have done.
        required_any: Vec<Scope>,
    },
    #[error("Client IP not allowed for this token")]
    IpNotAllowed,
}

impl Refusal {
    /// The refusal of a recorded denial.
    pub fn of_denial(reason: DenyReason, attempt: &UseAttempt) -> Refusal {
        match reason {
            DenyReason::EnvironmentMismatch => Refusal::EnvironmentMismatch {
                expected: attempt.server_environment,
            },
            // Reuse revokes the whole rotation chain in the denial's own append.
            DenyReason::Revoked | DenyReason::ReuseDetected => Refusal::Revoked,
            DenyReason::IpNotAllowed => Refusal::IpNotAllowed,
            DenyReason::Expired => Refusal::Expired,
            DenyReason::InsufficientScope => Refusal::MissingScope {
                required_any: attempt.required_any.clone(),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// A use that was decided and recorded as denied.
    #[error(transparent)]
    Denied(Refusal),
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

/// A new token: its plaintext, shown once, and its row.
#[derive(Debug)]
pub struct Minted {
    pub token: PlainToken,
    pub row: TokenRow,
}

/// The answer to a create or rotate: the one place a plaintext is put into JSON. No
/// `Debug`, so that it cannot reach a log line.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ShownOnce {
    pub id: uuid::Uuid,
    /// The plaintext: shown here once and never again.
    pub token: String,
    pub name: String,
    pub scopes: Vec<String>,
    /// `live` or `test`.
    pub environment: &'static str,
    pub expires_at: String,
    /// The token this one succeeds (a rotation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<uuid::Uuid>,
    /// The client networks it may be used from; left out when any address may.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_ips: Vec<String>,
}

impl Minted {
    /// `{"id","token","name","scopes","environment","expires_at"}`, plus `"rotated_from"`
    /// for a rotation.
    pub fn shown_once(&self) -> ShownOnce {
        let row = &self.row;
        ShownOnce {
            id: row.id,
            token: self.token.expose().to_owned(),
            name: row.name.clone(),
            scopes: row.scopes.clone(),
            environment: row.environment.as_str(),
            expires_at: row.expires_at.to_rfc3339(),
            rotated_from: row.rotated_from,
            allowed_ips: row.allowed_ips.clone(),
        }
    }

    /// [`Minted::shown_once`] as a JSON value.
    pub fn shown_once_json(&self) -> serde_json::Value {
        serde_json::json!(self.shown_once())
    }
}

/// What a revoke did: the tokens revoked (the one asked for first) and the other tokens of
/// its rotation chain that still authenticate.
#[derive(Debug)]
pub struct Revocation {
    pub revoked: Vec<TokenRow>,
    pub still_valid: Vec<TokenRow>,
}

/// A token create as asked for; the actor is whoever asked.
#[derive(Clone, Debug)]
pub struct CreateRequest {
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_in: Option<Duration>,
    pub actor: String,
    /// Client networks the token may be used from; empty: any.
    pub allowed_ips: Vec<String>,
}

pub use crate::lifecycle::RotateToken as RotateRequest;

/// The actor of the revocations reuse detection appends.
pub const REUSE_ACTOR: &str = "system:reuse-detection";
/// The actor that closes a rotated token at its successor's first use.
pub const OVERLAP_ACTOR: &str = "system:rotation";
/// The reason a leak report revokes with.
pub const LEAKED: &str = "leaked";

/// How often a decision is retried when its token changed between reading and appending.
const ATTEMPTS: usize = 5;

pub struct Ledger {
    store: Arc<Store>,
    /// Authentication reads compact token entries here; every append is folded in before its
    /// call returns. Decisions that change a token read its stored row.
    cache: Arc<TokenCache>,
    settings: TokenSettings,
    clock: Arc<dyn Clock>,
    /// Open denial windows: repeats are counted here, not appended one by one.
    denials: Denials,
    /// Appends this ledger made (each one transaction and one group-commit slot).
    appends: std::sync::atomic::AtomicU64,
}

impl Ledger {
    pub(crate) fn new(
        store: Arc<Store>,
        cache: Arc<TokenCache>,
        settings: TokenSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let denials = Denials::new(settings.denial_window);
        Ledger {
            store,
            cache,
            settings,
            clock,
            denials,
            appends: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many appends this ledger has made: each is one transaction.
    pub fn appends(&self) -> u64 {
        self.appends.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The clock every decision reads.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A token's stored row (the `api_tokens` table is written in every append's own
    /// transaction, so it is never behind a commit).
    pub async fn token(&self, id: Uuid) -> Result<TokenRow, LedgerError> {
        self.stored(id).await
    }

    /// Every token, oldest first, as stored: for small tables and tests; lists read pages.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, LedgerError> {
        Ok(self.store.tokens().await?)
    }

    /// A token's compact entry as this node knows it.
    pub fn entry(&self, id: Uuid) -> Option<TokenEntry> {
        self.cache.get(&id)
    }

    /// The other tokens of `id`'s rotation chain that still authenticate, as this node
    /// knows them (the chain is walked in memory, the rows read from the store): what a
    /// revoke of `id` alone would leave working. Predecessors first, nearest first, then
    /// successors.
    pub async fn chain_still_valid(&self, id: Uuid) -> Result<Vec<TokenRow>, LedgerError> {
        let now = self.now();
        let Some(entry) = self.cache.get(&id) else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        let mut seen = 0;
        for forward in [false, true] {
            let mut link = if forward {
                entry.rotated_to()
            } else {
                entry.rotated_from()
            };
            while let Some(e) = link
                .and_then(|l| self.cache.get(&l))
                .filter(|_| seen < 10_000)
            {
                seen += 1;
                link = if forward {
                    e.rotated_to()
                } else {
                    e.rotated_from()
                };
                if matches!(
                    e.status_at(now),
                    TokenStatus::Active | TokenStatus::RotatedInGrace
                ) {
                    ids.push(e.id());
                }
            }
        }
        let mut rows = self.store.tokens_by_id(&ids).await?;
        rows.sort_by_key(|r| ids.iter().position(|id| *id == r.id));
        Ok(rows)
    }

    /// What a presented string is: a known token (whatever its state), or a refusal that
    /// needs no recording. No database round trip.
    pub fn identify(&self, raw: &str) -> Result<TokenEntry, Refusal> {
        let parsed =
            token::parse(raw.trim(), &self.settings.prefix).map_err(|_| Refusal::Malformed)?;
        match self.cache.by_hash(&parsed.hash) {
            Some(entry) => Ok(entry),
            None if parsed.environment != self.settings.environment => {
                Err(Refusal::EnvironmentMismatch {
                    expected: self.settings.environment,
                })
            }
            None => Err(Refusal::Unknown),
        }
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

    /// Append and fold the result into the cache before returning it.
    async fn append(&self, batch: Vec<StreamAppend>) -> Result<Vec<StoredEvent>, AppendError> {
        self.appends
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stored = self.store.append(batch).await?;
        self.fold(&stored).await;
        Ok(stored)
    }

    /// Fold a commit of this node's in. Events past a gap (another node's commit in between
    /// that the tail has not read yet) wait in the cache, so read up to this commit first.
    async fn fold(&self, stored: &[StoredEvent]) {
        if let Err(e) = self.cache.apply(stored) {
            tracing::warn!(error = %e, "token projection could not fold a commit");
        }
        let last = stored.last().map_or(0, |e| e.position);
        if let Err(e) = self.cache.reach(&self.store, last).await {
            tracing::warn!(error = %e, "token projection could not catch up");
        }
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
                allowed_ips: req.allowed_ips,
            },
            id,
            field_commitment(&opening.field, &opening.salt, &opening.value),
            now,
            &self.settings.policy,
        )?;
        let stored = self
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
        tracing::info!(token_id = %id, actor = ?req.actor, "token created");
        Ok(Minted { token, row })
    }

    /// The stored row: decisions that change a token read the committed state, not a cache
    /// another node's commit may not have reached yet (the append's expected version then
    /// catches any race).
    async fn stored(&self, id: Uuid) -> Result<TokenRow, LedgerError> {
        self.store.token(id).await?.ok_or(LedgerError::NotFound(id))
    }

    pub async fn revoke(
        &self,
        id: Uuid,
        actor: &str,
        reason: Option<String>,
    ) -> Result<TokenRow, LedgerError> {
        let mut done = self.revoke_chain(id, actor, reason, false).await?;
        Ok(done.revoked.swap_remove(0))
    }

    /// Revoke a token; with `whole_chain`, every other token of its rotation chain that still
    /// authenticates too, in the same append, each with its own recorded cause. Without it,
    /// the answer names those left working (a revoked successor does not stop its
    /// predecessor's grace period).
    pub async fn revoke_chain(
        &self,
        id: Uuid,
        actor: &str,
        reason: Option<String>,
        whole_chain: bool,
    ) -> Result<Revocation, LedgerError> {
        for _ in 0..ATTEMPTS {
            let row = self.stored(id).await?;
            let now = self.now();
            let revoked = decide_revoke(&TokenEntry::of(&row), actor, reason.clone())?;
            let working: Vec<TokenRow> = self
                .chain_of(&row)
                .await?
                .into_iter()
                .filter(|r| {
                    matches!(
                        r.status_at(now),
                        TokenStatus::Active | TokenStatus::RotatedInGrace
                    )
                })
                .collect();
            let mut batch = vec![StreamAppend {
                stream_id: StreamId::for_token(id),
                expected: ExpectedVersion::Exact(row.version),
                events: vec![self.event(now, actor, TokenEvent::Revoked(revoked), Vec::new())],
            }];
            if whole_chain {
                for other in &working {
                    let cause = format!("revoked with its rotation chain, from token {id}");
                    let revoked = decide_revoke(&TokenEntry::of(other), actor, Some(cause))?;
                    batch.push(StreamAppend {
                        stream_id: StreamId::for_token(other.id),
                        expected: ExpectedVersion::Exact(other.version),
                        events: vec![self.event(
                            now,
                            actor,
                            TokenEvent::Revoked(revoked),
                            Vec::new(),
                        )],
                    });
                }
            }
            match self.append(batch).await {
                Ok(stored) => {
                    let mut revoked = vec![row];
                    if whole_chain {
                        revoked.extend(working.iter().cloned());
                    }
                    for r in &mut revoked {
                        fold_into(r, &stored)?;
                        tracing::info!(token_id = %r.id, actor = ?actor, "token revoked");
                    }
                    let still_valid = if whole_chain { Vec::new() } else { working };
                    return Ok(Revocation {
                        revoked,
                        still_valid,
                    });
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Busy(id))
    }

    /// Record leak reports (in order; look-alikes and unknown tokens are answered
    /// [`Label::FalsePositive`] from the cache, with no database read). Every report of a token
    /// of ours is kept as a `TokenLeakReported` (exact repeats within the call once); a token
    /// still authenticating (active, or rotated and in its grace period) is revoked in the
    /// same append, reason `leaked`, by `reporter`'s actor. One append for the whole call,
    /// decided on the stored rows and retried whole when a token changed meanwhile.
    pub async fn report_leaks(
        &self,
        reports: &[LeakReport],
        reporter: &Reporter,
    ) -> Result<Vec<Label>, LedgerError> {
        let mut labels = vec![Label::FalsePositive; reports.len()];
        // Per token of ours, in order of first report: its reports' indexes.
        let mut found: Vec<(Uuid, Vec<usize>)> = Vec::new();
        for (i, report) in reports.iter().enumerate() {
            let Ok(entry) = self.identify(&report.token) else {
                continue;
            };
            labels[i] = Label::TruePositive;
            match found.iter_mut().find(|(id, _)| *id == entry.id()) {
                Some((_, at)) => at.push(i),
                None => found.push((entry.id(), vec![i])),
            }
        }
        if found.is_empty() {
            return Ok(labels);
        }
        let actor = reporter.actor();
        let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
        for _ in 0..ATTEMPTS {
            let rows = self.store.tokens_by_id(&ids).await?;
            let now = self.now();
            let mut batch = Vec::with_capacity(found.len());
            let mut revoking = Vec::new();
            for (id, at) in &found {
                let row = rows
                    .iter()
                    .find(|r| r.id == *id)
                    .ok_or(LedgerError::NotFound(*id))?;
                let mut seen: Vec<TokenLeakReported> = Vec::new();
                let mut events = Vec::new();
                for report in at.iter().map(|i| &reports[*i]) {
                    // Whatever the edge checked, what is kept is bounded and inert.
                    let place = TokenLeakReported {
                        url: inert(report.url.as_deref(), MAX_URL_CHARS),
                        source: inert(report.source.as_deref(), MAX_SOURCE_CHARS),
                        token_type: inert(report.token_type.as_deref(), MAX_TYPE_CHARS),
                        reporter: reporter.name(),
                    };
                    if seen.contains(&place) {
                        continue;
                    }
                    seen.push(place.clone());
                    events.push(self.event(
                        now,
                        &actor,
                        TokenEvent::LeakReported(place),
                        Vec::new(),
                    ));
                }
                if matches!(
                    row.status_at(now),
                    TokenStatus::Active | TokenStatus::RotatedInGrace
                ) {
                    let revoked =
                        decide_revoke(&TokenEntry::of(row), &actor, Some(LEAKED.to_owned()))?;
                    events.push(self.event(now, &actor, TokenEvent::Revoked(revoked), Vec::new()));
                    revoking.push(*id);
                }
                batch.push(StreamAppend {
                    stream_id: StreamId::for_token(*id),
                    expected: ExpectedVersion::Exact(row.version),
                    events,
                });
            }
            match self.append(batch).await {
                Ok(_) => {
                    for id in &revoking {
                        tracing::warn!(token_id = %id, actor = %actor, "leaked token revoked");
                    }
                    tracing::info!(
                        reports = reports.len(),
                        tokens = found.len(),
                        revoked = revoking.len(),
                        actor = %actor,
                        "leak reports recorded"
                    );
                    return Ok(labels);
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Busy(ids[0]))
    }

    /// The other tokens of `row`'s rotation chain, oldest first, as stored.
    async fn chain_of(&self, row: &TokenRow) -> Result<Vec<TokenRow>, LedgerError> {
        // A chain is a line (each token is rotated at most once); the bound only guards
        // against a corrupt projection.
        const LONGEST: usize = 10_000;
        let mut before = Vec::new();
        let mut link = row.rotated_from;
        while let Some(id) = link.filter(|_| before.len() < LONGEST) {
            let r = self.stored(id).await?;
            link = r.rotated_from;
            before.push(r);
        }
        before.reverse();
        let mut link = row.rotated_to;
        while let Some(id) = link.filter(|_| before.len() < 2 * LONGEST) {
            let r = self.stored(id).await?;
            link = r.rotated_to;
            before.push(r);
        }
        Ok(before)
    }

    pub async fn rotate(&self, id: Uuid, cmd: RotateToken) -> Result<Minted, LedgerError> {
        for _ in 0..ATTEMPTS {
            let row = self.stored(id).await?;
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
            match self.append(batch).await {
                Ok(stored) => {
                    let new_row = fold_new(&stored, successor)?;
                    tracing::info!(token_id = %id, successor_id = %successor, actor = ?cmd.actor, "token rotated");
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
    /// `token` may be a moment old. A use is appended only to a token that is still unrevoked
    /// under the append lock; if a revocation got there first, the use is decided again on
    /// the stored row, and so recorded (and answered) as denied.
    pub async fn record_use(
        &self,
        token: &TokenEntry,
        attempt: &UseAttempt,
    ) -> Result<UseDecision, LedgerError> {
        let mut decisions = self.record_uses(&[(token, attempt)]).await?;
        decisions.pop().ok_or(LedgerError::Busy(token.id()))
    }

    /// Decide and record several uses of one request (the verify caller's and the checked
    /// token's) in one append: one transaction, one group-commit slot. The decisions come
    /// back in order; each is durable (or, a repeat denial, counted) when this returns. The
    /// first use is the caller's: when it is denied, the request is refused and only that
    /// denial is recorded (and returned).
    pub async fn record_uses(
        &self,
        uses: &[(&TokenEntry, &UseAttempt)],
    ) -> Result<Vec<UseDecision>, LedgerError> {
        let mut current: Vec<std::borrow::Cow<'_, TokenEntry>> = uses
            .iter()
            .map(|(token, _)| std::borrow::Cow::Borrowed(*token))
            .collect();
        let busy = LedgerError::Busy(uses.first().map_or(Uuid::nil(), |(t, _)| t.id()));
        for _ in 0..ATTEMPTS {
            let now = self.now();
            let mut decisions: Vec<UseDecision> = Vec::with_capacity(uses.len());
            for ((_, attempt), row) in uses.iter().zip(&current) {
                let decision = if self.is_reuse(row, attempt) {
                    reuse_denial(attempt)
                } else {
                    decide_use(row, attempt, now)
                };
                let refused = matches!(decision, UseDecision::Denied(_));
                decisions.push(decision);
                if refused && decisions.len() == 1 {
                    break;
                }
            }
            let mut batch: Vec<StreamAppend> = Vec::new();
            let mut opened = Vec::new();
            for (decision, row) in decisions.iter().zip(&current) {
                if let UseDecision::Denied(d) = decision
                    && d.reason == DenyReason::ReuseDetected
                {
                    let reuse = self.reuse_batch(row.id(), d.clone(), now).await?;
                    if !reuse.is_empty() {
                        batch.extend(reuse);
                        continue;
                    }
                }
                if let UseDecision::Allowed(_) = decision
                    && let Some(close) = self.close_overlap(row, now).await?
                {
                    batch.push(close);
                }
                let event = match decision {
                    UseDecision::Allowed(used) => TokenEvent::Used(used.clone()),
                    UseDecision::Denied(d) => {
                        if self
                            .denials
                            .absorb(row.id(), d.reason, d.ip.as_deref(), &d.path, now)
                        {
                            // A repeat inside its window: counted, summarised when it closes.
                            continue;
                        }
                        opened.push((row.id(), d.reason, d.ip.clone()));
                        TokenEvent::UseDenied(d.clone())
                    }
                };
                let event = self.event(now, &format!("token:{}", row.id()), event, Vec::new());
                let stream_id = StreamId::for_token(row.id());
                match batch.iter_mut().find(|a| a.stream_id == stream_id) {
                    Some(same) => same.events.push(event),
                    None => batch.push(StreamAppend {
                        stream_id,
                        expected: ExpectedVersion::Any,
                        events: vec![event],
                    }),
                }
            }
            if batch.is_empty() {
                return Ok(decisions);
            }
            let appended = self.append(batch).await;
            if appended.is_err() {
                for (token, reason, ip) in &opened {
                    self.denials.forget(*token, *reason, ip.as_deref());
                }
            }
            match appended {
                Ok(_) => return Ok(decisions),
                // A rotation chain changed under reuse detection or an overlap's close: both
                // are read again from the store.
                Err(AppendError::Conflict { .. }) => continue,
                // A revocation got there first: decide that token's use again on its stored row.
                Err(AppendError::Closed { stream }) => {
                    for row in current.iter_mut() {
                        if StreamId::for_token(row.id()) == stream {
                            let stored = self.stored(row.id()).await?;
                            *row = std::borrow::Cow::Owned(TokenEntry::of(&stored));
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(busy)
    }

    /// Append the summaries of the denial windows closed by now (every window with `all`,
    /// on a clean stop), in one append; returns how many. Summaries that could not be
    /// appended are kept for the next call.
    pub async fn flush_denials(&self, all: bool) -> Result<usize, LedgerError> {
        let now = self.now();
        let closed = self.denials.closed(now, all);
        if closed.is_empty() {
            return Ok(0);
        }
        let mut by_token: Vec<StreamAppend> = Vec::new();
        for (token, summary) in &closed {
            let event = self.event(
                now,
                denials::ACTOR,
                TokenEvent::UseDeniedSummary(summary.clone()),
                Vec::new(),
            );
            match by_token.last_mut() {
                Some(last) if last.stream_id.token_id() == Some(*token) => last.events.push(event),
                _ => by_token.push(StreamAppend {
                    stream_id: StreamId::for_token(*token),
                    expected: ExpectedVersion::Any,
                    events: vec![event],
                }),
            }
        }
        match self.append(by_token).await {
            Ok(_) => Ok(closed.len()),
            Err(e) => {
                self.denials.restore(closed);
                Err(e.into())
            }
        }
    }

    /// Record a use and admit it: `Ok` once `TokenUsed` is durable, or the recorded denial
    /// as [`LedgerError::Denied`].
    pub async fn admit(&self, token: &TokenEntry, attempt: &UseAttempt) -> Result<(), LedgerError> {
        match self.record_use(token, attempt).await? {
            UseDecision::Allowed(_) => Ok(()),
            UseDecision::Denied(d) => {
                Err(LedgerError::Denied(Refusal::of_denial(d.reason, attempt)))
            }
        }
    }

    /// Decide a use without recording it when it would be allowed (the caller records the
    /// allowed use once it knows what the call does); a denial is recorded and returned as
    /// [`LedgerError::Denied`].
    pub async fn screen(
        &self,
        token: &TokenEntry,
        attempt: &UseAttempt,
    ) -> Result<(), LedgerError> {
        if self.is_reuse(token, attempt) {
            return self.admit(token, attempt).await;
        }
        match decide_use(token, attempt, self.now()) {
            UseDecision::Allowed(_) => Ok(()),
            UseDecision::Denied(_) => self.admit(token, attempt).await,
        }
    }
}

/// Rotation overlaps that end at first use, reuse detection, and self-rotation.
impl Ledger {
    /// Whether presenting `token` now is reuse: it was rotated with an overlap that ends at
    /// its successor's first use (a self-rotation always is), and that successor has been
    /// used. Such a rotation has one holder, who has switched; whoever still presents the old
    /// token holds a copy. Read from this node's cache: no database round trip on the
    /// authentication path.
    fn is_reuse(&self, token: &TokenEntry, attempt: &UseAttempt) -> bool {
        token.until_successor_used()
            && token.environment() == attempt.server_environment
            && token
                .rotated_to()
                .and_then(|s| self.cache.get(&s))
                .is_some_and(|s| s.last_used_at().is_some())
    }

    /// The append of a detected reuse: the denial on the presented token, and a revocation
    /// of every token of its rotation chain not yet revoked (the presented one included),
    /// each at its stored version, with [`REUSE_ACTOR`] and the cause. Empty when the whole
    /// chain is already revoked (the denial is then recorded as any other).
    async fn reuse_batch(
        &self,
        id: Uuid,
        denial: tokenledger_events::TokenUseDenied,
        now: Timestamp,
    ) -> Result<Vec<StreamAppend>, LedgerError> {
        let row = self.stored(id).await?;
        let successor = row
            .rotated_to
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        let cause = format!(
            "reuse detected: token {id} was presented after its successor {successor} took over; its rotation chain is revoked"
        );
        let revoke = |r: &TokenRow| {
            (r.revoked_at.is_none()).then(|| {
                self.event(
                    now,
                    REUSE_ACTOR,
                    TokenEvent::Revoked(tokenledger_events::TokenRevoked {
                        actor: REUSE_ACTOR.to_owned(),
                        reason: Some(cause.clone()),
                    }),
                    Vec::new(),
                )
            })
        };
        let chain = self.chain_of(&row).await?;
        let mut batch = Vec::new();
        for other in &chain {
            if let Some(event) = revoke(other) {
                batch.push(StreamAppend {
                    stream_id: StreamId::for_token(other.id),
                    expected: ExpectedVersion::Exact(other.version),
                    events: vec![event],
                });
            }
        }
        let own = revoke(&row);
        if batch.is_empty() && own.is_none() {
            return Ok(Vec::new());
        }
        let denial = self.event(
            now,
            &format!("token:{id}"),
            TokenEvent::UseDenied(denial),
            Vec::new(),
        );
        batch.insert(
            0,
            StreamAppend {
                stream_id: StreamId::for_token(id),
                expected: ExpectedVersion::Exact(row.version),
                events: std::iter::once(denial).chain(own).collect(),
            },
        );
        tracing::warn!(token_id = %id, revoked = batch.len(), "reuse detected: rotation chain revoked");
        Ok(batch)
    }

    /// The first use of a successor whose predecessor's overlap ends at that use: the
    /// predecessor's revocation, to append with the use, recorded with [`OVERLAP_ACTOR`] and
    /// the cause. Read from the store only on such a first use.
    async fn close_overlap(
        &self,
        successor: &TokenEntry,
        now: Timestamp,
    ) -> Result<Option<StreamAppend>, LedgerError> {
        let Some(old) = successor.rotated_from() else {
            return Ok(None);
        };
        if successor.last_used_at().is_some()
            || !self
                .cache
                .get(&old)
                .is_some_and(|o| o.until_successor_used() && o.revoked_at().is_none())
        {
            return Ok(None);
        }
        let row = self.stored(old).await?;
        if !row.until_successor_used || row.revoked_at.is_some() || row.expires_at <= now {
            return Ok(None);
        }
        let revoked = tokenledger_events::TokenRevoked {
            actor: OVERLAP_ACTOR.to_owned(),
            reason: Some(format!(
                "rotation overlap ended: its successor {} was first used",
                successor.id()
            )),
        };
        Ok(Some(StreamAppend {
            stream_id: StreamId::for_token(old),
            expected: ExpectedVersion::Exact(row.version),
            events: vec![self.event(now, OVERLAP_ACTOR, TokenEvent::Revoked(revoked), Vec::new())],
        }))
    }

    /// A token rotates itself (`POST /v1/tokens/self/rotate`): its use and the rotation in
    /// one append. The successor keeps its name, scopes and allowlist; its lifetime is the
    /// old token's (or `expires_in`), at most the policy's maximum; the old token works until
    /// the successor's first use, and at most the policy's default grace. A token already
    /// rotated that rotates again is reuse: its whole chain is revoked instead, and the
    /// answer is the recorded denial.
    pub async fn rotate_self(
        &self,
        token: &TokenEntry,
        attempt: &UseAttempt,
        expires_in: Option<Duration>,
    ) -> Result<Minted, LedgerError> {
        let id = token.id();
        let actor = format!("token:{id}");
        for _ in 0..ATTEMPTS {
            let row = self.stored(id).await?;
            let entry = TokenEntry::of(&row);
            let now = self.now();
            let reused = row.rotated_to.is_some() || self.is_reuse(&entry, attempt);
            let decision = if reused {
                reuse_denial(attempt)
            } else {
                decide_use(&entry, attempt, now)
            };
            let used = match decision {
                UseDecision::Allowed(used) => used,
                UseDecision::Denied(d) if d.reason == DenyReason::ReuseDetected => {
                    let batch = self.reuse_batch(id, d.clone(), now).await?;
                    if batch.is_empty() {
                        self.admit(&entry, attempt).await?;
                        return Err(LedgerError::Denied(Refusal::Revoked));
                    }
                    match self.append(batch).await {
                        Ok(_) => return Err(LedgerError::Denied(Refusal::Revoked)),
                        Err(AppendError::Conflict { .. }) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                // Recorded and answered as any refused use (decided again as it is recorded:
                // should that allow it, the rotation is decided again).
                UseDecision::Denied(_) => match self.admit(&entry, attempt).await {
                    Err(refused) => return Err(refused),
                    Ok(()) => continue,
                },
            };
            let lifetime = Duration::from_micros(
                u64::try_from(row.expires_at.as_micros() - row.created_at.as_micros()).unwrap_or(0),
            )
            .min(self.settings.policy.max_ttl);
            let (plain, opening) = self.mint()?;
            let successor = Uuid::now_v7();
            let rotation = decide_rotate(
                &row,
                &RotateToken {
                    expires_in: Some(expires_in.unwrap_or(lifetime)),
                    grace: Some(Grace::UntilUsed {
                        max: Some(self.settings.policy.default_grace),
                    }),
                    actor: actor.clone(),
                    ..RotateToken::default()
                },
                successor,
                field_commitment(&opening.field, &opening.salt, &opening.value),
                now,
                &self.settings.policy,
            )?;
            let mut batch = vec![
                StreamAppend {
                    stream_id: StreamId::for_token(id),
                    expected: ExpectedVersion::Exact(row.version),
                    events: vec![
                        self.event(now, &actor, TokenEvent::Used(used), Vec::new()),
                        self.event(
                            now,
                            &actor,
                            TokenEvent::Rotated(rotation.rotated),
                            Vec::new(),
                        ),
                    ],
                },
                StreamAppend {
                    stream_id: StreamId::for_token(successor),
                    expected: ExpectedVersion::NoStream,
                    events: vec![self.event(
                        now,
                        &actor,
                        TokenEvent::Created(rotation.created),
                        vec![opening],
                    )],
                },
            ];
            // This use may be the first of a successor whose predecessor waits for it.
            if let Some(close) = self.close_overlap(&entry, now).await? {
                batch.push(close);
            }
            match self.append(batch).await {
                Ok(stored) => {
                    let row = fold_new(&stored, successor)?;
                    tracing::info!(token_id = %id, successor_id = %successor, "token rotated itself");
                    return Ok(Minted { token: plain, row });
                }
                Err(AppendError::Conflict { .. } | AppendError::Closed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(LedgerError::Busy(id))
    }
}

/// The denial of a detected reuse.
fn reuse_denial(attempt: &UseAttempt) -> UseDecision {
    UseDecision::Denied(tokenledger_events::TokenUseDenied {
        reason: DenyReason::ReuseDetected,
        ip: attempt.ip.clone(),
        path: attempt.path.clone(),
    })
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
