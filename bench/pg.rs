//! Scratch PostgreSQL databases for the benchmarks: created on the given server, dropped
//! (with FORCE) afterwards.

use sqlx::Connection as _;
use uuid::Uuid;

/// A new database on the server of `admin`: its URL and its name.
pub async fn create_pg_database(admin: &str) -> (String, String) {
    let name = format!("tl_bench_{}", Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin.split('?').next().unwrap_or(admin);
    let server = base.rsplit_once('/').map(|(s, _)| s).unwrap_or(base);
    (format!("{server}/{name}"), name)
}

/// Drop the scratch database `name`.
pub async fn drop_pg_database(admin: &str, name: &str) {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("connect to PostgreSQL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await
    .expect("drop database");
}
