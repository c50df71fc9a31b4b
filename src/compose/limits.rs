//! How big and how deep a compose file or `.env` may be, checked in one
//! linear pass before serde_yaml sees the text.
//!
//! libyaml's scanner does work proportional to the flow depth (`[`, `{`) for
//! every token, so a file of nested brackets costs time quadratic in its size
//! (100,000 levels took 53 s). The pass below refuses such a file in
//! milliseconds: a size cap, a cap on the nesting it sees (flow brackets
//! outside quoted strings and comments, plus compact `- - -` entries), and a
//! cap on the brackets in the whole file, which bounds libyaml's work
//! whatever the scanner here makes of quotes.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// The largest compose file cryptus reads.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The largest `.env` file cryptus reads.
pub const MAX_ENV_FILE_BYTES: u64 = 1 << 20;
/// The deepest nesting of collections a compose file may have.
pub const MAX_NESTING: usize = 64;
/// The most `[` and `{` a compose file may hold in all.
pub const MAX_BRACKETS: usize = 10_000;

/// Reads a text file of at most `max` bytes: a larger file (or an endless
/// one such as /dev/zero) is refused after reading `max + 1` bytes.
pub fn read_bounded(path: &Path, max: u64, what: &str) -> std::io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what} is larger than {} KiB", max / 1024),
        ));
    }
    Ok(text)
}

/// Reads a compose file, refusing one too large to be a compose file.
pub fn read_compose_file(path: &Path) -> Result<String> {
    read_bounded(path, MAX_FILE_BYTES, "the file")
        .with_context(|| format!("reading the compose file {}", path.display()))
}

/// Refuses YAML text nested deeper than [`MAX_NESTING`] or holding more than
/// [`MAX_BRACKETS`] brackets; linear in the text.
pub fn check_yaml(text: &str) -> Result<(), String> {
    let brackets = text.bytes().filter(|b| matches!(b, b'[' | b'{')).count();
    if brackets > MAX_BRACKETS {
        return Err(format!(
            "the file holds {brackets} '[' and '{{', more than the {MAX_BRACKETS} allowed; cryptus refuses it"
        ));
    }
    let mut scan = Scan::default();
    for (index, line) in text.split('\n').enumerate() {
        let depth = scan.line(line.strip_suffix('\r').unwrap_or(line));
        if depth > MAX_NESTING {
            return Err(format!(
                "collections nested deeper than {MAX_NESTING} levels at line {}; cryptus refuses the file",
                index + 1
            ));
        }
    }
    Ok(())
}

#[derive(Default)]
struct Scan {
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar: its quote.
    quote: Option<u8>,
    /// The previous character was a backslash in a double-quoted scalar.
    escaped: bool,
    /// Inside a plain scalar, which flow context continues across lines.
    plain: bool,
    /// Inside a block scalar (`|`, `>`): the indentation of its parent line.
    block_scalar: Option<usize>,
}

impl Scan {
    /// Scans one line; returns the deepest nesting seen on it.
    fn line(&mut self, line: &str) -> usize {
        let indent = line.bytes().take_while(|b| *b == b' ').count();
        if let Some(parent) = self.block_scalar {
            if line.trim().is_empty() || indent > parent {
                return 0;
            }
            self.block_scalar = None;
        }
        if self.flow == 0 {
            self.plain = false;
        }
        let bytes = line.as_bytes();
        let compact = if self.quote.is_none() && self.flow == 0 {
            compact_entries(&bytes[indent..])
        } else {
            0
        };
        let mut deepest = compact + self.flow;
        let mut previous: Option<u8> = None;
        let mut skip = false;
        for (at, &byte) in bytes.iter().enumerate() {
            if skip {
                skip = false;
                previous = Some(byte);
                continue;
            }
            if self.quote.is_some() {
                skip = self.in_quote(byte, bytes.get(at + 1).copied());
                previous = Some(byte);
                continue;
            }
            let after_blank = previous.is_none_or(|p| p == b' ' || p == b'\t');
            match byte {
                b'#' if after_blank => break,
                b'\'' | b'"' if !self.plain && token_start(previous) => self.quote = Some(byte),
                b'[' | b'{' => {
                    self.flow += 1;
                    self.plain = false;
                    deepest = deepest.max(compact + self.flow);
                }
                b']' | b'}' => {
                    self.flow = self.flow.saturating_sub(1);
                    self.plain = false;
                }
                b',' if self.flow > 0 => self.plain = false,
                b':' if bytes.get(at + 1).is_none_or(|n| matches!(n, b' ' | b'\t')) => {
                    self.plain = false;
                }
                b' ' | b'\t' | b'-' | b'?' | b':' | b',' if !self.plain => {}
                b'|' | b'>' if !self.plain && self.flow == 0 && block_indicator(bytes, at) => {
                    self.block_scalar = Some(indent);
                    break;
                }
                _ => self.plain = true,
            }
            previous = Some(byte);
        }
        deepest
    }

