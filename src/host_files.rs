//! The files cryptus writes on this host for a container before it creates
//! it: the secrets and configs whose value the compose file holds (from a
//! variable, or inline). Each lives in a directory only root enters (0700),
//! is written whole under a temporary name with its mode set, then renamed
//! into place and given to its owner (the container's user unless `uid:`
//! says otherwise); the container bind-mounts it read-only. A running
//! container keeps the file it mounted, so a new value reaches new
//! containers only (the value is in the config hash, so they are new).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use crate::engine::{ContainerSpec, Engine, HostFile};
use crate::output::Printer;

/// The mode of every directory on the way to the files.
const DIR_MODE: u32 = 0o700;
/// The directory the files live under (see `stack::files_dir`).
const ROOT_NAME: &str = ".cryptus";

/// Writes `spec`'s files, then creates the container.
pub async fn create_container(
    engine: &Engine,
    spec: &ContainerSpec,
    printer: &Printer,
) -> Result<String> {
    write(engine, spec, printer).await?;
    engine.create_container(spec).await
}

/// The container's user, as far as this host can tell its ids.
#[derive(Clone, Debug, PartialEq)]
enum User {
    Ids {
        uid: u32,
        gid: Option<u32>,
    },
    /// A name only the image's /etc/passwd could resolve.
    Named(String),
}

/// `uid[:gid]`, a name, or nothing (root), as `user:` and an image's USER
/// are written.
fn parse_user(user: &str) -> User {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name.trim(), Some(group.trim())),
        None => (user.trim(), None),
    };
    let uid = match name {
        "" | "root" => Some(0),
        number => number.parse().ok(),
    };
    let gid = group.and_then(|g| g.parse().ok());
    match uid {
        Some(uid) => User::Ids { uid, gid },
        None => User::Named(name.to_owned()),
    }
}

/// Writes the files of `spec`, each with its mode and owner.
pub async fn write(engine: &Engine, spec: &ContainerSpec, printer: &Printer) -> Result<()> {
    if spec.files.is_empty() {
        return Ok(());
    }
    let user = match &spec.user {
        Some(user) => parse_user(user),
        None => parse_user(&engine.image_user(&spec.image).await?.unwrap_or_default()),
    };
    for file in &spec.files {
        let (mode, uid, gid) = owner_and_mode(file, &user, &spec.name, printer);
        write_file(file, mode)?;
        if (uid.is_some() || gid.is_some())
            && let Err(err) = std::os::unix::fs::chown(&file.path, uid, gid)
        {
            printer.warn_once(format!(
                "cannot give {} to uid {} of {} ({err}): the container's user may not read it; run cryptus as root",
                file.path,
                uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
                spec.name
            ));
        }
    }
    Ok(())
}

/// The mode and owner a file gets: its own uid and gid, else the
/// container's user's; a default-mode file whose owner cannot be told is
/// made readable by every user of the container, as Compose's default is.
fn owner_and_mode(
    file: &HostFile,
    user: &User,
    container: &str,
    printer: &Printer,
) -> (u32, Option<u32>, Option<u32>) {
    match (file.uid, user) {
        (Some(uid), _) => (file.mode, Some(uid), file.gid),
        (None, User::Ids { uid, gid }) => (file.mode, Some(*uid), file.gid.or(*gid)),
        (None, User::Named(name)) => {
            let mode = if file.default_mode {
                printer.warn_once(format!(
                    "{container} runs as user {name:?}, a name: cryptus cannot tell its uid, so {} is mode 0444 (Compose's default) for it to read; set `uid:` on the grant, or a numeric `user:`",
                    file.path
                ));
                0o444
            } else {
                file.mode
            };
            (mode, None, file.gid)
        }
    }
}

/// Writes one file atomically with exactly `mode`, in private directories.
fn write_file(file: &HostFile, mode: u32) -> Result<()> {
    let path = Path::new(&file.path);
    let parent = path
        .parent()
        .with_context(|| format!("{} has no directory", file.path))?;
    private_dirs(parent)?;
    let unchanged = std::fs::metadata(path).is_ok_and(|meta| meta.mode() & 0o7777 == mode)
        && std::fs::read(path).is_ok_and(|bytes| bytes == file.content.expose().as_bytes());
    if unchanged {
        return Ok(());
    }
    crate::files::write_with_exact_mode(path, file.content.expose().as_bytes(), mode)
}

/// Makes `dir` and its parents up to the `.cryptus` root, each mode 0700
/// (also when they existed with another mode).
fn private_dirs(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    for ancestor in dir.ancestors() {
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("setting the mode of {}", ancestor.display()))?;
        if ancestor.file_name().is_some_and(|n| n == ROOT_NAME) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::Sensitive;
    use crate::output::Verbosity;

    fn file(path: &Path, uid: Option<u32>, default_mode: bool) -> HostFile {
        HostFile {
            path: path.to_string_lossy().into_owned(),
            content: Sensitive::new("s3cr3t".to_owned()),
            mode: 0o600,
            uid,
            gid: None,
            default_mode,
        }
    }

    #[test]
    fn users_as_written() {
        assert_eq!(parse_user(""), User::Ids { uid: 0, gid: None });
        assert_eq!(
            parse_user("1000:33"),
            User::Ids {
                uid: 1000,
                gid: Some(33)
            }
        );
        assert_eq!(parse_user("node"), User::Named("node".to_owned()));
    }

    #[test]
    fn the_owner_is_the_grants_then_the_containers() {
        let printer = Printer::new(Verbosity::Quiet, false);
        let path = Path::new("/x");
        let user = User::Ids {
            uid: 33,
            gid: Some(33),
        };
        assert_eq!(
            owner_and_mode(&file(path, None, true), &user, "c", &printer),
            (0o600, Some(33), Some(33))
        );
        assert_eq!(
            owner_and_mode(&file(path, Some(7), true), &user, "c", &printer),
            (0o600, Some(7), None)
        );
        let named = User::Named("node".to_owned());
        assert_eq!(
            owner_and_mode(&file(path, None, true), &named, "c", &printer),
            (0o444, None, None)
        );
        assert_eq!(
            owner_and_mode(&file(path, None, false), &named, "c", &printer),
            (0o600, None, None)
        );
    }

    #[test]
    fn files_are_written_privately_and_whole() {
        let project = tempfile::tempdir().unwrap();
        let dir = project.path().join(".cryptus/demo/web/secrets");
        let path = dir.join("db");
        write_file(&file(&path, None, true), 0o400).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "s3cr3t");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&path), 0o400);
        for dir in [&dir, &project.path().join(".cryptus")] {
            assert_eq!(mode(dir), 0o700, "{}", dir.display());
        }
        // The project directory itself keeps its mode.
        assert_ne!(mode(project.path()), 0o700 | 0o40000);
        write_file(&file(&path, None, true), 0o440).unwrap();
        assert_eq!(mode(&path), 0o440);
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left");
    }
}
