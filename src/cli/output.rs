//! Plain-text output: aligned tables and `key  value` blocks. Small on purpose; `--json` is the
//! format for scripts, this one is for people.

use crate::domain::Timestamp;
use std::fmt::Write as _;

/// Column gap, in spaces.
const GAP: usize = 2;
/// Cells longer than this are cut with `…`, so one long value cannot push the columns after it off
/// screen. The last column has nothing after it and is never cut.
const MAX_CELL: usize = 60;

/// A table with a header row; columns are as wide as their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.header.len(), "row width");
        let last = cells.len().saturating_sub(1);
        self.rows.push(
            cells
                .into_iter()
                .enumerate()
                .map(|(i, c)| clip(&c, i < last))
                .collect(),
        );
    }

    /// The table as text; `empty` is printed instead when there are no rows.
    pub fn render(&self, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell}{}", " ".repeat(w - width(cell) + GAP));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `label  value` lines with the values aligned.
#[derive(Default)]
pub struct Details {
    lines: Vec<(String, String)>,
}

impl Details {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn field(mut self, label: &str, value: impl Into<String>) -> Self {
        self.lines.push((label.to_owned(), value.into()));
        self
    }

    /// Adds the line only when there is a value.
    pub fn maybe(self, label: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(v) => self.field(label, v),
            None => self,
        }
    }

    pub fn render(&self) -> String {
        let w = self.lines.iter().map(|(l, _)| width(l)).max().unwrap_or(0);
        let mut out = String::new();
        for (label, value) in &self.lines {
            let _ = writeln!(out, "{label}{}{value}", " ".repeat(w - width(label) + GAP));
        }
        out
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn clip(s: &str, cut_long: bool) -> String {
    // A newline would break the row; show it as a space.
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if !cut_long || width(&one_line) <= MAX_CELL {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(MAX_CELL - 1).collect();
    cut.push('…');
    cut
}

/// A time as `2026-01-31 14:05:09` (UTC), short enough for a table.
pub fn time(t: &Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt_time(t: &Option<Timestamp>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "-".into())
}

/// An optional text, `-` when absent or empty.
pub fn or_dash(s: Option<&str>) -> String {
    match s {
        Some(v) if !v.is_empty() => v.to_owned(),
        _ => "-".into(),
    }
}

/// A list joined with commas, `-` when empty.
pub fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut t = Table::new(&["ID", "NAME", "NOTE"]);
        t.row(vec!["1".into(), "a long name".into(), "".into()]);
        t.row(vec!["22".into(), "b".into(), "line\nbreak".into()]);
        assert_eq!(
            t.render("(none)"),
            "ID  NAME         NOTE\n1   a long name\n22  b            line break\n"
        );
        assert_eq!(Table::new(&["X"]).render("no rows"), "no rows\n");
    }

    #[test]
    fn long_cells_are_clipped_except_the_last() {
        let mut t = Table::new(&["X", "Y"]);
        t.row(vec!["é".repeat(100), "y".repeat(100)]);
        let line = t.render("").lines().nth(1).unwrap().to_owned();
        let (x, y) = line.split_once("  ").unwrap();
        assert_eq!(x.chars().count(), MAX_CELL);
        assert!(x.ends_with('…'));
        assert_eq!(y, "y".repeat(100));
    }

    #[test]
    fn details_align_values() {
        let d = Details::new()
            .field("id", "1")
            .field("status", "approved")
            .maybe("reason", None::<String>);
        assert_eq!(d.render(), "id      1\nstatus  approved\n");
    }
}
