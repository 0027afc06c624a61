//! Schema migrations, embedded in the binary: one ordered list per dialect, each entry one
//! file of `migrations/<dialect>/`. `tokenledger migrate` and server start apply them;
//! `tokenledger migrate --status` lists what is applied and what is pending.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Row as _, SqlSafeStr as _};

use super::{Database, StoreError};

/// A migration file: version, name (the file stem), SQL.
pub(crate) struct MigrationFile {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($dialect:literal, $version:literal, $name:literal) => {
        MigrationFile {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $dialect, "/", $name, ".sql")),
        }
    };
}

pub(crate) const SQLITE: &[MigrationFile] = &[
    migration!("sqlite", 1, "0001_event_log"),
    migration!("sqlite", 2, "0002_projections"),
    migration!("sqlite", 3, "0003_audit_use_addresses"),
    migration!("sqlite", 4, "0004_compact_audit"),
    migration!("sqlite", 5, "0005_tree_hashes"),
    migration!("sqlite", 6, "0006_forensics"),
    migration!("sqlite", 7, "0007_token_safety"),
    migration!("sqlite", 8, "0008_webhook_outbox"),
    migration!("sqlite", 9, "0009_leak_reports"),
    migration!("sqlite", 10, "0010_primary_log"),
];
pub(crate) const POSTGRES: &[MigrationFile] = &[
    migration!("postgres", 1, "0001_event_log"),
    migration!("postgres", 2, "0002_projections"),
    migration!("postgres", 3, "0003_audit_use_addresses"),
    migration!("postgres", 4, "0004_compact_audit"),
    migration!("postgres", 5, "0005_tree_hashes"),
    migration!("postgres", 6, "0006_forensics"),
    migration!("postgres", 7, "0007_token_safety"),
    migration!("postgres", 8, "0008_webhook_outbox"),
    migration!("postgres", 9, "0009_leak_reports"),
    migration!("postgres", 10, "0010_primary_log"),
];

pub(crate) fn migrator(files: &'static [MigrationFile]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|f| {
                Migration::new(
                    f.version,
                    f.name.into(),
                    MigrationType::Simple,
                    f.sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// One migration and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub version: i64,
    pub name: &'static str,
    pub state: AppliedState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppliedState {
    Applied,
    Pending,
    /// Applied, but the file has changed since: the database and the binary disagree.
    Modified,
}

impl std::fmt::Display for AppliedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppliedState::Applied => "applied",
            AppliedState::Pending => "pending",
            AppliedState::Modified => "MODIFIED since applied",
        })
    }
}

const TABLE: &str = "_sqlx_migrations";

/// Apply every pending migration.
pub async fn run(db: &Database) -> Result<(), StoreError> {
    let result = match db {
        Database::Sqlite(d) => migrator(SQLITE).run(&d.write).await,
        Database::Postgres(d) => migrator(POSTGRES).run(&d.pool).await,
    };
    result.map_err(|e| StoreError::Migrate(e.to_string()))
}

/// Which migrations are applied, without changing the database.
pub async fn status(db: &Database) -> Result<Vec<MigrationState>, StoreError> {
    let (files, rows) = match db {
        Database::Sqlite(d) => {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)",
            )
            .bind(TABLE)
            .fetch_one(&d.write)
            .await
            .map_err(StoreError::db)?;
            let rows = if exists {
                sqlx::query("SELECT version, checksum FROM _sqlx_migrations WHERE success")
                    .fetch_all(&d.write)
                    .await
                    .map_err(StoreError::db)?
                    .iter()
                    .map(|r| Ok((r.try_get("version")?, r.try_get("checksum")?)))
                    .collect::<Result<Vec<(i64, Vec<u8>)>, sqlx::Error>>()
                    .map_err(StoreError::db)?
            } else {
                Vec::new()
            };
            (SQLITE, rows)
        }
        Database::Postgres(d) => {
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(TABLE)
                .fetch_one(&d.pool)
                .await
                .map_err(StoreError::db)?;
            let rows = if exists {
                sqlx::query("SELECT version, checksum FROM _sqlx_migrations WHERE success")
                    .fetch_all(&d.pool)
                    .await
                    .map_err(StoreError::db)?
                    .iter()
                    .map(|r| Ok((r.try_get("version")?, r.try_get("checksum")?)))
                    .collect::<Result<Vec<(i64, Vec<u8>)>, sqlx::Error>>()
                    .map_err(StoreError::db)?
            } else {
                Vec::new()
            };
            (POSTGRES, rows)
        }
    };
    let migrator = migrator(files);
    Ok(migrator
        .iter()
        .zip(files)
        .map(|(m, f)| {
            let state = match rows.iter().find(|(v, _)| *v == m.version) {
                None => AppliedState::Pending,
                Some((_, checksum)) if checksum[..] == m.checksum[..] => AppliedState::Applied,
                Some(_) => AppliedState::Modified,
            };
            MigrationState {
                version: m.version,
                name: f.name,
                state,
            }
        })
        .collect())
}
