//! Denied uses, bounded (the log is append-only: every refused attempt would otherwise grow it
//! by a synced event). The first denial per (token, reason, client IP) in a window is
//! recorded in full; its repeats inside the window are only counted here, and become one
//! `TokenUseDeniedSummary` when the window closes or the process stops cleanly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokenledger_events::{DenyReason, Timestamp, TokenUseDeniedSummary};
use uuid::Uuid;

/// The actor of the summaries: no person or token wrote them.
pub(crate) const ACTOR: &str = "system:denial-window";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    token: Uuid,
    reason: DenyReason,
    ip: Option<String>,
}

#[derive(Debug)]
struct Window {
    /// When the window's first (recorded) denial happened.
    opened_at: Timestamp,
    repeats: u64,
    first_repeat: Timestamp,
    last_repeat: Timestamp,
    last_path: String,
}

/// The open windows of this node.
pub(crate) struct Denials {
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    open: HashMap<Key, Window>,
    /// Summaries of windows that closed, waiting for the next flush.
    done: Vec<(Uuid, TokenUseDeniedSummary)>,
}

impl Window {
    fn fresh(now: Timestamp) -> Window {
        Window {
            opened_at: now,
            repeats: 0,
            first_repeat: now,
            last_repeat: now,
            last_path: String::new(),
        }
    }

    /// The summary of its repeats, if it counted any.
    fn summary(self, key: &Key, window: Duration) -> Option<(Uuid, TokenUseDeniedSummary)> {
        (self.repeats > 0).then(|| {
            (
                key.token,
                TokenUseDeniedSummary {
                    reason: key.reason,
                    ip: key.ip.clone(),
                    path: self.last_path,
                    count: self.repeats,
                    first_at: self.first_repeat,
                    last_at: self.last_repeat,
                    window_secs: window.as_secs(),
                },
            )
        })
    }
}

