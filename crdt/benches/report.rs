//! Benchmark figures: printed last as `bench <name> <value> <unit>` lines and written as JSON
//! to `<target dir>/bench/<bench name>.json` (DESIGN.md §8). Standard library only, so any
//! bench can include it:
//!
//! ```ignore
//! #[path = "../../crdt/benches/report.rs"]
//! mod report;
//!
//! let mut report = report::Report::new();
//! report.add("w1_vs_loro_ratio", 0.8, "x");
//! report.finish("merge");
//! ```
//!
//! The target dir is `$CARGO_TARGET_DIR` (a relative one is taken from the workspace root),
//! else `target` at the workspace root: the parent of the including crate's manifest dir.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::PathBuf;

/// Figures collected by one benchmark, in the order they were added.
#[derive(Debug, Default)]
pub(crate) struct Report {
    figures: Vec<(String, f64, String)>,
    notes: Vec<String>,
}

impl Report {
    /// An empty report.
    pub(crate) fn new() -> Report {
        Report::default()
    }

    /// Records one figure; a later figure of the same name replaces the earlier one.
    pub(crate) fn add(&mut self, name: &str, value: f64, unit: &str) {
        self.figures.retain(|(n, _, _)| n != name);
        self.figures.push((name.to_owned(), value, unit.to_owned()));
    }

    /// Records a note, printed before the figures (for instance a figure that was skipped).
    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The value of a figure added before.
    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| *v)
    }

    /// The figures as a JSON object `{ "name": {"value": v, "unit": "u"}, … }`.
    pub(crate) fn to_json(&self) -> String {
        let mut out = String::from("{\n");
        for (i, (name, value, unit)) in self.figures.iter().enumerate() {
            let sep = if i + 1 == self.figures.len() { "" } else { "," };
            let value = if value.is_finite() {
                format!("{value}")
            } else {
                "null".to_owned()
            };
            let _ = writeln!(
                out,
                "  {}: {{\"value\": {value}, \"unit\": {}}}{sep}",
                json_string(name),
                json_string(unit)
            );
        }
        out.push('}');
        out.push('\n');
        out
    }

    /// Prints the notes, then the figures one per line, and writes them as JSON to
    /// `<target dir>/bench/<bench>.json`. Returns the path written.
    pub(crate) fn finish(&self, bench: &str) -> Option<PathBuf> {
        println!();
        for note in &self.notes {
            println!("note: {note}");
        }
        for (name, value, unit) in &self.figures {
            println!("bench {name} {} {unit}", format_value(*value));
        }
        let dir = target_dir().join("bench");
        let path = dir.join(format!("{bench}.json"));
        let written =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, self.to_json()));
        match written {
            Ok(()) => {
                eprintln!("figures written to {}", path.display());
                Some(path)
            }
            Err(e) => {
                eprintln!("cannot write {}: {e}", path.display());
                None
            }
        }
    }
}

/// Three significant digits at least, no exponent.
fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs();
    let decimals = if magnitude >= 1000.0 {
        0
    } else if magnitude >= 100.0 {
        1
    } else if magnitude >= 1.0 {
        2
    } else if magnitude >= 0.01 {
        4
    } else {
        6
    };
    format!("{v:.decimals$}")
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
