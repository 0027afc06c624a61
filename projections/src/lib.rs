//! tokenledger-projections: **what is true** at a position or a time.
//!
//! Projections fold events into state. They are pure and deterministic: the same events in the
//! same order give the same state, whether folded live, one commit at a time, or rebuilt from
//! position 0. They never read a clock: time-dependent answers take `now`.
//!
//! # Layout
//!
//! - [`tokens`]: the token table (status at time t, scopes, expiry, last use, rotation links).
//! - [`audit`]: one `audit_logs` row per event; never a hash, a commitment or a salt.
//! - [`addresses`]: per token and client address, the first and last use and a count (the
//!   IP history that monitoring and the incident report read).
//! - [`as_of`]: a token's row as of a position, from its lifecycle events and last use.
//! - [`activity`]: what one token did in a window, and its life told event by event.
//! - [`ocsf`]: one OCSF 1.8.0 record per event (Authentication, API Activity, Entity
//!   Management), with the schema's required attributes as data; never a secret.
//! - [`csv`]: audit rows as RFC 4180 CSV with a formula-injection guard and escaped controls.

pub mod activity;
pub mod addresses;
pub mod as_of;
pub mod audit;
pub mod csv;
pub mod ocsf;
pub mod tokens;

pub use activity::{Activity, Counts, LifeEvent, Seen, UseGroup, narrate};
pub use addresses::{AddressUse, AddressUses};
pub use as_of::{StreamAt, last_use_version, row_as_of};
pub use audit::{AuditAction, AuditRow, audit_row};
pub use csv::{csv_header, csv_row, write_csv_header, write_csv_row};
pub use ocsf::{OcsfOptions, missing_required, ocsf_record, write_ocsf_line};
pub use tokens::{TokenRow, TokenStatus, TokenTable};
