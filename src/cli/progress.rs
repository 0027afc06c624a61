//! Progress for the long passes over the log (`verify`, `projections rebuild`), drawn on
//! standard error with indicatif. Drawn only on a terminal and without `--quiet`, so piped
//! output and scripts see nothing of it; the summary lines stay on standard output.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};
use tokenledger_events::Progress;

/// A bar whose length is the head read at the start of the pass. Cleared when dropped, so a
/// failure's message and the summary line print on a clean line.
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new(what: &'static str, quiet: bool) -> Bar {
        if quiet || !std::io::stderr().is_terminal() {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(0).with_message(what);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Bar(bar)
    }

    pub fn report(&self, progress: Progress) {
        self.0.set_length(progress.head);
        self.0.set_position(progress.position);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
