//! Integration tests: one binary, real databases over real connections, real processes.
//! Tests that need PostgreSQL read `TEST_DATABASE_URL` and say they were skipped without it.

mod admin;
mod browser;
mod cli;
mod helpers;
mod lifecycle;
mod log_contract;
mod service;
mod sessions;
