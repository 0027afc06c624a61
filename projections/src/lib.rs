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
//! - [`addresses`]: per token and client address, the first and last use and a count.

pub mod addresses;
pub mod audit;
pub mod tokens;

pub use addresses::{AddressUse, AddressUses};
pub use audit::{AuditAction, AuditRow, audit_row};
pub use tokens::{TokenRow, TokenStatus, TokenTable};
