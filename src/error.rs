//! Exit codes and the errors that choose them.
//!
//! 0: done. 1: the operation failed cleanly (unhealthy, rolled back, lock
//! held, nothing to roll back to). 2: usage, configuration or an unexpected
//! error. Any error without a [`UserError`] in its chain exits 2.

use std::fmt;

pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// An error meant for the user: its exit code and what they can do about it.
#[derive(Debug)]
pub struct UserError {
    pub message: String,
    pub hint: Option<String>,
    pub code: u8,
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// The operation failed cleanly: exit 1.
pub fn failed(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError {
        message: message.into(),
        hint: None,
        code: EXIT_FAILED,
    })
}

/// The operation failed cleanly and the user can act on it: exit 1.
pub fn failed_with_hint(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError {
        message: message.into(),
        hint: Some(hint.into()),
        code: EXIT_FAILED,
    })
}

/// Bad input or configuration: exit 2.
pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError {
        message: message.into(),
        hint: Some(hint.into()),
        code: EXIT_USAGE,
    })
}

/// What `main` needs to report an error: the exit code and the hint.
pub fn classify(err: &anyhow::Error) -> (u8, Option<&str>) {
    match err
        .chain()
        .find_map(|cause| cause.downcast_ref::<UserError>())
    {
        Some(user) => (user.code, user.hint.as_deref()),
        None => (EXIT_USAGE, None),
    }
}

/// Whether a cause of the error already chose its exit code and hint.
pub fn is_user_error(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| cause.downcast_ref::<UserError>().is_some())
}

/// Whether the error is a closed stdout (`cryptus status | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_code_survives_context() {
        let err = Err::<(), _>(failed("lock held"))
            .context("deploying")
            .unwrap_err();
        assert_eq!(classify(&err).0, EXIT_FAILED);
        let err = Err::<(), _>(usage("bad", "fix it"))
            .context("x")
            .unwrap_err();
        assert_eq!(classify(&err), (EXIT_USAGE, Some("fix it")));
        assert_eq!(classify(&anyhow::anyhow!("boom")), (EXIT_USAGE, None));
    }
}
