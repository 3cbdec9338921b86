//! Human-readable output: aligned tables and `Field  value` blocks.
//!
//! Everything shown comes from the API, so every cell is cleaned first:
//! control characters (a newline in a tag, an escape sequence in a name)
//! are shown escaped rather than sent to the terminal.

use std::fmt::Write as _;

/// Shown for an empty or absent value.
pub const NONE: &str = "-";

/// `s` on one line with control characters escaped (`\n`, `\u{1b}`).
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`clean`], cut to `max` columns with `…`.
pub fn clean_max(s: &str, max: usize) -> String {
    let s = clean(s);
    if width(&s) <= max {
        return s;
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw + 1 > max {
            break;
        }
        w += cw;
        out.push(c);
    }
    out.push('…');
    out
}

/// A cell for an optional value: [`NONE`] when absent or empty.
pub fn opt(v: Option<&str>) -> String {
    match v {
        Some(s) if !s.is_empty() => clean(s),
        _ => NONE.to_owned(),
    }
}

/// Terminal columns `s` takes: East Asian wide characters count two.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let c = u32::from(c);
    let wide = matches!(c,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD);
    if wide {
        2
    } else {
        1
    }
}

/// Columns with a header row, each as wide as its widest cell, two spaces
/// apart; the last column is not padded (no trailing blanks).
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row of already-cleaned cells (missing cells show as empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                line.push_str(cell);
                if i + 1 < n {
                    line.extend(std::iter::repeat_n(' ', w - width(cell) + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `Name   value` lines, names padded to the longest.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let pad = w - width(k) + 2;
        let _ = writeln!(out, "{k}{}{v}", " ".repeat(pad));
    }
    out
}

/// `k=v,k=v` for a tag map, [`NONE`] when empty.
pub fn tags<'a>(tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let s = tags
        .into_iter()
        .map(|(k, v)| format!("{}={}", clean(k), clean(v)))
        .collect::<Vec<_>>()
        .join(",");
    if s.is_empty() {
        NONE.to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_blanks() {
        let mut t = Table::new(&["IMSI", "STATUS", "TAGS"]);
        t.row(vec!["001010000000001".into(), "active".into(), NONE.into()]);
        t.row(vec!["1".into(), "suspended".into(), "a=b".into()]);
        assert_eq!(
            t.render(),
            "IMSI             STATUS     TAGS\n\
             001010000000001  active     -\n\
             1                suspended  a=b\n"
        );
        let empty = Table::new(&["NAME", "CREATED"]);
        assert!(empty.is_empty());
        assert_eq!(empty.render(), "NAME  CREATED\n");
    }

    #[test]
    fn wide_characters_take_two_columns() {
        let mut t = Table::new(&["NAME", "X"]);
        t.row(vec!["センサー".into(), "1".into()]);
        t.row(vec!["abc".into(), "2".into()]);
        assert_eq!(t.render(), "NAME      X\nセンサー  1\nabc       2\n");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(clean("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        assert_eq!(opt(Some("")), NONE);
        assert_eq!(opt(None), NONE);
        assert_eq!(clean_max("abcdefgh", 5), "abcd…");
        assert_eq!(clean_max("abc", 5), "abc");
        assert_eq!(clean_max("日本語テキスト", 6), "日本…");
    }

    #[test]
    fn fields_are_padded_to_the_longest_name() {
        assert_eq!(
            fields(&[("IMSI", "1".into()), ("Status", "active".into())]),
            "IMSI    1\nStatus  active\n"
        );
    }
}