impl Denials {
    pub(crate) fn new(window: Duration) -> Denials {
        Denials {
            window,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count a denial as a repeat if its window is open at `now`. `false` means it is the
    /// first of a new window, which this call opens (so that denials racing it are counted
    /// as its repeats): the caller records it in full, or [`Denials::forget`]s the window if
    /// that fails.
    pub(crate) fn absorb(
        &self,
        token: Uuid,
        reason: DenyReason,
        ip: Option<&str>,
        path: &str,
        now: Timestamp,
    ) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let key = Key {
            token,
            reason,
            ip: ip.map(str::to_owned),
        };
        let mut state = self.state();
        let State { open, done } = &mut *state;
        match open.get_mut(&key) {
            Some(w) if now < w.opened_at.plus(self.window) => {
                if w.repeats == 0 {
                    w.first_repeat = now;
                }
                w.repeats += 1;
                w.last_repeat = now;
                w.last_path.clear();
                w.last_path.push_str(path);
                true
            }
            // Closed but not flushed yet: its summary waits for the flush, and this denial
            // opens the next window (so no gap between windows records every denial).
            Some(w) => {
                let old = std::mem::replace(w, Window::fresh(now));
                done.extend(old.summary(&key, self.window));
                false
            }
            None => {
                open.insert(key, Window::fresh(now));
                false
            }
        }
    }

    /// The first denial of a window could not be recorded: close the window it opened, so
    /// the next denial is recorded in full (its repeats so far are kept for the summary).
    pub(crate) fn forget(&self, token: Uuid, reason: DenyReason, ip: Option<&str>) {
        let key = Key {
            token,
            reason,
            ip: ip.map(str::to_owned),
        };
        let mut state = self.state();
        if state.open.get(&key).is_some_and(|w| w.repeats == 0) {
            state.open.remove(&key);
        }
    }

    /// Take the windows that have closed by `now` (all of them with `all`), returning the
    /// summaries of those that counted repeats, per token.
    pub(crate) fn closed(&self, now: Timestamp, all: bool) -> Vec<(Uuid, TokenUseDeniedSummary)> {
        let window = self.window;
        let mut state = self.state();
        let State { open, done } = &mut *state;
        let mut out = std::mem::take(done);
        let closing: Vec<Key> = open
            .iter()
            .filter(|(_, w)| all || now >= w.opened_at.plus(window))
            .map(|(k, _)| k.clone())
            .collect();
        for key in closing {
            if let Some(w) = open.remove(&key) {
                out.extend(w.summary(&key, window));
            }
        }
        out.sort_by_key(|(token, s)| (*token, s.first_at));
        out
    }

    /// Give summaries that could not be appended back, so that the next flush tries again.
    pub(crate) fn restore(&self, summaries: Vec<(Uuid, TokenUseDeniedSummary)>) {
        self.state().done.extend(summaries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_micros(1_000_000_000_000_000);

    fn at(secs: u64) -> Timestamp {
        T0.plus(Duration::from_secs(secs))
    }

    #[test]
    fn repeats_inside_the_window_are_counted_and_summarised_once_it_closes() {
        let d = Denials::new(Duration::from_secs(60));
        let token = Uuid::from_u128(7);
        let ip = Some("203.0.113.9");
        assert!(
            !d.absorb(token, DenyReason::Revoked, ip, "/a", at(0)),
            "first is recorded"
        );
        for s in 1..=59 {
            assert!(d.absorb(token, DenyReason::Revoked, ip, "/b", at(s)));
        }
        // Another reason or address is a window of its own.
        assert!(!d.absorb(token, DenyReason::Expired, ip, "/a", at(5)));
        assert!(!d.absorb(
            token,
            DenyReason::Revoked,
            Some("198.51.100.1"),
            "/a",
            at(5)
        ));
        assert!(d.closed(at(59), false).is_empty(), "still open");
        let closed = d.closed(at(60), false);
        assert_eq!(closed.len(), 1);
        let (t, s) = &closed[0];
        assert_eq!(*t, token);
        assert_eq!((s.count, s.first_at, s.last_at), (59, at(1), at(59)));
        assert_eq!(s.path, "/b");
        // The window is gone: the next denial is recorded in full again.
        assert!(!d.absorb(token, DenyReason::Revoked, ip, "/a", at(61)));
        // A window that closed before the flush ran: the next denial opens a new one, and
        // the repeats after it are counted, not recorded one by one.
        assert!(d.absorb(token, DenyReason::Revoked, ip, "/c", at(62)));
        assert!(
            !d.absorb(token, DenyReason::Revoked, ip, "/d", at(130)),
            "a new window"
        );
        assert!(d.absorb(token, DenyReason::Revoked, ip, "/e", at(131)));
        let flushed = d.closed(at(131), false);
        assert_eq!(
            flushed.len(),
            1,
            "the closed window's summary waited for the flush"
        );
        assert_eq!((flushed[0].1.count, flushed[0].1.path.as_str()), (1, "/c"));
        assert_eq!(
            d.closed(at(191), false)[0].1.count,
            1,
            "then the new window's"
        );
        // A first denial that could not be recorded leaves no window behind.
        assert!(!d.absorb(token, DenyReason::Revoked, ip, "/a", at(300)));
        d.forget(token, DenyReason::Revoked, ip);
        assert!(!d.absorb(token, DenyReason::Revoked, ip, "/a", at(301)));
    }

    #[test]
    fn a_clean_stop_takes_every_window_and_a_failed_append_is_kept() {
        let d = Denials::new(Duration::from_secs(60));
        let token = Uuid::from_u128(8);
        assert!(!d.absorb(token, DenyReason::Expired, None, "/x", at(0)));
        assert!(d.absorb(token, DenyReason::Expired, None, "/x", at(1)));
        let taken = d.closed(at(2), true);
        assert_eq!(taken.len(), 1);
        d.restore(taken);
        let again = d.closed(at(3), false);
        assert_eq!(
            again.len(),
            1,
            "a restored summary is taken by the next flush"
        );
        assert_eq!(again[0].1.count, 1);
    }

    #[test]
    fn a_zero_window_records_every_denial() {
        let d = Denials::new(Duration::ZERO);
        assert!(!d.absorb(Uuid::from_u128(9), DenyReason::Revoked, None, "/", at(0)));
        assert!(!d.absorb(Uuid::from_u128(9), DenyReason::Revoked, None, "/", at(0)));
    }
}
