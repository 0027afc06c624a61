//! `audit.csv`: the audit rows as RFC 4180 CSV, safe to open in a spreadsheet.
//!
//! A header row, then one row per audit row, CRLF line ends. A cell holding a comma, a quote
//! or a space at either end is quoted, quotes doubled. A cell that begins with `=`, `+`, `-`,
//! `@`, a tab or a carriage return gets a leading `'`, so a spreadsheet never runs caller text
//! as a formula. Control and invisible characters are then written as `\u{..}`, the rule of the
//! service's `text::escape`, so no cell can forge a line or hide text.

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::audit::AuditRow;

/// The header row's cells, in column order.
pub const CSV_COLUMNS: [&str; 10] = [
    "position",
    "event_id",
    "action",
    "token_id",
    "actor",
    "ip",
    "path",
    "scopes",
    "occurred_at",
    "details",
];

/// C0 and C1 controls, DEL, and the bidi and invisible format characters: the service's
/// `text::is_unsafe`, repeated here because this crate cannot depend on the service.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// One cell, guarded, escaped and quoted as needed.
pub fn csv_cell(raw: &str) -> String {
    let mut text = String::with_capacity(raw.len() + 2);
    if raw.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        text.push('\'');
    }
    for c in raw.chars() {
        if is_unsafe(c) {
            // Writing to a String cannot fail.
            let _ = write!(text, "\\u{{{:x}}}", c as u32);
        } else {
            text.push(c);
        }
    }
    let quote = text.contains([',', '"']) || text.starts_with(' ') || text.ends_with(' ');
    if quote {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// The header row, CRLF included.
pub fn csv_header() -> String {
    let mut line = CSV_COLUMNS.join(",");
    line.push_str("\r\n");
    line
}

/// The row for `row`, CRLF included.
pub fn csv_row(row: &AuditRow) -> String {
    let cells = [
        row.position.to_string(),
        row.event_id.hyphenated().to_string(),
        row.action.as_str().to_owned(),
        row.token_id.hyphenated().to_string(),
        row.actor.clone(),
        row.ip.clone().unwrap_or_default(),
        row.path.clone().unwrap_or_default(),
        row.scopes.join(" "),
        row.occurred_at.to_rfc3339(),
        row.details.to_string(),
    ];
    let mut line = cells
        .iter()
        .map(|c| csv_cell(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// Write the header row.
pub fn write_csv_header(out: &mut impl Write) -> io::Result<()> {
    out.write_all(csv_header().as_bytes())
}

/// Write one audit row.
pub fn write_csv_row(out: &mut impl Write, row: &AuditRow) -> io::Result<()> {
    out.write_all(csv_row(row).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_guarded_quotes_doubled_and_controls_escaped() {
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(csv_cell("=1+1"), "'=1+1");
        assert_eq!(csv_cell("+cmd"), "'+cmd");
        assert_eq!(csv_cell("-2"), "'-2");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("\tx"), "'\\u{9}x");
        assert_eq!(csv_cell("\r=x"), "'\\u{d}=x");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(
            csv_cell("line\nAPI_TOKEN_REVOKED"),
            "line\\u{a}API_TOKEN_REVOKED"
        );
        assert_eq!(csv_cell("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(csv_cell(" padded"), "\" padded\"");
        assert_eq!(csv_cell(""), "");
        assert!(!csv_cell("a\r\nb\u{1b}[2J").contains(['\r', '\n', '\u{1b}']));
    }

    #[test]
    fn the_header_names_every_column_once() {
        assert_eq!(
            csv_header(),
            "position,event_id,action,token_id,actor,ip,path,scopes,occurred_at,details\r\n"
        );
    }
}
