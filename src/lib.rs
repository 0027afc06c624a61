//! tokenledger: event-sourced, audit-first machine-to-machine API tokens.
//!
//! Every token lifecycle action is an immutable event in one hash-chained log; what is true now
//! (the token table, the audit view) is a projection rebuilt from that history.
//!
//! # Layout
//!
//! - [`config`]: typed configuration from the environment; every switch defaults to off.
//! - [`token`]: the token format, minting and parsing; [`lifecycle`]: pure decisions;
//!   [`ledger`]: the shell that reads the clock, mints, decides and appends.
//! - [`store`]: the event log backends (SQLite embedded, PostgreSQL), the group-commit writer,
//!   migrations and chain verification.
//! - [`cli`]: the `tokenledger` commands.
//! - [`app`]: the HTTP service: build, bind, serve until stopped.
//!
//! The pure halves live in their own crates: `tokenledger-events` (what happened) and
//! `tokenledger-projections` (what is true at a position or a time).

pub mod admin;
pub mod admin_page;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod console;
pub mod http;
pub mod ledger;
pub mod lifecycle;
pub mod monitoring;
pub mod routes;
pub mod session;
pub mod store;
pub mod token;