    /// One byte inside a quoted scalar; true when the next byte is part of
    /// an escape (`''`) and must be skipped.
    fn in_quote(&mut self, byte: u8, next: Option<u8>) -> bool {
        match (self.quote, byte) {
            (Some(b'"'), _) if self.escaped => self.escaped = false,
            (Some(b'"'), b'\\') => self.escaped = true,
            (Some(b'"'), b'"') => self.quote = None,
            (Some(b'\''), b'\'') if next == Some(b'\'') => return true,
            (Some(b'\''), b'\'') => self.quote = None,
            _ => {}
        }
        false
    }
}

/// Whether a quote after `previous` starts a quoted scalar.
fn token_start(previous: Option<u8>) -> bool {
    previous.is_none_or(|p| matches!(p, b' ' | b'\t' | b'[' | b'{' | b',' | b':'))
}

/// Whether the `|` or `>` at `at` starts a block scalar: only indentation
/// and chomping indicators, then blanks, then the end or a comment. Linear:
/// each blank run is read by at most the one indicator before it.
fn block_indicator(bytes: &[u8], at: usize) -> bool {
    let mut i = at + 1;
    while i < bytes.len() && i <= at + 3 && matches!(bytes[i], b'+' | b'-' | b'0'..=b'9') {
        i += 1;
    }
    while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
        i += 1;
    }
    i == bytes.len() || (bytes[i] == b'#' && matches!(bytes[i - 1], b' ' | b'\t'))
}

/// Compact block entries opening a line: `- - - x` is three levels.
fn compact_entries(mut rest: &[u8]) -> usize {
    let mut count = 0;
    while let [b'-' | b'?', b' ' | b'\t', tail @ ..] = rest {
        count += 1;
        rest = tail;
        while let [b' ' | b'\t', tail @ ..] = rest {
            rest = tail;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_error(text: &str) -> Option<String> {
        check_yaml(text).err()
    }

    #[test]
    fn the_shipped_files_pass() {
        for text in [
            include_str!("../../compose/docker-compose.zero-downtime.yml"),
            include_str!("../../compose/docker-compose.monitoring.yml"),
        ] {
            assert_eq!(check_yaml(text), Ok(()));
        }
    }

    #[test]
    fn deep_flow_nesting_is_refused() {
        let deep = format!("services: {}{}\n", "[".repeat(65), "]".repeat(65));
        assert!(depth_error(&deep).unwrap().contains("line 1"));
        let maps = format!("services: {}1{}\n", "{a: ".repeat(65), "}".repeat(65));
        assert!(depth_error(&maps).is_some());
        let fine = format!("services: {}{}\n", "[".repeat(64), "]".repeat(64));
        assert_eq!(check_yaml(&fine), Ok(()));
        let spread = format!("a:\n{}", "  [\n".repeat(100));
        assert!(depth_error(&spread).unwrap().contains("line 66"));
    }

    #[test]
    fn compact_entries_count_as_levels() {
        let deep = format!("services:\n{}x\n", "- ".repeat(65));
        assert!(depth_error(&deep).is_some());
        assert_eq!(check_yaml("a:\n  - - x\n  - ? y\n"), Ok(()));
    }

    #[test]
    fn brackets_in_quotes_comments_and_block_scalars_do_not_count() {
        let many = "[".repeat(100);
        for text in [
            format!("a: \"{many}\"\n"),
            format!("a: '{many}'\n"),
            format!("a: 'it''s {many}'\n"),
            format!("a: \"say \\\"{many}\"\n"),
            format!("a: 1 # {many}\n"),
            format!("a: |\n  {many}\n  more {many}\nb: 1\n"),
            format!("a: >-\n    {many}\n"),
            format!("a: \"multi\n  line {many}\n  end\"\n"),
        ] {
            assert_eq!(check_yaml(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn quotes_inside_plain_scalars_hide_nothing() {
        // `don't` opens no quote, so the brackets after it still count.
        let text = format!("a: [don't, {}\n", "[".repeat(70));
        assert!(depth_error(&text).is_some());
        let text = format!("a: [x\n  'y, {}\n", "[".repeat(70));
        assert!(depth_error(&text).is_some());
    }

    #[test]
    fn the_bracket_count_bounds_any_trick() {
        let text = format!("a: \"x\"\nb: '{}'\n", "[".repeat(MAX_BRACKETS + 1));
        assert!(depth_error(&text).unwrap().contains("more than the"));
    }

    #[test]
    fn files_are_read_up_to_their_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yml");
        std::fs::write(&path, vec![b'#'; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        let err = format!("{:#}", read_compose_file(&path).unwrap_err());
        assert!(err.contains("larger than 1024 KiB"), "{err}");
        let endless = read_bounded(Path::new("/dev/zero"), 1024, "the file").unwrap_err();
        assert!(endless.to_string().contains("larger than"), "{endless}");
    }
}
