//! The values a backup withholds: those of the variables that feed a
//! secret or a config through `environment:`. A backup's `.env` keeps every
//! other line byte for byte and marks each withheld variable with
//! [`MARK`] followed by `KEY=`; a restore puts back the value the
//! project's current `.env` holds.
//!
//! The mark lives in the file rather than in the manifest: the backup's
//! `.env` then says by itself why a value is empty, the manifest's format
//! is unchanged (so `backup --verify` reads old and new backups alike), and
//! the restore's merge is a matter of the lines where the marks stand.

use std::collections::BTreeSet;

/// The comment line that stands before a withheld variable's `KEY=`.
pub const MARK: &[u8] = b"# cryptus: value withheld from the backup";

/// The names of the variables whose values feed a secret or a config, as
/// the compose files' texts give them: every `environment:` whose value is
/// a name, wherever it stands (a top-level secret or config, an extension
/// field an anchor points at). Reading more names than the model would
/// only withholds more; reading fewer would leak.
pub fn named_in_compose(texts: &[&[u8]]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for text in texts {
        if let Ok(value) = serde_yaml::from_slice::<serde_yaml::Value>(text) {
            walk(&value, &mut names);
        }
        // A file that is not YAML, or a form the walk misses, is still read
        // line by line.
        scan_lines(text, &mut names);
    }
    names
}

fn walk(value: &serde_yaml::Value, names: &mut BTreeSet<String>) {
    use serde_yaml::Value;
    match value {
        Value::Mapping(map) => {
            for (key, value) in map {
                if let (Some("environment"), Some(name)) = (key.as_str(), value.as_str()) {
                    names.insert(name.trim().to_owned());
                }
                walk(value, names);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|item| walk(item, names)),
        Value::Tagged(tagged) => walk(&tagged.value, names),
        _ => {}
    }
}

/// `environment: NAME` (or `"NAME"`, or in a flow map) on one line.
fn scan_lines(text: &[u8], names: &mut BTreeSet<String>) {
    let text = String::from_utf8_lossy(text);
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("environment:") {
            rest = &rest[at + "environment:".len()..];
            let value = rest.trim_start().trim_start_matches(['"', '\'']);
            let length = name_length(value.as_bytes());
            if length > 0 {
                names.insert(value[..length].to_owned());
            }
        }
    }
}

/// The length of the variable name at the start of `text`.
fn name_length(text: &[u8]) -> usize {
    match text.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {}
        _ => return 0,
    }
    text.iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(text.len())
}

/// A `.env` with the values of `names` withheld, and the names withheld.
#[derive(Debug, PartialEq)]
pub struct Redacted {
    pub text: Vec<u8>,
    pub withheld: BTreeSet<String>,
}

/// Withholds the value of every variable of `names` in a `.env`: each of
/// its statements (plain, quoted, `export KEY=...`, a quoted value over
/// several lines) becomes [`MARK`] and `KEY=`. Every other line is kept
/// byte for byte. Each line is read as the `.env` parser reads it, one at a
/// time, so a line inside another variable's quoted value that sets a
/// withheld variable is withheld too.
pub fn redact(text: &[u8], names: &BTreeSet<String>) -> Redacted {
    let lines = split_lines(text);
    let mut out = Vec::with_capacity(text.len());
    let mut withheld = BTreeSet::new();
    let mut index = 0;
    while index < lines.len() {
        match statement_at(&lines, index).filter(|(key, _)| names.contains(key)) {
            Some((key, end)) => {
                out.extend_from_slice(MARK);
                out.push(b'\n');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"=\n");
                withheld.insert(key);
                index = end;
            }
            None => {
                out.extend_from_slice(lines[index]);
                index += 1;
            }
        }
    }
    Redacted {
        text: out,
        withheld,
    }
}

/// A `.env` from a backup merged with the project's current one: each
/// withheld variable takes its statement from `current`, as it is written
/// there. Returns the text and the withheld names `current` lacks; those
/// are left unset, with a comment saying to set them.
pub fn merge(backup: &[u8], current: Option<&[u8]>) -> (Vec<u8>, Vec<String>) {
    let lines = split_lines(backup);
    let current_lines = current.map(split_lines).unwrap_or_default();
    let mut out = Vec::with_capacity(backup.len());
    let mut missing = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let Some(key) = marked_at(&lines, index) else {
            out.extend_from_slice(lines[index]);
            index += 1;
            continue;
        };
        match last_statement(&current_lines, &key) {
            Some(statement) => {
                out.extend_from_slice(&statement);
                if !statement.ends_with(b"\n") && index + 2 < lines.len() {
                    out.push(b'\n');
                }
            }
            None => {
                out.extend_from_slice(
                    format!("# cryptus: set {key} here: its value was withheld from the backup\n")
                        .as_bytes(),
                );
                if !missing.contains(&key) {
                    missing.push(key);
                }
            }
        }
        index += 2;
    }
    (out, missing)
}

