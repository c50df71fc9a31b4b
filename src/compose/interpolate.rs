//! `${VAR}` interpolation as the Compose specification defines it.
//!
//! Supported forms: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+replacement}`, `${VAR+replacement}`
//! and `$$` for a literal dollar. Defaults and replacements may themselves
//! contain interpolations, as in `${A:-${B:-x}}`. The variables of the parse
//! under way are kept per thread ([`with_vars`]), for the model's scalars.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::de;

/// The variables a compose file is interpolated with: the process environment
/// over the `.env` file beside the compose file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

impl Vars {
    #[cfg(test)]
    pub fn new(values: BTreeMap<String, String>) -> Vars {
        Vars { values }
    }

    /// `.env` values, overridden by the process environment (Compose's order).
    pub fn from_env_file_and_process(env_file: BTreeMap<String, String>) -> Vars {
        let mut values = env_file;
        values.extend(std::env::vars());
        Vars { values }
    }

    /// These variables, with `defaults` for the names they lack: an included
    /// application's `.env` under the including project's environment.
    pub fn with_defaults(&self, defaults: BTreeMap<String, String>) -> Vars {
        let mut values = defaults;
        values.extend(self.values.clone());
        Vars { values }
    }

    /// Variables from a map: for values interpolated outside a compose
    /// file, such as an `env_file`'s.
    pub fn from_values(values: BTreeMap<String, String>) -> Vars {
        Vars { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// The variables of one parse, and whether its scalars are still to be
/// interpolated (a file's own text) or were already (the merged model).
struct Context {
    vars: Vars,
    interpolate: bool,
}

/// Runs `parse` with `vars` as the interpolation context of this thread:
/// the model's scalars interpolate as they are read, so that an error
/// carries the line serde_yaml knows at that point.
pub fn with_vars<T>(vars: &Vars, parse: impl FnOnce() -> T) -> T {
    with_context(vars, true, parse)
}

/// Runs `parse` over values interpolated already: `$` is kept as it is, and
/// `vars` only fill in `environment` entries written without a value.
pub fn with_resolved<T>(vars: &Vars, parse: impl FnOnce() -> T) -> T {
    with_context(vars, false, parse)
}

fn with_context<T>(vars: &Vars, interpolate: bool, parse: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CONTEXT.with(|slot| slot.borrow_mut().take());
        }
    }
    let context = Context {
        vars: vars.clone(),
        interpolate,
    };
    CONTEXT.with(|slot| *slot.borrow_mut() = Some(context));
    let _reset = Reset;
    parse()
}

/// A scalar as the model reads it: interpolated in a file's own parse,
/// as it is in the merged model's.
pub fn interpolated<E: de::Error>(raw: &str) -> Result<String, E> {
    CONTEXT.with(|slot| match slot.borrow().as_ref() {
        Some(context) if context.interpolate => interpolate(raw, &context.vars).map_err(E::custom),
        _ => Ok(raw.to_owned()),
    })
}

pub fn variable(name: &str) -> Option<String> {
    CONTEXT.with(|slot| {
        slot.borrow()
            .as_ref()
            .and_then(|context| context.vars.get(name).map(str::to_owned))
    })
}

/// How deep `${A:-${B:-...}}` may nest.
pub const MAX_NESTING: usize = 16;

/// Interpolates `text`; the error says what is wrong in one line.
pub fn interpolate(text: &str, vars: &Vars) -> Result<String, String> {
    interpolate_at(text, vars, 0)
}

fn interpolate_at(text: &str, vars: &Vars, depth: usize) -> Result<String, String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "interpolations nest deeper than {MAX_NESTING} levels; cryptus refuses them"
        ));
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner).ok_or_else(|| {
                format!("invalid interpolation format in {text:?}: unclosed \"${{\"")
            })?;
            out.push_str(&expand(&inner[..end], vars, text, depth)?);
            rest = &inner[end + 1..];
        } else {
            let length = name_length(after);
            if length == 0 {
                // A lone `$` (e.g. "$ 5" or a trailing "$") stays as written.
                out.push('$');
                rest = after;
            } else {
                out.push_str(vars.get(&after[..length]).unwrap_or_default());
                rest = &after[length..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Length of the variable name at the start of `text`.
fn name_length(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(text.len(), |(i, _)| i)
}

/// Index of the `}` that closes an expression, allowing nested `${...}`.
fn closing_brace(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn expand(expression: &str, vars: &Vars, whole: &str, depth: usize) -> Result<String, String> {
    let length = name_length(expression);
    let name = &expression[..length];
    if name.is_empty() {
        return Err(format!(
            "invalid interpolation format in {whole:?}: \"${{{expression}}}\" names no variable"
        ));
    }
    let value = vars.get(name);
    let operator = &expression[length..];
    let (colon, operator) = match operator.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, operator),
    };
    // With a colon, an empty variable counts as unset.
    let set = match value {
        Some(v) => !(colon && v.is_empty()),
        None => false,
    };
    let Some(kind) = operator.chars().next() else {
        if colon {
            return Err(format!(
                "invalid interpolation format in {whole:?}: \"${{{expression}}}\""
            ));
        }
        return Ok(value.unwrap_or_default().to_owned());
    };
    let argument = &operator[kind.len_utf8()..];
    match kind {
        '-' if set => Ok(value.unwrap_or_default().to_owned()),
        '-' => interpolate_at(argument, vars, depth + 1),
        '+' if set => interpolate_at(argument, vars, depth + 1),
        '+' => Ok(String::new()),
        '?' if set => Ok(value.unwrap_or_default().to_owned()),
        '?' => {
            let message = interpolate_at(argument, vars, depth + 1)?;
            let message = if message.is_empty() {
                "is required".to_owned()
            } else {
                message
            };
            Err(format!("variable {name} is not set: {message}"))
        }
        _ => Err(format!(
            "invalid interpolation format in {whole:?}: unknown operator in \"${{{expression}}}\""
        )),
    }
}

/// Parses a `.env` file: `KEY=VALUE` lines, `#` comments, an optional
/// `export ` prefix, and single- or double-quoted values.
pub fn parse_env_file(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            // The line is not quoted back: it may hold a secret.
            return Err(format!("line {}: expected KEY=VALUE", index + 1));
        };
        let key = key.trim();
        if name_length(key) != key.len() || key.is_empty() {
            return Err(format!(
                "line {}: {key:?} is not a variable name",
                index + 1
            ));
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            inner.replace("\\n", "\n").replace("\\\"", "\"")
        } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            inner.to_owned()
        } else {
            // An unquoted value ends at a " #" comment.
            value
                .split(" #")
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_owned()
        };
        values.insert(key.to_owned(), value);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn plain_text_and_escapes() {
        let v = vars(&[]);
        assert_eq!(interpolate("no vars", &v).unwrap(), "no vars");
        assert_eq!(interpolate("cost $$5", &v).unwrap(), "cost $5");
        assert_eq!(
            interpolate("a $ b and end $", &v).unwrap(),
            "a $ b and end $"
        );
    }

    #[test]
    fn bare_and_braced_names() {
        let v = vars(&[("HOST", "db"), ("PORT", "5432")]);
        assert_eq!(interpolate("$HOST:$PORT", &v).unwrap(), "db:5432");
        assert_eq!(interpolate("${HOST}x", &v).unwrap(), "dbx");
        assert_eq!(interpolate("$MISSING-", &v).unwrap(), "-");
    }

    #[test]
    fn defaults_with_and_without_colon() {
        let v = vars(&[("EMPTY", ""), ("SET", "yes")]);
        assert_eq!(interpolate("${UNSET:-d}", &v).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY:-d}", &v).unwrap(), "d");
        assert_eq!(interpolate("${EMPTY-d}", &v).unwrap(), "");
        assert_eq!(interpolate("${UNSET-d}", &v).unwrap(), "d");
        assert_eq!(interpolate("${SET:-d}", &v).unwrap(), "yes");
        assert_eq!(
            interpolate("${NGINX_IMAGE:-nginx:1.28-alpine}", &v).unwrap(),
            "nginx:1.28-alpine"
        );
        assert_eq!(
            interpolate("${CRYPTUS_BIND:-0.0.0.0}:${CRYPTUS_HTTP_PORT:-80}:80", &v).unwrap(),
            "0.0.0.0:80:80"
        );
    }

    #[test]
    fn replacements() {
        let v = vars(&[("EMPTY", ""), ("SET", "yes")]);
        assert_eq!(interpolate("${SET:+on}", &v).unwrap(), "on");
        assert_eq!(interpolate("${EMPTY:+on}", &v).unwrap(), "");
        assert_eq!(interpolate("${EMPTY+on}", &v).unwrap(), "on");
    }

    #[test]
    fn nested_defaults() {
        let v = vars(&[("B", "inner")]);
        assert_eq!(interpolate("${A:-${B}}", &v).unwrap(), "inner");
        assert_eq!(interpolate("${A:-${C:-deep}}/x", &v).unwrap(), "deep/x");
    }

    #[test]
    fn required_variables() {
        let v = vars(&[]);
        let err = interpolate("${TOKEN:?set the API token}", &v).unwrap_err();
        assert_eq!(err, "variable TOKEN is not set: set the API token");
        let err = interpolate("${TOKEN?}", &v).unwrap_err();
        assert!(err.contains("TOKEN is not set"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let v = vars(&[]);
        let deep = format!("{}x{}", "${A:-".repeat(100_000), "}".repeat(100_000));
        let started = std::time::Instant::now();
        let err = interpolate(&deep, &v).unwrap_err();
        assert!(err.contains("deeper than 16"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let fine = format!("{}x{}", "${A:-".repeat(16), "}".repeat(16));
        assert_eq!(interpolate(&fine, &v).unwrap(), "x");
    }

    #[test]
    fn malformed_expressions_are_errors() {
        let v = vars(&[]);
        assert!(
            interpolate("${UNCLOSED", &v)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            interpolate("${}", &v)
                .unwrap_err()
                .contains("names no variable")
        );
        assert!(
            interpolate("${A*b}", &v)
                .unwrap_err()
                .contains("unknown operator")
        );
        assert!(interpolate("${A:}", &v).is_err());
    }

    #[test]
    fn env_files() {
        let parsed = parse_env_file(
            "# comment\nA=1\nexport B = two words \nC=\"quoted # not comment\"\nD='single'\nE=x #c\n\n",
        )
        .unwrap();
        assert_eq!(parsed["A"], "1");
        assert_eq!(parsed["B"], "two words");
        assert_eq!(parsed["C"], "quoted # not comment");
        assert_eq!(parsed["D"], "single");
        assert_eq!(parsed["E"], "x");
        assert!(parse_env_file("JUSTTEXT").unwrap_err().contains("line 1"));
        assert!(parse_env_file("1A=x").is_err());
    }
}
