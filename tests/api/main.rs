//! Integration tests: one binary, real databases over real connections, real processes.
//! Tests that need PostgreSQL read `TEST_DATABASE_URL` and say they were skipped without it.

mod abuse;
mod admin;
mod audit_queries;
mod browser;
mod checkpoints;
mod cli;
mod cli_database_url;
mod decoders;
mod deploy;
mod export;
mod first_minute;
mod forensics;
mod hardening;
mod helpers;
mod layering;
mod leaks;
mod log_contract;
mod metrics;
mod old_format;
mod openapi;
mod policy;
mod preflight;
mod primary_log;
mod properties;
mod secrets;
mod service;
mod sessions;
mod token_pages;
mod token_safety;
mod webhooks;
