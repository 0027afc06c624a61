//! The development sign-in link: `serve` in development with no sign-in configured prints
//! one link whose nonce, kept here in memory only, is exchanged once within
//! [`LINK_LIFETIME`] for a development admin session (what `tokenledger dev-session --role
//! admin` prints). A restart forgets every nonce; production never makes one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRng as _;
use tokenledger_events::Timestamp;

use crate::clock::Clock;
use crate::session::DevKey;

/// How long a printed link may be used.
pub const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The user a link's session names.
pub const LINK_SUBJECT: &str = "dev-admin";

/// Why a link gave no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    #[error("This sign-in link was already used; each link signs in once")]
    Spent,
    #[error("This sign-in link has expired; links last 10 minutes")]
    Expired,
    #[error("This sign-in link is not known to this server (it forgets links when it restarts)")]
    Unknown,
}

/// One-time links and the key their sessions are signed with.
pub struct SignInLinks {
    key: DevKey,
    clock: Arc<dyn Clock>,
    /// Nonce -> when it expires and whether it was used. Spent nonces are kept so that a
    /// second use is told so; links are made once per start, so this stays tiny.
    nonces: Mutex<HashMap<String, (Timestamp, bool)>>,
}

impl SignInLinks {
    pub fn new(key: DevKey, clock: Arc<dyn Clock>) -> SignInLinks {
        SignInLinks {
            key,
            clock,
            nonces: Mutex::default(),
        }
    }

    /// A fresh nonce (256 random bits), usable once until [`LINK_LIFETIME`] from now.
    pub fn issue(&self) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| format!("no randomness for a sign-in link: {e}"))?;
        let nonce = URL_SAFE_NO_PAD.encode(bytes);
        let lifetime = i64::try_from(LINK_LIFETIME.as_micros()).unwrap_or(i64::MAX);
        let expires = Timestamp::from_micros(self.clock.now().as_micros().saturating_add(lifetime));
        self.lock().insert(nonce.clone(), (expires, false));
        Ok(nonce)
    }

    /// Spend `nonce` for a development admin session (a JWT), or say why not.
    pub fn redeem(&self, nonce: &str) -> Result<String, LinkRefused> {
        let now = self.clock.now();
        {
            let mut nonces = self.lock();
            let (expires, spent) = nonces.get_mut(nonce).ok_or(LinkRefused::Unknown)?;
            if *spent {
                return Err(LinkRefused::Spent);
            }
            if now >= *expires {
                return Err(LinkRefused::Expired);
            }
            *spent = true;
        }
        self.key.sign(LINK_SUBJECT, true, now).map_err(|e| {
            tracing::error!(error = %e, "no session could be signed for a sign-in link");
            LinkRefused::Unknown
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Timestamp, bool)>> {
        self.nonces.lock().unwrap_or_else(|p| p.into_inner())
    }
}
