//! `DATABASE_URL=kurrentdb://...` (built with `--features kurrentdb`): the log in one KurrentDB
//! stream ([`tokenledger_kurrent::KurrentLog`]), the projections and the openings in the SQL
//! database of `PROJECTION_DATABASE_URL`, which follows the log ([`super::upstream`]).

use std::sync::Arc;
use std::time::Duration;

use tokenledger_events::Opening;
use tokenledger_kurrent::{BoxFuture, DEFAULT_STREAM, KurrentLog, OpeningVault, Settings};
use uuid::Uuid;

use super::{Database, Store, StoreError};

/// Names the stream the log lives in (default `tokenlog`).
pub const STREAM_VAR: &str = "KURRENTDB_STREAM";

/// How long connecting may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The openings of the log's events, kept in the projection database.
pub struct Vault(pub Arc<Database>);

impl OpeningVault for Vault {
    fn keep<'a>(&'a self, openings: &'a [(Uuid, Opening)]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0
                .keep_openings(openings)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn fetch<'a>(&'a self, ids: &'a [Uuid]) -> BoxFuture<'a, Result<Vec<(Uuid, Opening)>, String>> {
        Box::pin(async move { self.0.kept_openings(ids).await.map_err(|e| e.to_string()) })
    }
}

/// Connect to the log at `url`, make `db` (migrated) its projection database, and bring the
/// projections up to the log's head.
pub async fn open(db: Database, url: &str, target: &str) -> Result<Store, StoreError> {
    let stream = std::env::var(STREAM_VAR)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_STREAM.to_owned());
    let settings = Settings {
        url: url.to_owned(),
        target: target.to_owned(),
        stream: stream.clone(),
        connect_timeout: CONNECT_TIMEOUT,
    };
    let db = Arc::new(db);
    let log = KurrentLog::connect(&settings, Arc::new(Vault(db.clone())))
        .await
        .map_err(StoreError::Kurrent)?;
    let name = format!("the KurrentDB stream {stream:?} at {target}");
    Store::open_following(&db, Arc::new(log), name).await
}
