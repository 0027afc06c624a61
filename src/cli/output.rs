//! Everything the CLI prints goes through here: caller-supplied text is escaped with
//! [`crate::text::escape`], JSON is made terminal-safe, and a closed pipe
//! (`tokenledger audit | head -1`) ends the process quietly instead of panicking.

use std::fmt::Arguments;
use std::io::Write as _;

pub use crate::text::escape;

/// Write one line to standard output. A reader that went away ends the process with
/// success: what it wanted, it read.
pub fn line(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`line`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Pretty JSON, terminal-safe.
pub fn json(value: &impl serde::Serialize) -> String {
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    crate::text::escape_json(&text).into_owned()
}
