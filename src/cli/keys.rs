//! `tokenledger keys` and `tokenledger checkpoints`: the log's signing keys and the
//! checkpoints signed with them.

use clap::Subcommand;

use super::Failure;
use super::output::say;
use crate::app::Services;
use crate::config::{DatabaseUrl, SigningConfig};
use crate::signing::SigningKeys;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make the log's signing key (Ed25519, in a 0600 file) and print its verifier key, the
    /// line to publish for offline verification. Refused when the file exists.
    Init,
    /// Print the verifier key of every signing key, oldest first.
    Show,
    /// Add a new signing key; from now on every key in the file signs, so verifiers holding
    /// either key accept what is signed during the overlap.
    Rotate,
}

pub fn run_keys(
    services: &Services,
    url: &DatabaseUrl,
    signing: &SigningConfig,
    command: KeysCommand,
) -> Result<(), Failure> {
    use tokenledger_events::EventLog as _;
    let origin = signing.origin(services.store().log_id());
    let path = signing.key_path(url, services.store().log_id());
    let keys = match command {
        KeysCommand::Init => SigningKeys::init(&path, &origin),
        KeysCommand::Show => SigningKeys::require(&path, &origin),
        KeysCommand::Rotate => SigningKeys::rotate(&path, &origin),
    }
    .map_err(|e| Failure(e.to_string()))?;
    eprintln!(
        "{} key(s) for origin {} in {}; publish the verifier key(s):",
        keys.verifier_keys().len(),
        keys.origin(),
        keys.path().display()
    );
    for vkey in keys.verifier_keys() {
        say!("{vkey}");
    }
    Ok(())
}

/// List the signed checkpoints, newest first; with `sign`, sign the head first.
pub async fn run_checkpoints(
    services: &mut Services,
    url: &DatabaseUrl,
    signing: &SigningConfig,
    limit: usize,
    sign: bool,
) -> Result<(), Failure> {
    if sign {
        let checkpointer = services
            .with_signing_keys(url, signing, false)
            .map_err(|e| Failure(e.to_string()))?
            .clone();
        match checkpointer.sign_head().await {
            Ok(Some(c)) => eprintln!("signed the tree at size {}", c.size),
            Ok(None) => eprintln!("the log is empty: nothing to sign"),
            Err(e) => return Err(Failure(e.to_string())),
        }
    }
    let checkpoints = services.queries().checkpoints(limit).await?;
    if checkpoints.is_empty() {
        eprintln!("no checkpoint has been signed yet; `serve` signs them, or `checkpoints --sign`");
    }
    for c in checkpoints {
        say!(
            "{:>10}  {}  {}  {}",
            c.size,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c.root.0),
            c.signed_at.to_rfc3339(),
            signers(&c.note)
        );
    }
    Ok(())
}

/// The `name+keyid` of each signature line of a note.
fn signers(note: &str) -> String {
    tokenledger_events::Note::parse(note.as_bytes())
        .map(|n| {
            n.signatures()
                .iter()
                .map(|s| format!("{}+{:08x}", s.name, s.key_id))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|e| format!("(unreadable note: {e})"))
}
