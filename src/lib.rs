//! tokenledger: event-sourced, audit-first machine-to-machine API tokens.
//!
//! Every token lifecycle action is an immutable event in one hash-chained log; what is true now
//! (the token table, the audit view) is a projection rebuilt from that history. An
//! authenticated action runs only after its use is durable.
//!
//! # Layout
//!
//! Dependencies point down this list, never up: `http` and `cli` call `app`; `app` calls
//! `lifecycle` and `store`; nothing but `server` imports `http`.
//!
//! - [`server`]: the composition root: an [`app::Application`] served through [`http`].
//! - [`http`]: the axum edge: the route policy applied by a route layer, extractors, one
//!   error type, and the handlers (health, console, verify, admin API, admin page).
//! - [`cli`]: the `tokenledger` commands.
//! - [`app`]: the application layer: [`app::Ledger`] (decide, append, fold into the token
//!   cache), [`app::Queries`] (the reads both edges share) and [`app::Application`] (with
//!   the connection loop that bounds how long and how many clients are served);
//!   `app::webhooks` sends revocations, leak reports and expiry warnings from an outbox.
//! - [`session`]: Clerk session verification, the JWKS cache and the development key.
//! - [`signing`]: the log's Ed25519 signing keys (key file, origin); `app::checkpoints` signs
//!   and stores checkpoints of the Merkle tree with them.
//! - [`lifecycle`]: pure decisions; [`monitoring`]: the guide's monitoring list (pure).
//! - [`store`]: every byte written to a database: the SQLite and PostgreSQL logs, the
//!   group-commit writer, migrations, and the webhook outbox (`store::outbox`).
//! - [`token_entry`]: the compact token entry the in-memory cache holds (pure).
//! - [`config`], [`clock`], [`token`] (the token format, and redaction of token-shaped
//!   values), [`scope`] (the scopes, the only place their names are spelled), [`text`]
//!   (caller text made safe to show: the one escaping function).
//!
//! The pure halves live in their own crates: `tokenledger-events` (what happened: events,
//! canonical bytes, the hash chain and its verification) and `tokenledger-projections` (what
//! is true at a position). `docs/ARCHITECTURE.md` has the data flow and the invariants.

pub mod allowlist;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod lifecycle;
pub mod monitoring;
pub mod scope;
pub mod server;
pub mod session;
pub mod signing;
pub mod store;
pub mod text;
pub mod token;
pub mod token_entry;
