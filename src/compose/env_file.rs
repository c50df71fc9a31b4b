//! A service's `env_file`, parsed as Compose parses one: `KEY=VALUE` lines,
//! `#` comments, an optional `export `, quoted values (a double-quoted or
//! unquoted value is interpolated, a single-quoted one is literal), and a
//! bare `KEY` taking the variable of that name; or, in the `raw` format,
//! `KEY=VALUE` taken as written.
//!
//! The values may be secrets: no error here quotes a value, only the line
//! and the key.

use std::collections::BTreeMap;

use super::interpolate::{Vars, interpolate};

/// Resolves a variable a value names: the project's variables, then the
/// values read so far.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Parses an env file in Compose's format.
pub fn parse(text: &str, lookup: Lookup) -> Result<BTreeMap<String, String>, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    let mut rest = text;
    let mut line = 1;
    while !rest.is_empty() {
        let (statement, after, lines) = next_statement(rest, line)?;
        if let Some((key, value)) = statement {
            let value = match value {
                Value::Inherited => lookup(&key).or_else(|| values.get(&key).cloned()),
                Value::Literal(value) => Some(value),
                Value::Interpolated(value) => Some(expand(&value, &key, line, lookup, &values)?),
            };
            if let Some(value) = value {
                values.insert(key, value);
            }
        }
        rest = after;
        line += lines;
    }
    Ok(values)
}

/// Parses an env file in the `raw` format (`docker run --env-file`'s):
/// the value is everything after the first `=`.
pub fn parse_raw(text: &str, lookup: Lookup) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, value)) => {
                let key = checked_key(key, index + 1)?;
                values.insert(key, value.to_owned());
            }
            None => {
                let key = checked_key(line.trim_end(), index + 1)?;
                if let Some(value) = lookup(&key) {
                    values.insert(key, value);
                }
            }
        }
    }
    Ok(values)
}

enum Value {
    /// `KEY` alone: the variable of that name, if set.
    Inherited,
    Literal(String),
    Interpolated(String),
}

/// The statement at the start of `text` (none for a blank or comment line),
/// the text after it, and how many lines it took.
#[allow(clippy::type_complexity)]
fn next_statement(
    text: &str,
    line: usize,
) -> Result<(Option<(String, Value)>, &str, usize), String> {
    let (first, after_line) = text.split_once('\n').unwrap_or((text, ""));
    let trimmed = first.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok((None, after_line, 1));
    }
    let start = first.len() - first.trim_start().len();
    let statement = &text[start..];
    let statement = statement
        .strip_prefix("export ")
        .map_or(statement, str::trim_start);
    let Some(equals) = statement[..statement.find('\n').unwrap_or(statement.len())].find('=')
    else {
        let key = checked_key(trimmed.trim_start_matches("export ").trim(), line)?;
        return Ok((Some((key, Value::Inherited)), after_line, 1));
    };
    let key = checked_key(statement[..equals].trim(), line)?;
    let after_equals = statement[equals + 1..].trim_start_matches([' ', '\t']);
    let (value, rest) = value(after_equals, &key, line)?;
    let consumed = text.len() - rest.len();
    let lines = text[..consumed].matches('\n').count().max(1);
    Ok((Some((key, value)), rest, lines))
}

/// The value at the start of `text` and the text after its line.
fn value<'t>(text: &'t str, key: &str, line: usize) -> Result<(Value, &'t str), String> {
    let quote = text.chars().next().filter(|c| *c == '"' || *c == '\'');
    let Some(quote) = quote else {
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        // An unquoted value ends at a " #" comment.
        let value = first.split(" #").next().unwrap_or_default().trim_end();
        return Ok((Value::Interpolated(value.to_owned()), rest));
    };
    let body = &text[1..];
    let mut end = None;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            c if c == quote && !escaped => {
                end = Some(i);
                break;
            }
            _ => escaped = false,
        }
    }
    let end =
        end.ok_or_else(|| format!("line {line}: the value of {key} has no closing {quote}"))?;
    let inner = &body[..end];
    let after = &body[end + 1..];
    let (tail, rest) = after.split_once('\n').unwrap_or((after, ""));
    let tail = tail.trim();
    if !(tail.is_empty() || tail.starts_with('#')) {
        return Err(format!(
            "line {line}: unexpected text after the quoted value of {key}"
        ));
    }
    let value = if quote == '\'' {
        Value::Literal(inner.replace("\\'", "'"))
    } else {
        Value::Interpolated(unescape(inner))
    };
    Ok((value, rest))
}

