//! `tokenledger webhooks status` and `tokenledger webhooks retry`: the outbox's pending and
//! failed deliveries, and re-queueing them. Every field a receiver or a caller could have
//! shaped (the last error) is escaped.

use std::sync::Arc;

use clap::Subcommand;
use uuid::Uuid;

use super::Failure;
use super::output::{self, say};
use crate::app::webhooks::{DeliveryView, Outbox};
use crate::clock::SystemClock;
use crate::config::DatabaseUrl;
use crate::store::outbox::Requeue;

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Pending and failed deliveries: counts, and each row (id, type, token, attempts, last
    /// error, next attempt), oldest first.
    Status {
        /// Print JSON: {"pending", "delivered", "failed", "checkpoint", "pending_deliveries",
        /// "failed_deliveries"}.
        #[arg(long)]
        json: bool,
        /// Rows listed per status.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Make deliveries due now: the ids given (pending or failed ones), or every failed one
    /// (`--failed`). A failed delivery gets its attempts back.
    Retry {
        /// Delivery ids (the Idempotency-Key a receiver saw; see `webhooks status`).
        #[arg(value_parser = delivery_id_arg, required_unless_present = "failed",
              conflicts_with = "failed")]
        ids: Vec<Uuid>,
        /// Every failed delivery.
        #[arg(long)]
        failed: bool,
    },
}

fn delivery_id_arg(raw: &str) -> Result<Uuid, String> {
    Uuid::parse_str(raw.trim()).map_err(|_| {
        format!(
            "{} is not a delivery id; expected a UUID like 0193a5b2-7c4d-7e8f-9a0b-1c2d3e4f5a6b \
             (see `tokenledger webhooks status`)",
            crate::text::shown(raw)
        )
    })
}

pub(super) async fn run(url: &DatabaseUrl, command: WebhooksCommand) -> Result<(), Failure> {
    let outbox = Outbox::open(url, Arc::new(SystemClock)).await?;
    match command {
        WebhooksCommand::Status { json, limit } => {
            let status = outbox.status(limit).await?;
            if json {
                say!("{}", output::json(&status));
                return Ok(());
            }
            say!(
                "pending {}, failed {}, delivered {}; the log is read up to {}",
                status.pending,
                status.failed,
                status.delivered,
                status.checkpoint.map_or_else(
                    || "nowhere yet (webhooks never ran)".into(),
                    |p| format!("position {p}")
                )
            );
            for (title, rows) in [
                ("pending", &status.pending_deliveries),
                ("failed", &status.failed_deliveries),
            ] {
                if rows.is_empty() {
                    continue;
                }
                say!("{title}:");
                for row in rows {
                    say!("  {}", line(row));
                }
            }
            Ok(())
        }
        WebhooksCommand::Retry { ids, failed } => {
            let which = if failed {
                Requeue::Failed
            } else {
                Requeue::Ids(ids.clone())
            };
            let done = outbox.retry(&which).await?;
            for id in &done {
                say!("re-queued {id} (due now)");
            }
            if failed {
                say!("{} failed deliveries re-queued", done.len());
                return Ok(());
            }
            let mut refused = Vec::new();
            for id in ids.iter().filter(|id| !done.contains(id)) {
                refused.push(match outbox.get(*id).await? {
                    None => format!("{id}: no such delivery"),
                    Some(d) if d.status == "delivered" => format!("{id}: already delivered"),
                    Some(_) => format!("{id}: being sent now; left to its sender"),
                });
            }
            if refused.is_empty() {
                Ok(())
            } else {
                Err(Failure(format!("not re-queued: {}", refused.join("; "))))
            }
        }
    }
}

/// One row of `webhooks status`.
fn line(d: &DeliveryView) -> String {
    let token = d.token_id.map_or_else(|| "-".into(), |t| t.to_string());
    let last = match (&d.last_status, &d.last_error) {
        (_, Some(e)) => output::escape(e).into_owned(),
        (Some(s), None) => format!("HTTP {s}"),
        (None, None) => "-".into(),
    };
    format!(
        "{}  {}  token {}  attempts {}  next {}  last error: {}",
        d.id,
        output::escape(&d.event_type),
        token,
        d.attempts,
        d.next_attempt_at.as_deref().unwrap_or("-"),
        last
    )
}