/// Whether a `.env` holds any withheld mark: a backup's, to be merged.
pub fn has_marks(text: &[u8]) -> bool {
    let lines = split_lines(text);
    (0..lines.len()).any(|index| marked_at(&lines, index).is_some())
}

/// The key of the mark at `index`: [`MARK`] on its own line, then `KEY=`.
fn marked_at(lines: &[&[u8]], index: usize) -> Option<String> {
    if trim_newline(lines[index]) != MARK {
        return None;
    }
    let next = trim_newline(lines.get(index + 1)?);
    let key = next.strip_suffix(b"=")?;
    (!key.is_empty() && name_length(key) == key.len())
        .then(|| String::from_utf8_lossy(key).into_owned())
}

/// The text of the last statement setting `key`, lines and all.
fn last_statement(lines: &[&[u8]], key: &str) -> Option<Vec<u8>> {
    let mut found = None;
    let mut index = 0;
    while index < lines.len() {
        match statement_at(lines, index) {
            Some((name, end)) if name == key => {
                found = Some(lines[index..end].concat());
                index = end;
            }
            _ => index += 1,
        }
    }
    found
}

/// The lines of `text`, each with its `\n` (the last may lack one).
fn split_lines(text: &[u8]) -> Vec<&[u8]> {
    text.split_inclusive(|b| *b == b'\n').collect()
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The variable the line at `index` sets, read as the `.env` parser reads
/// a line, and the index after its statement's last line: a quoted value
/// that does not close on its line runs to the line where it closes.
fn statement_at(lines: &[&[u8]], index: usize) -> Option<(String, usize)> {
    let line = trim_newline(lines[index]).trim_ascii();
    if line.is_empty() || line.starts_with(b"#") {
        return None;
    }
    let line = line
        .strip_prefix(b"export ")
        .unwrap_or(line)
        .trim_ascii_start();
    let equals = line.iter().position(|b| *b == b'=')?;
    let key = line[..equals].trim_ascii();
    if key.is_empty() || name_length(key) != key.len() {
        return None;
    }
    let value = line[equals + 1..].trim_ascii_start();
    let end = match value.first() {
        Some(quote @ (b'"' | b'\'')) => closing_line(lines, index, &value[1..], *quote),
        _ => index + 1,
    };
    Some((String::from_utf8_lossy(key).into_owned(), end))
}

/// The index after the line where a quoted value closes; the next line's
/// when it never closes (the parser then reads the line alone).
fn closing_line(lines: &[&[u8]], index: usize, first: &[u8], quote: u8) -> usize {
    let mut escaped = false;
    let mut closes = |text: &[u8]| {
        for b in text {
            match *b {
                b'\\' if !escaped => escaped = true,
                b if b == quote && !escaped => return true,
                _ => escaped = false,
            }
        }
        false
    };
    if closes(first) {
        return index + 1;
    }
    for (offset, line) in lines[index + 1..].iter().enumerate() {
        if closes(line) {
            return index + offset + 2;
        }
    }
    index + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value";

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    fn redacted(text: &str) -> String {
        let out = redact(text.as_bytes(), &names(&["DB_PASSWORD"]));
        String::from_utf8(out.text).unwrap()
    }

    const WITHHELD: &str = "# cryptus: value withheld from the backup\nDB_PASSWORD=\n";

    #[test]
    fn every_form_of_a_secret_variable_is_withheld() {
        for form in [
            "DB_PASSWORD=s3cr3t-value\n",
            "DB_PASSWORD = s3cr3t-value # a comment\n",
            "DB_PASSWORD=\"s3cr3t-value\"\n",
            "DB_PASSWORD='s3cr3t-value'\n",
            "export DB_PASSWORD=s3cr3t-value\n",
            "  export   DB_PASSWORD=\"s3cr3t-value\"\n",
            "DB_PASSWORD=\"s3cr3t\n-value\"\n",
            "DB_PASSWORD='first line\ns3cr3t-value\nlast'\n",
            "DB_PASSWORD=\"with \\\" escaped\ns3cr3t-value\"\n",
            "DB_PASSWORD=s3cr3t-value\r\n",
        ] {
            let text = format!("A=1\n{form}B=2\n");
            let out = redacted(&text);
            assert_eq!(out, format!("A=1\n{WITHHELD}B=2\n"), "{form:?}");
            assert!(!out.contains("s3cr3t"), "{form:?}");
        }
        // The last line without its newline, and a value set twice.
        assert_eq!(redacted("DB_PASSWORD=s3cr3t-value"), WITHHELD);
        let twice = redacted("DB_PASSWORD=old\nX=y\nDB_PASSWORD=s3cr3t-value\n");
        assert_eq!(twice, format!("{WITHHELD}X=y\n{WITHHELD}"));
        // A line of another quoted value that the parser reads as the
        // variable's own is withheld as well.
        let inside = redacted("NOTE=\"x\nDB_PASSWORD=s3cr3t-value\"\n");
        assert!(!inside.contains(SECRET), "{inside}");
    }

    #[test]
    fn other_lines_are_kept_byte_for_byte() {
        let text = "# top\n\nDB_PASSWORD_OLD=keep\nexport HOST=db # c\nMULTI=\"a\nb\"\nBARE\nNOT A LINE\n\u{e9}=x\nLAST=1";
        let out = redact(text.as_bytes(), &names(&["DB_PASSWORD"]));
        assert_eq!(out.text, text.as_bytes());
        assert!(out.withheld.is_empty());
        let bytes = b"A=\xff\xfe\nDB_PASSWORD=x\n".to_vec();
        let out = redact(&bytes, &names(&["DB_PASSWORD"]));
        assert!(out.text.starts_with(b"A=\xff\xfe\n"));
        assert_eq!(out.withheld, names(&["DB_PASSWORD"]));
    }

    #[test]
    fn a_variable_feeding_a_secret_is_found_wherever_it_is_also_used() {
        let compose = br#"
x-pw: &pw {environment: SHARED}
services:
  web:
    image: "${SHARED}"
    environment:
      DB_PASSWORD: ${SHARED}
      PLAIN: x
    secrets: [db]
secrets:
  db: *pw
  other:
    environment: "OTHER_PW"
configs:
  cfg:
    environment:
      CONFIG_VALUE
"#;
        let found = named_in_compose(&[compose.as_slice(), b"not: [yaml\n  environment: BROKEN\n"]);
        assert_eq!(
            found,
            names(&["BROKEN", "CONFIG_VALUE", "OTHER_PW", "SHARED"])
        );
        // Used by a service and by a secret: still withheld.
        let out = redact(b"SHARED=s3cr3t-value\nPLAIN=x\n", &found);
        assert!(!String::from_utf8_lossy(&out.text).contains(SECRET));
        assert!(String::from_utf8_lossy(&out.text).contains("PLAIN=x\n"));
    }

    #[test]
    fn a_restore_takes_each_withheld_value_from_the_current_env() {
        let original = "A=1\nexport DB_PASSWORD=\"old\nvalue\"\nTOKEN='t'\nB=2\n";
        let withheld = redact(original.as_bytes(), &names(&["DB_PASSWORD", "TOKEN"]));
        assert!(has_marks(&withheld.text));
        let current = "B=changed\nexport DB_PASSWORD=\"old\nvalue\"\nTOKEN=new\nTOKEN='t'\n";
        let (merged, missing) = merge(&withheld.text, Some(current.as_bytes()));
        assert_eq!(String::from_utf8(merged).unwrap(), original);
        assert!(missing.is_empty());

        // What the current .env lacks stays unset, and is named.
        let (merged, missing) = merge(&withheld.text, Some(b"A=1\n"));
        let merged = String::from_utf8(merged).unwrap();
        assert_eq!(missing, ["DB_PASSWORD", "TOKEN"]);
        assert!(merged.contains("# cryptus: set TOKEN here"), "{merged}");
        assert!(!merged.contains("\nTOKEN="), "{merged}");
        let (_, missing) = merge(&withheld.text, None);
        assert_eq!(missing, ["DB_PASSWORD", "TOKEN"]);

        // A last line without its newline keeps the next one apart.
        let (merged, _) = merge(
            format!("{WITHHELD}Z=1\n").as_bytes(),
            Some(b"DB_PASSWORD=v"),
        );
        assert_eq!(merged, b"DB_PASSWORD=v\nZ=1\n");
    }

    #[test]
    fn an_old_backup_without_marks_is_restored_as_it_is() {
        let old = b"A=1\nDB_PASSWORD=s3cr3t-value\n# cryptus: value withheld from the backup\n";
        assert!(!has_marks(old));
        let (merged, missing) = merge(old, Some(b"DB_PASSWORD=other\n"));
        assert_eq!(merged, old);
        assert!(missing.is_empty());
    }
}