/// The shell escapes a double-quoted value may hold.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(other @ ('\\' | '"' | '\'' | '$')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn checked_key(key: &str, line: usize) -> Result<String, String> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains(['"', '\'']) {
        return Err(format!(
            "line {line}: expected KEY=VALUE or KEY (a key has no spaces or quotes)"
        ));
    }
    Ok(key.to_owned())
}

/// Interpolates a value: the project's variables first, then the values
/// read so far (Compose's order). The error names the key, never the value.
fn expand(
    value: &str,
    key: &str,
    line: usize,
    lookup: Lookup,
    earlier: &BTreeMap<String, String>,
) -> Result<String, String> {
    if !value.contains('$') {
        return Ok(value.to_owned());
    }
    let mut known = earlier.clone();
    let mut names = Vec::new();
    collect_names(value, &mut names);
    for name in names {
        if let Some(found) = lookup(&name) {
            known.insert(name, found);
        }
    }
    interpolate(value, &Vars::from_values(known)).map_err(|_| {
        format!(
            "line {line}: the value of {key} has an invalid ${{...}} or an unset required variable (write $$ for a literal $, or use format: raw)"
        )
    })
}

const OPEN_BRACE: char = '\u{7b}';

/// The variable names a value mentions, so only those are looked up.
fn collect_names(text: &str, names: &mut Vec<String>) {
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        let after = rest[at + 1..].trim_start_matches(OPEN_BRACE);
        let length = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if length > 0 {
            names.push(after[..length].to_owned());
        }
        rest = &rest[at + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn values_as_compose_reads_them() {
        let text = "# comment\nA=1\nexport B = two words \nC=\"quoted # kept\"\nD='single $X'\nE=x #c\n\nF=\"a\\tb\\n\"\nG=${A}-${H:-d}\nI=\"${A}\"\nJ=\n";
        let values = parse(text, &none).unwrap();
        assert_eq!(values["A"], "1");
        assert_eq!(values["B"], "two words");
        assert_eq!(values["C"], "quoted # kept");
        assert_eq!(values["D"], "single $X");
        assert_eq!(values["E"], "x");
        assert_eq!(values["F"], "a\tb\n");
        assert_eq!(values["G"], "1-d");
        assert_eq!(values["I"], "1");
        assert_eq!(values["J"], "");
    }

    #[test]
    fn multi_line_quoted_values_and_line_numbers() {
        let text = "CERT=\"line one\nline two\"\nNEXT=ok\nBAD KEY=x\n";
        let err = parse(text, &none).unwrap_err();
        assert!(err.starts_with("line 4:"), "{err}");
        let values = parse("CERT='a\nb'\nNEXT=ok\n", &none).unwrap();
        assert_eq!(values["CERT"], "a\nb");
        assert_eq!(values["NEXT"], "ok");
    }

    #[test]
    fn project_variables_win_and_bare_keys_inherit() {
        let lookup = |name: &str| (name == "HOST").then(|| "from-project".to_owned());
        let values = parse("HOST=local\nURL=http://${HOST}\nHOST\nUNSET\n", &lookup).unwrap();
        assert_eq!(values["URL"], "http://from-project");
        assert_eq!(values["HOST"], "from-project");
        assert!(!values.contains_key("UNSET"));
    }

    #[test]
    fn errors_never_quote_a_value() {
        for text in [
            "PASSWORD=\"s3cr3t",
            "PASSWORD=s3cr3t${",
            "PASSWORD=${NOPE:?s3cr3t-not-here}",
            "PASSWORD='s3cr3t' trailing",
        ] {
            let err = parse(text, &none).unwrap_err();
            assert!(!err.contains("s3cr3t"), "{err}");
            assert!(err.contains("PASSWORD") && err.contains("line 1"), "{err}");
        }
    }

    #[test]
    fn the_raw_format_takes_values_as_written() {
        let lookup = |name: &str| (name == "X").then(|| "x".to_owned());
        let values = parse_raw("A=\"q\" $B # c\n# c\n  X\nY\n", &lookup).unwrap();
        assert_eq!(values["A"], "\"q\" $B # c");
        assert_eq!(values["X"], "x");
        assert!(!values.contains_key("Y"));
        assert!(parse_raw("A B=1", &lookup).is_err());
    }
}
