//! Files on the operator's disk, written so that a reader sees the old
//! content or the new, never half of it.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes to a temporary file beside the target, syncs it, then renames it
/// into place.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    write_with_mode(path, content, 0o666)
}

/// Writes a secret the same way, the temporary file created with mode 0600,
/// so the secret is never readable by others, not even for a moment.
pub fn write_secret(path: &Path, content: &[u8]) -> Result<()> {
    write_with_mode(path, content, 0o600)
}

/// Writes a file the same way, with exactly `mode` (the umask does not
/// apply): a restore gives a file back the mode it had. The temporary file
/// is private until its mode is set.
pub fn write_with_exact_mode(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write_then(path, content, 0o600, |temporary| {
        std::fs::set_permissions(temporary, std::fs::Permissions::from_mode(mode & 0o777))
            .with_context(|| format!("setting the mode of {}", temporary.display()))
    })
}

/// The temporary file is created with `mode` (less the umask).
fn write_with_mode(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    write_then(path, content, mode, |_| Ok(()))
}

/// Writes `content` to a temporary file created with `mode`, runs `before`
/// on it, then renames it into place.
fn write_then(
    path: &Path,
    content: &[u8],
    mode: u32,
    before: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = parent.join(format!(".{name}.cryptus-tmp"));
    // A leftover of a killed run keeps its own mode if reused: start afresh.
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.write_all(content)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", temporary.display()))?;
    if let Err(err) = before(&temporary) {
        let _ = std::fs::remove_file(&temporary);
        return Err(err);
    }
    std::fs::rename(&temporary, path).with_context(|| format!("writing {}", path.display()))
}

/// A random token of `length` letters and digits, from the kernel's RNG.
pub fn random_token(length: usize) -> Result<String> {
    use std::io::Read;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut bytes = vec![0u8; length * 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let token: String = bytes
        .iter()
        .filter(|b| usize::from(**b) < limit)
        .take(length)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    if token.len() < length {
        return random_token(length);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_private_and_random() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grafana/admin-password");
        let token = random_token(24).unwrap();
        assert_eq!(token.len(), 24);
        assert_ne!(token, random_token(24).unwrap());
        write_secret(&path, token.as_bytes()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), token);
    }

    #[test]
    fn writes_replace_the_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file.conf");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }
}
