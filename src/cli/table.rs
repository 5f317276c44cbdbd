//! Plain-text output for a terminal: aligned columns cut to a width, and
//! labelled fields. Cells come from the daemon, which quotes what webhook
//! receivers and relays said: control characters are replaced so that no
//! answer can move the cursor or recolour the operator's terminal.

use serde_json::Value;

/// Between two columns.
const GAP: &str = "  ";
const ELLIPSIS: char = '…';

pub struct Table {
    columns: Vec<(&'static str, usize)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns as (heading, widest cell shown); longer cells are cut.
    pub fn new(columns: &[(&'static str, usize)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .zip(&self.columns)
                    .map(|(cell, (_, max))| cut(&clean(cell), *max))
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (heading, _))| {
                cells
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain([heading.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let headings: Vec<String> = self.columns.iter().map(|(h, _)| (*h).to_owned()).collect();
        for row in std::iter::once(&headings).chain(&cells) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str(GAP);
                }
                line.push_str(cell);
                let pad = widths[i] - cell.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label: value` lines with the values aligned; values are cut to `max`.
pub fn fields(pairs: &[(&str, String)], max: usize) -> String {
    let width = pairs
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (label, value) in pairs {
        let value = cut(&clean(value), max);
        out.push_str(&format!(
            "{label}:{:pad$} {value}\n",
            "",
            pad = width - label.chars().count()
        ));
    }
    out
}

/// A JSON value as a cell: strings bare, `null` and nothing as `-`, lists
/// joined.
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) if s.is_empty() => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Control characters replaced: whitespace by a space, the rest by U+FFFD.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// At most `max` characters, the last one `…` when something was cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push(ELLIPSIS);
    out
}

/// A byte count for people: `7.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_long_cells_are_cut() {
        let mut t = Table::new(&[("ID", 10), ("URL", 8)]);
        t.row(vec!["ep_1".into(), "https://example.com/hook".into()]);
        t.row(vec!["ep_22".into(), "x".into()]);
        assert_eq!(t.render(), "ID     URL\nep_1   https:/…\nep_22  x\n");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let mut t = Table::new(&[("A", 40)]);
        t.row(vec!["ok\x1b[31mred\nnext\u{7}".into()]);
        let out = t.render();
        assert!(!out.contains('\x1b') && !out.contains('\u{7}'), "{out:?}");
        assert!(out.contains("ok\u{FFFD}[31mred next\u{FFFD}"), "{out:?}");
        assert_eq!(fields(&[("x", "a\rb".into())], 10), "x: a b\n");
    }

    #[test]
    fn fields_align_their_values() {
        assert_eq!(
            fields(&[("id", "ep_1".into()), ("timeout", "5".into())], 80),
            "id:      ep_1\ntimeout: 5\n"
        );
    }

    #[test]
    fn json_values_read_as_text() {
        assert_eq!(text(&json!(null)), "-");
        assert_eq!(text(&json!([])), "-");
        assert_eq!(text(&json!(["a", "b"])), "a, b");
        assert_eq!(text(&json!(true)), "true");
        assert_eq!(text(&json!("s")), "s");
        assert_eq!(text(&json!("")), "-");
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(7 * 1024 * 1024 + 100), "7.0 MiB");
    }
}
