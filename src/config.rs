//! Typed configuration. Every value comes from a flag or its environment variable (clap's
//! `env`), so `--help` documents both; an unusable value stops the process with a message that
//! names the variable. Every safety switch defaults to off.

use std::net::SocketAddr;

use crate::store::{DatabaseUrl, StoreError};

/// Parse `DATABASE_URL` / `--database-url` for clap.
pub fn parse_database_url(raw: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(raw).map_err(|e| match e {
        StoreError::BadUrl(why) => {
            format!("{why}; accepted: sqlite://PATH[?mode=rwc] or postgres://USER@HOST[:PORT]/DB")
        }
        other => other.to_string(),
    })
}

/// What `tokenledger serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub database_url: DatabaseUrl,
    /// Where to listen; port 0 picks a free port (tests).
    pub bind_addr: SocketAddr,
}
