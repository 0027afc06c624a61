//! Integration tests: one binary, real databases over real connections, real processes.
//! Tests that need PostgreSQL read `TEST_DATABASE_URL` and say they were skipped without it.

mod cli;
mod helpers;
mod log_contract;
mod service;
