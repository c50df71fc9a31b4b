//! Backups: consistent, verified, atomic; and restores that check first.
//!
//! A backup is a directory `<YYYYMMDD_HHMMSS>/` of `.tar.gz` files and a
//! `manifest.json` naming each with its size and sha256. It is written under
//! a temporary name and renamed only when complete, so a backup is either
//! complete or absent.

pub mod create;
pub mod restore;
pub mod withheld;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{Container, Engine};
use crate::error::{failed, failed_with_hint, usage};
use crate::lock::{self, Lock};
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;
use crate::swarm::state::ClusterLock;
use crate::wait::{self, Limits, Seen};

/// The manifest's format; a newer one is refused rather than misread.
pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
/// The directory name of a backup: its UTC time.
pub const NAME_FORMAT: &str = "%Y%m%d_%H%M%S";
/// Files larger than this in a manifest are not believed.
const MAX_FILE: u64 = 1 << 40;

pub const REDIS_ARCHIVE: &str = "redis.tar.gz";
pub const NGINX_ARCHIVE: &str = "nginx.tar.gz";
pub const COMPOSE_ARCHIVE: &str = "compose.tar.gz";
pub const STATE_ARCHIVE: &str = "state.tar.gz";
/// Where a backup is written before it is complete: `.tmp-<time>-<pid>`.
const TEMPORARY_PREFIX: &str = ".tmp-";
/// Backups hold secrets (`.env`, the data): only their owner reads them.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

/// Monitoring data, when present: the archive, the service, and where its
/// data lives in the container.
pub const MONITORING_ARCHIVES: [(&str, &str, &str); 2] = [
    ("prometheus.tar.gz", "prometheus", "/prometheus"),
    ("grafana.tar.gz", "grafana", "/var/lib/grafana"),
];

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub cryptus_version: String,
    pub time: DateTime<Utc>,
    pub project: String,
    /// Keys in Redis's snapshot, counted at the instant of its fork.
    pub redis_keys: u64,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// One file of an archive: its content and the mode it was backed up with.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Whether `name` is a file a backup holds: the four archives of every
/// backup and the monitoring ones. Anything else is refused.
pub fn is_known_archive(name: &str) -> bool {
    [REDIS_ARCHIVE, NGINX_ARCHIVE, COMPOSE_ARCHIVE, STATE_ARCHIVE].contains(&name)
        || MONITORING_ARCHIVES
            .iter()
            .any(|(archive, _, _)| *archive == name)
}

/// Whether `name` is a compose file or `.env`: what `backup` takes from
/// `compose/`, plain names only.
pub fn is_compose_file(name: &str) -> bool {
    !name.contains('/')
        && !name.starts_with('.')
        && (name.ends_with(".yml") || name.ends_with(".yaml"))
        && name.len() > 4
        || name == ".env"
}

/// The allowlist of a restore: whether `path` may appear in `archive`.
/// The live upstream and http files are backed up for reference but never
/// restored; they are accepted and ignored.
pub fn is_allowed_entry(archive: &str, path: &str) -> bool {
    match archive {
        REDIS_ARCHIVE => path == "dump.rdb",
        NGINX_ARCHIVE => {
            ["nginx.conf", "cryptus/upstream.conf", "cryptus/http.conf"].contains(&path)
        }
        COMPOSE_ARCHIVE => is_compose_file(path),
        STATE_ARCHIVE => [
            crate::history::HISTORY_FILE,
            crate::switch::state::PENDING_FILE,
            crate::swarm::state::BACKUP_FILE,
        ]
        .contains(&path),
        // Monitoring data: anything under the one directory the engine
        // archived (checked by `strip_first`).
        _ => MONITORING_ARCHIVES
            .iter()
            .any(|(name, _, _)| *name == archive),
    }
}

/// Unpacks an archive and refuses any entry outside the allowlist.
pub fn unpack_allowed(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, Entry>> {
    let files = unpack(name, bytes)?;
    if let Some(path) = files.keys().find(|path| !is_allowed_entry(name, path)) {
        return Err(failed_with_hint(
            format!("refusing {name}: it holds {path:?}, which a backup never holds there"),
            "restore only backups written by `cryptus backup`; nothing was changed",
        ));
    }
    Ok(files)
}

/// Reads a manifest and checks everything in it that can be checked alone.
pub fn parse_manifest(text: &str) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_str(text)
        .map_err(|err| format!("manifest.json is not a cryptus manifest: {err}"))?;
    if manifest.format != FORMAT {
        return Err(format!(
            "manifest.json has format {}; this cryptus reads format {FORMAT}",
            manifest.format
        ));
    }
    if manifest.files.is_empty() {
        return Err("manifest.json lists no files".to_owned());
    }
    let mut seen = std::collections::BTreeSet::new();
    for file in &manifest.files {
        let plain = !file.name.is_empty()
            && file.name != "."
            && file.name != ".."
            && file.name != MANIFEST
            && !file.name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(format!(
                "manifest.json names {:?}, which is not a plain file name",
                file.name
            ));
        }
        if !is_known_archive(&file.name) {
            return Err(format!(
                "manifest.json names {:?}, which is not a file a backup holds",
                file.name
            ));
        }
        if !seen.insert(file.name.as_str()) {
            return Err(format!("manifest.json names {:?} twice", file.name));
        }
        // Gzip never grows data by more than a sliver: a larger file could
        // not unpack within its archive's limit.
        let cap = archive_cap(&file.name);
        if file.size > MAX_FILE || file.size > cap + cap / 64 + (1 << 20) {
            return Err(format!(
                "manifest.json gives {:?} an impossible size",
                file.name
            ));
        }
        if file.sha256.len() != 64 || !file.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("manifest.json has no sha256 for {:?}", file.name));
        }
    }
    Ok(manifest)
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Checks a backup directory against its manifest, touching nothing else.
/// Returns the manifest and the verified contents of each file.
pub fn verify(dir: &Path) -> Result<(Manifest, BTreeMap<String, Vec<u8>>)> {
    check_not_empty(dir)?;
    let manifest = read_manifest(dir)?;
    let mut contents = BTreeMap::new();
    for file in &manifest.files {
        contents.insert(file.name.clone(), read_verified(dir, file)?);
    }
    Ok((manifest, contents))
}

/// A directory with something in it, or a usage error: the user named the
/// wrong thing.
fn check_not_empty(dir: &Path) -> Result<()> {
    let hint = "name a backup directory such as backups/20261128_030000";
    let meta =
        std::fs::metadata(dir).map_err(|err| usage(format!("{}: {err}", dir.display()), hint))?;
    if !meta.is_dir() {
        return Err(usage(
            format!("{} is a file, not a backup directory", dir.display()),
            hint,
        ));
    }
    let entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    if entries.is_empty() {
        return Err(usage(
            format!("{} is empty, not a backup", dir.display()),
            hint,
        ));
    }
    Ok(())
}

/// The backup's manifest, checked on its own ([`parse_manifest`]).
fn read_manifest(dir: &Path) -> Result<Manifest> {
    let manifest_path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(failed(format!(
                "{} is not a complete backup: it has no {MANIFEST}",
                dir.display()
            )));
        }
        Err(err) => {
            return Err(err).with_context(|| format!("reading {}", manifest_path.display()));
        }
    };
    parse_manifest(&text).map_err(|err| failed(format!("{}: {err}", dir.display())))
}

/// A file of the backup, read whole and checked against its size and
/// sha256 in the manifest.
fn read_verified(dir: &Path, file: &FileEntry) -> Result<Vec<u8>> {
    let path = dir.join(&file.name);
    let damaged = |what: String| failed(format!("{} is damaged: {what}", dir.display()));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(damaged(format!("{} is missing", file.name)));
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    if bytes.len() as u64 != file.size {
        return Err(damaged(format!(
            "{} has {} bytes, the manifest says {}",
            file.name,
            bytes.len(),
            file.size
        )));
    }
    if sha256(&bytes) != file.sha256 {
        return Err(damaged(format!(
            "{} does not match its sha256 in the manifest",
            file.name
        )));
    }
    Ok(bytes)
}

/// The most a config archive (nginx, compose, state) may unpack to.
pub const CONFIG_CAP: u64 = 16 << 20;
/// The most the redis dump or a monitoring archive may unpack to: it is
/// held in memory while it is checked and loaded.
pub const DATA_CAP: u64 = 4 << 30;

/// How much `archive` may unpack to, in all.
pub fn archive_cap(archive: &str) -> u64 {
    match archive {
        NGINX_ARCHIVE | COMPOSE_ARCHIVE | STATE_ARCHIVE => CONFIG_CAP,
        _ => DATA_CAP,
    }
}

/// A size for people: `16 MiB`, `4 GiB`.
pub fn human_size(bytes: u64) -> String {
    if bytes >= 1 << 30 && bytes % (1 << 30) == 0 {
        format!("{} GiB", bytes >> 30)
    } else if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// A refused archive: one line, and what to do.
fn refused(message: String) -> anyhow::Error {
    failed_with_hint(
        message,
        "restore only backups written by `cryptus backup`; nothing was changed",
    )
}

fn too_large(name: &str, what: &str, cap: u64) -> anyhow::Error {
    failed_with_hint(
        format!(
            "refusing {name}: {what} more than its limit of {}",
            human_size(cap)
        ),
        format!(
            "a backup's archives unpack to at most {} (redis and monitoring data) and {} (configuration); nothing was changed",
            human_size(DATA_CAP),
            human_size(CONFIG_CAP)
        ),
    )
}

/// Refuses to write an archive whose content (`size` bytes unpacked)
/// a restore would refuse: a backup that cannot be restored is no backup.
pub fn check_fits(archive: &str, size: u64) -> Result<()> {
    let cap = archive_cap(archive);
    if size > cap {
        return Err(failed_with_hint(
            format!(
                "{archive} would unpack to {size} bytes, more than the {} a restore accepts",
                human_size(cap)
            ),
            "no backup was written; see docs/backups.md for the limits",
        ));
    }
    Ok(())
}

/// Unpacks a `.tar.gz` into memory: entry path (`./` and `//` dropped) to
/// content and mode. An entry with an absolute path, a `..`, a link, or a
/// path that comes twice is refused: a restore never writes outside where
/// it means to, nor picks one of two answers. What it unpacks to is
/// bounded by [`archive_cap`], checked from each header before the entry
/// is read; the input must be one gzip member holding one tar stream and
/// nothing after it, so nothing is hidden from `backup --verify`.
pub fn unpack(name: &str, bytes: &[u8]) -> Result<BTreeMap<String, Entry>> {
    unpack_bounded(name, bytes, archive_cap(name))
}

fn unpack_bounded(name: &str, bytes: &[u8], cap: u64) -> Result<BTreeMap<String, Entry>> {
    // Only the monitoring archives, which the engine writes from a data
    // directory, hold directories.
    let directories_allowed = archive_cap(name) == DATA_CAP && name != REDIS_ARCHIVE;
    let mut archive = tar::Archive::new(flate2::bufread::GzDecoder::new(bytes));
    let mut files = BTreeMap::new();
    let mut total: u64 = 0;
    {
        let entries = archive.entries().map_err(|err| unreadable(name, &err))?;
        for entry in entries {
            let mut entry = entry.map_err(|err| unreadable(name, &err))?;
            let path = entry
                .path()
                .map_err(|err| refused(format!("{name} has an unreadable entry: {err}")))?
                .into_owned();
            check_entry_path(name, &path)?;
            let kind = entry.header().entry_type();
            if !is_file_to_keep(name, &path, kind, directories_allowed)? {
                continue;
            }
            let size = entry.size();
            total = total.saturating_add(size);
            check_bounds(name, &path, size, total, cap)?;
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
            let content = read_entry(name, &path, &mut entry)?;
            let key = normalize(&path);
            if key.is_empty() {
                return Err(refused(format!(
                    "refusing {name}: it has an entry with no name"
                )));
            }
            if files.insert(key.clone(), Entry { content, mode }).is_some() {
                return Err(refused(format!("refusing {name}: it holds {key:?} twice")));
            }
        }
    }
    nothing_after(name, archive.into_inner())?;
    Ok(files)
}

fn unreadable(name: &str, err: &std::io::Error) -> anyhow::Error {
    refused(format!("{name} is not a readable archive: {err}"))
}

/// Refuses an entry (`size` bytes, by its header) beyond `cap`, or one that
/// takes the archive's `total` beyond it: checked before it is read.
fn check_bounds(name: &str, path: &Path, size: u64, total: u64, cap: u64) -> Result<()> {
    if size > cap {
        return Err(too_large(
            name,
            &format!("its entry {} holds", path.display()),
            cap,
        ));
    }
    if total > cap {
        return Err(too_large(name, "its entries hold", cap));
    }
    Ok(())
}

/// An entry's content: what its header said, never more, and refused if
/// it is cut short.
fn read_entry<R: Read>(name: &str, path: &Path, entry: &mut tar::Entry<'_, R>) -> Result<Vec<u8>> {
    let size = entry.size();
    let mut content = Vec::new();
    entry
        .take(size)
        .read_to_end(&mut content)
        .map_err(|err| unreadable(name, &err))?;
    if content.len() as u64 != size {
        return Err(refused(format!(
            "{name} is not a readable archive: its entry {} is cut short",
            path.display()
        )));
    }
    Ok(content)
}

/// Whether an entry is a file to keep (`false`: a directory skipped where
/// directories may be), or why it is refused: a link, a directory where
/// none may be, anything that is not a regular file.
fn is_file_to_keep(
    name: &str,
    path: &Path,
    kind: tar::EntryType,
    directories_allowed: bool,
) -> Result<bool> {
    let what = if kind.is_symlink() || kind.is_hard_link() {
        "a link"
    } else if kind.is_dir() && directories_allowed {
        return Ok(false);
    } else if kind.is_dir() {
        "a directory"
    } else if !kind.is_file() {
        "not a regular file"
    } else {
        return Ok(true);
    };
    Err(refused(format!(
        "refusing {name}: its entry {} is {what}",
        path.display()
    )))
}

/// After the end of the tar stream only its zero padding may follow, and
/// after the gzip member nothing at all.
fn nothing_after(name: &str, mut decoder: flate2::bufread::GzDecoder<&[u8]>) -> Result<()> {
    let mut padding = [0u8; 8192];
    let mut padded: u64 = 0;
    loop {
        let read = decoder
            .read(&mut padding)
            .map_err(|err| unreadable(name, &err))?;
        if read == 0 {
            break;
        }
        padded += read as u64;
        if padding[..read].iter().any(|b| *b != 0) || padded > 1 << 20 {
            return Err(failed_with_hint(
                format!("refusing {name}: it holds data after the end of its tar archive"),
                "restore only backups written by `cryptus backup`; nothing was changed",
            ));
        }
    }
    if !decoder.into_inner().is_empty() {
        return Err(failed_with_hint(
            format!("refusing {name}: it holds data after the end of its gzip stream"),
            "restore only backups written by `cryptus backup`; nothing was changed",
        ));
    }
    Ok(())
}

/// A checked entry path as one string: its plain components joined by `/`.
fn normalize(path: &Path) -> String {
    path.components()
        .filter_map(|part| match part {
            Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn check_entry_path(name: &str, path: &Path) -> Result<()> {
    for part in path.components() {
        match part {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(refused(format!(
                    "refusing {name}: its entry {} climbs out with '..'",
                    path.display()
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(format!(
                    "refusing {name}: its entry {} is an absolute path",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Compresses a tar archive as the engine gave it.
pub fn gzip(tar: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(tar).context("compressing an archive")?;
    encoder.finish().context("compressing an archive")
}

/// Drops the first component of every path: the engine archives a
/// directory under its own name. Every entry must be under that one
/// directory; anything else is refused.
pub fn strip_first(name: &str, files: BTreeMap<String, Entry>) -> Result<Vec<(String, Entry)>> {
    let mut root: Option<String> = None;
    let mut stripped = Vec::new();
    for (path, entry) in files {
        let Some((first, rest)) = path.split_once('/') else {
            return Err(refused(format!(
                "refusing {name}: its entry {path:?} is outside the data directory"
            )));
        };
        match &root {
            Some(root) if root != first => {
                return Err(refused(format!(
                    "refusing {name}: its entry {path:?} is outside the data directory {root}"
                )));
            }
            Some(_) => {}
            None => root = Some(first.to_owned()),
        }
        stripped.push((rest.to_owned(), entry));
    }
    Ok(stripped)
}

/// Packs files (path in the archive, content, mode) into a `.tar.gz`.
pub fn pack(files: &[(String, Vec<u8>, u32)]) -> Result<Vec<u8>> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    for (path, content, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(mode & 0o777);
        header.set_mtime(now);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_slice())
            .with_context(|| format!("packing {path}"))?;
    }
    builder
        .into_inner()
        .and_then(|encoder| encoder.finish())
        .context("packing an archive")
}

/// A backup being written: a temporary directory that becomes the backup
/// when [`Pending::commit`] renames it, and is removed if dropped before.
pub struct Pending {
    temporary: PathBuf,
    target: PathBuf,
    files: Vec<FileEntry>,
    committed: bool,
}

impl Pending {
    /// Starts a backup in `out`, named after the current second.
    pub fn start(out: &Path, now: DateTime<Utc>) -> Result<Pending> {
        use std::os::unix::fs::DirBuilderExt;
        // Directories cryptus creates are its owner's only; one the
        // operator made keeps the mode they gave it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR)
            .create(out)
            .map_err(|err| io_failure(out, &err))?;
        let target = out.join(now.format(NAME_FORMAT).to_string());
        if target.exists() {
            bail!("{} exists already", target.display());
        }
        let temporary = out.join(format!(
            "{TEMPORARY_PREFIX}{}-{}",
            now.format(NAME_FORMAT),
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(PRIVATE_DIR)
            .create(&temporary)
            .map_err(|err| io_failure(&temporary, &err))?;
        Ok(Pending {
            temporary,
            target,
            files: Vec::new(),
            committed: false,
        })
    }

    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.temporary.join(name);
        write_synced(&path, bytes)?;
        self.files.push(FileEntry {
            name: name.to_owned(),
            size: bytes.len() as u64,
            sha256: sha256(bytes),
        });
        Ok(())
    }

    /// Writes the manifest, then renames the directory into place.
    pub fn commit(
        mut self,
        project: &str,
        redis_keys: u64,
        time: DateTime<Utc>,
    ) -> Result<(PathBuf, Manifest)> {
        let manifest = Manifest {
            format: FORMAT,
            cryptus_version: env!("CARGO_PKG_VERSION").to_owned(),
            time,
            project: project.to_owned(),
            redis_keys,
            files: self.files.clone(),
        };
        let text = serde_json::to_vec_pretty(&manifest).context("encoding the manifest")?;
        write_synced(&self.temporary.join(MANIFEST), &text)?;
        sync_dir(&self.temporary)?;
        std::fs::rename(&self.temporary, &self.target)
            .map_err(|err| io_failure(&self.target, &err))?;
        if let Some(parent) = self.target.parent() {
            sync_dir(parent)?;
        }
        self.committed = true;
        Ok((self.target.clone(), manifest))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.temporary);
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .map_err(|err| io_failure(path, &err))?;
    file.write_all(bytes)
        .map_err(|err| io_failure(path, &err))?;
    file.sync_all().map_err(|err| io_failure(path, &err))
}

fn sync_dir(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(|err| io_failure(path, &err))
}

/// A write that failed (disk full, no permission): the backup failed cleanly.
fn io_failure(path: &Path, err: &std::io::Error) -> anyhow::Error {
    let hint = match err.raw_os_error() {
        Some(28) => "free some space or pass --out on another disk; --keep N prunes old backups",
        Some(13) => "run as a user who may write there, or pass --out",
        _ => "pass --out to write somewhere else",
    };
    failed_with_hint(format!("writing {}: {err}", path.display()), hint)
}

/// Removes what interrupted backups left in `out`: `.tmp-<time>-<pid>`
/// directories whose process is gone (a SIGKILL, a power cut), saying so.
/// A live backup's directory is left alone. Returns what was removed.
pub fn sweep_temporaries(out: &Path, printer: &Printer) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(err) => return Err(err).with_context(|| format!("reading {}", out.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temporary_pid(&name) else {
            continue;
        };
        if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("removing the partial backup {}", path.display()))?;
        printer.warn(format!(
            "removed {}, a partial backup left by an interrupted run",
            path.display()
        ));
        removed.push(path);
    }
    Ok(removed)
}

/// The pid in a temporary backup's name `.tmp-<time>-<pid>`; a name of
/// that shape without a readable pid is an orphan too (pid 0).
fn temporary_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(TEMPORARY_PREFIX)?;
    Some(
        rest.rsplit_once('-')
            .and_then(|(_, pid)| pid.parse().ok())
            .unwrap_or(0),
    )
}

/// An error of a backup or restore as the user sees it: a failure already
/// explained keeps its words and exit code; anything else (an engine error,
/// a container that vanished) becomes a clean failure (exit 1) naming what
/// was being done, with a hint.
pub fn as_failure(doing: &str, hint: &str, err: anyhow::Error) -> anyhow::Error {
    let explained = err
        .chain()
        .any(|cause| cause.downcast_ref::<crate::error::UserError>().is_some());
    if explained {
        return err;
    }
    failed_with_hint(format!("{doing} failed: {err:#}"), hint)
}

/// How long each cleanup step (removing a scratch container, releasing the
/// lock, starting redis again) may take once a run is ending.
pub const CLEANUP_DEADLINE: Duration = Duration::from_secs(60);

/// Runs a cleanup step under [`CLEANUP_DEADLINE`]; it is not interrupted by
/// a signal: it is what a signal asks for.
pub async fn cleanup<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(CLEANUP_DEADLINE, work).await {
        Ok(result) => result,
        Err(_) => bail!("it did not finish in {}s", CLEANUP_DEADLINE.as_secs()),
    }
}

/// The deploy lock a backup or restore holds: the engine's, or on a Swarm
/// the cluster's, so a deploy from any machine waits for it.
pub enum Held<'e> {
    Engine(Lock),
    Swarm(ClusterLock<'e>),
}

/// Takes the deploy lock. A signal ends only the wait for it, inside
/// [`Lock::acquire`]: the request that creates the lock is never dropped
/// half-way, so an interrupted run leaves no lock behind.
pub async fn take_lock<'e>(
    engine: &'e Engine,
    project: &Project,
    operation: &str,
    image: &str,
    options: &lock::Options,
    printer: &Printer,
) -> Result<Held<'e>> {
    match project.orchestrator {
        Orchestrator::Swarm => {
            ClusterLock::acquire(engine, &project.name, operation, options, printer)
                .await
                .map(Held::Swarm)
        }
        Orchestrator::Engine => {
            Lock::acquire(engine, &project.name, operation, image, options, printer)
                .await
                .map(Held::Engine)
        }
    }
}

/// Releases the lock at the end of a run, under a deadline.
pub async fn release_lock(lock: Held<'_>, printer: &Printer) {
    let released = match lock {
        Held::Engine(lock) => cleanup(lock.release()).await,
        Held::Swarm(lock) => cleanup(lock.release()).await,
    };
    if let Err(err) = released {
        printer.warn(format!("releasing the deploy lock: {err:#}"));
    }
}

/// The stack's containers a backup or restore reaches: on one engine all
/// of the project's; on a Swarm its running tasks', each through its node's engine.
pub async fn stack_containers(engine: &Engine, project: &Project) -> Result<Vec<Container>> {
    match project.orchestrator {
        Orchestrator::Swarm => crate::swarm::backup::task_containers(engine, &project.name).await,
        Orchestrator::Engine => engine.containers(&project.name).await,
    }
}

/// The complete backups in `out`, oldest first.
pub fn complete_backups(out: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(out) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(err) => return Err(err).with_context(|| format!("reading {}", out.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let named_like_a_backup = chrono::NaiveDateTime::parse_from_str(&name, NAME_FORMAT).is_ok();
        if named_like_a_backup && entry.path().join(MANIFEST).is_file() {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Removes the oldest complete backups beyond the newest `keep`.
pub fn prune(out: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let backups = complete_backups(out)?;
    let excess = backups.len().saturating_sub(keep);
    let mut removed = Vec::new();
    for old in backups.into_iter().take(excess) {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the old backup {}", old.display()))?;
        removed.push(old);
    }
    Ok(removed)
}

/// How long a backup waits for a free name: the current second's is free
/// a second later.
const FRESH_SECOND_DEADLINE: Duration = Duration::from_secs(5);

/// Waits for the next second, so two backups never share a name.
pub async fn fresh_second(out: &Path) -> Result<DateTime<Utc>> {
    let probe = || async {
        let now = Utc::now();
        let path = out.join(now.format(NAME_FORMAT).to_string());
        Ok(if path.exists() {
            Seen::Not(format!("{} exists", path.display()))
        } else {
            Seen::Ready(now)
        })
    };
    let limits = Limits::within(FRESH_SECOND_DEADLINE, Duration::from_millis(50));
    wait::until(limits, probe, |last| {
        anyhow!("no free backup name in {}: {last}", out.display())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_text(files: &str) -> String {
        format!(
            r#"{{"format":1,"cryptus_version":"0.1.0","time":"2026-11-28T03:00:00Z","project":"p","redis_keys":3,"files":{files}}}"#
        )
    }

    #[test]
    fn a_manifest_is_checked_on_its_own() {
        let good = manifest_text(&format!(
            r#"[{{"name":"redis.tar.gz","size":10,"sha256":"{}"}}]"#,
            "a".repeat(64)
        ));
        assert_eq!(parse_manifest(&good).unwrap().redis_keys, 3);
        for bad in [
            manifest_text(&format!(
                r#"[{{"name":"../x","size":10,"sha256":"{}"}}]"#,
                "a".repeat(64)
            )),
            manifest_text(&format!(
                r#"[{{"name":"/etc/passwd","size":10,"sha256":"{}"}}]"#,
                "a".repeat(64)
            )),
            manifest_text(r#"[{"name":"a","size":10,"sha256":"short"}]"#),
            manifest_text(&format!(
                r#"[{{"name":"extra.tar.gz","size":10,"sha256":"{}"}}]"#,
                "a".repeat(64)
            )),
            manifest_text("[]"),
            manifest_text(&format!(
                r#"[{{"name":"redis.tar.gz","size":10,"sha256":"{0}"}},{{"name":"redis.tar.gz","size":1,"sha256":"{0}"}}]"#,
                "b".repeat(64)
            )),
            good.replace("\"format\":1", "\"format\":2"),
            good.replace("\"project\"", "\"extra\":1,\"project\""),
            "not json".to_owned(),
        ] {
            assert!(parse_manifest(&bad).is_err(), "{bad}");
        }
    }

    fn entry(content: &[u8]) -> Entry {
        Entry {
            content: content.to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn the_engines_directory_name_is_dropped() {
        let files = BTreeMap::from([(
            "20261128T000000Z-abc/01H/meta.json".to_owned(),
            entry(b"{}"),
        )]);
        assert_eq!(
            strip_first("prometheus.tar.gz", files).unwrap(),
            vec![("01H/meta.json".to_owned(), entry(b"{}"))]
        );
        for outside in [
            BTreeMap::from([("top-level-file".to_owned(), entry(b"x"))]),
            BTreeMap::from([
                ("a/x".to_owned(), entry(b"x")),
                ("b/y".to_owned(), entry(b"y")),
            ]),
        ] {
            assert!(strip_first("grafana.tar.gz", outside).is_err());
        }
    }

    #[test]
    fn archives_round_trip_with_their_modes() {
        let packed = pack(&[
            ("dump.rdb".to_owned(), b"REDIS0010".to_vec(), 0o600),
            ("x".to_owned(), b"x".to_vec(), 0o4755),
        ])
        .unwrap();
        let files = unpack("redis.tar.gz", &packed).unwrap();
        assert_eq!(files["dump.rdb"].content, b"REDIS0010");
        assert_eq!(files["dump.rdb"].mode, 0o600);
        assert_eq!(files["x"].mode, 0o755);
    }

    #[test]
    fn only_the_documented_entries_are_restored() {
        let allowed = [
            (REDIS_ARCHIVE, "dump.rdb"),
            (NGINX_ARCHIVE, "nginx.conf"),
            (NGINX_ARCHIVE, "cryptus/upstream.conf"),
            (NGINX_ARCHIVE, "cryptus/http.conf"),
            (COMPOSE_ARCHIVE, "docker-compose.zero-downtime.yml"),
            (COMPOSE_ARCHIVE, "x.yaml"),
            (COMPOSE_ARCHIVE, ".env"),
            (STATE_ARCHIVE, "history.json"),
            (STATE_ARCHIVE, "replicas.json"),
            ("grafana.tar.gz", "grafana/grafana.db"),
        ];
        for (archive, path) in allowed {
            assert!(is_allowed_entry(archive, path), "{archive} {path}");
        }
        let refused = [
            (REDIS_ARCHIVE, "appendonly.aof"),
            (NGINX_ARCHIVE, "app.conf"),
            (NGINX_ARCHIVE, "upstream.conf"),
            (COMPOSE_ARCHIVE, "sub/x.yml"),
            (COMPOSE_ARCHIVE, ".yml"),
            (COMPOSE_ARCHIVE, ".hidden.yml"),
            (COMPOSE_ARCHIVE, "notes.txt"),
            (STATE_ARCHIVE, "upstream.conf"),
            (STATE_ARCHIVE, "http.conf"),
            (STATE_ARCHIVE, "sub/dir/x"),
            ("other.tar.gz", "x"),
        ];
        for (archive, path) in refused {
            assert!(!is_allowed_entry(archive, path), "{archive} {path}");
        }
        let packed = pack(&[("upstream.conf".to_owned(), b"x".to_vec(), 0o644)]).unwrap();
        let err = unpack_allowed(STATE_ARCHIVE, &packed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.conf"), "{err}");
    }

    #[test]
    fn an_entry_named_twice_is_refused() {
        let packed = pack(&[
            ("history.json".to_owned(), b"[]".to_vec(), 0o644),
            ("./history.json".to_owned(), b"[1]".to_vec(), 0o644),
        ])
        .unwrap();
        let err = unpack(STATE_ARCHIVE, &packed).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn backups_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("backups");
        let now = Utc::now();
        let mut pending = Pending::start(&out, now).unwrap();
        pending.add(COMPOSE_ARCHIVE, b"abc").unwrap();
        let (dir, _) = pending.commit("p", 0, now).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(COMPOSE_ARCHIVE)), 0o600);
        assert_eq!(mode(&dir.join(MANIFEST)), 0o600);
    }

    #[test]
    fn partial_backups_of_dead_runs_are_swept() {
        let out = tempfile::tempdir().unwrap();
        let dead = out.path().join(".tmp-20260101_000000-4000000");
        let live = out
            .path()
            .join(format!(".tmp-20260101_000001-{}", std::process::id()));
        let garbled = out.path().join(".tmp-x");
        let backup = out.path().join("20260101_000002");
        for dir in [&dead, &live, &garbled, &backup] {
            std::fs::create_dir(dir).unwrap();
        }
        // The parent of this test process is alive.
        let parent = std::os::unix::process::parent_id();
        let alive = out.path().join(format!(".tmp-20260101_000003-{parent}"));
        std::fs::create_dir(&alive).unwrap();
        let printer = Printer::new(crate::output::Verbosity::Quiet, false);
        let removed = sweep_temporaries(out.path(), &printer).unwrap();
        assert!(!dead.exists() && !garbled.exists() && !live.exists());
        assert!(alive.exists() && backup.exists());
        assert_eq!(removed.len(), 3);
    }

    fn raw_tar(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(encoder);
        let mut header = tar::Header::new_old();
        // Write the name by hand: the tar crate refuses '..' in set_path.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_size(if kind.is_file() { 1 } else { 0 });
        header.set_entry_type(kind);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        let data: &[u8] = if kind.is_file() { b"x" } else { b"" };
        builder.append(&header, data).unwrap();
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn dangerous_entries_are_refused() {
        let traversal = raw_tar("../../etc/evil", tar::EntryType::Regular, None);
        let err = unpack("nginx.tar.gz", &traversal).unwrap_err().to_string();
        assert!(err.contains("'..'"), "{err}");
        let absolute = raw_tar("/etc/evil", tar::EntryType::Regular, None);
        let err = unpack("nginx.tar.gz", &absolute).unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
        let link = raw_tar("conf", tar::EntryType::Symlink, Some("/etc/shadow"));
        let err = unpack("nginx.tar.gz", &link).unwrap_err().to_string();
        assert!(err.contains("is a link"), "{err}");
        assert!(unpack("x.tar.gz", b"not gzip at all").is_err());
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        gzip(bytes).unwrap()
    }

    fn plain_tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(content.len() as u64);
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            builder.append_data(&mut header, path, *content).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn directory_entries_are_refused_in_the_config_and_redis_archives() {
        for (archive, dir) in [
            (REDIS_ARCHIVE, "dump.rdb/"),
            (COMPOSE_ARCHIVE, ".env/"),
            (NGINX_ARCHIVE, "cryptus/"),
            (STATE_ARCHIVE, "x/"),
        ] {
            let tar = plain_tar(&[(dir, tar::EntryType::Directory, b"")]);
            let err = unpack(archive, &gz(&tar)).unwrap_err().to_string();
            assert!(err.contains("is a directory"), "{archive}: {err}");
        }
        // The engine archives monitoring data with its directories.
        let tar = plain_tar(&[
            ("prometheus/", tar::EntryType::Directory, b""),
            ("prometheus/x", tar::EntryType::Regular, b"x"),
        ]);
        let files = unpack("prometheus.tar.gz", &gz(&tar)).unwrap();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn a_second_gzip_member_or_trailing_garbage_is_refused() {
        let good = gz(&plain_tar(&[(
            "dump.rdb",
            tar::EntryType::Regular,
            b"REDIS0011",
        )]));
        assert!(unpack(REDIS_ARCHIVE, &good).is_ok());
        let evil = gz(&plain_tar(&[("evil", tar::EntryType::Regular, b"evil")]));
        let two_members = [good.as_slice(), evil.as_slice()].concat();
        let err = unpack(REDIS_ARCHIVE, &two_members).unwrap_err().to_string();
        assert!(err.contains("after the end of its gzip stream"), "{err}");
        let garbage = [good.as_slice(), b"garbage"].concat();
        let err = unpack(REDIS_ARCHIVE, &garbage).unwrap_err().to_string();
        assert!(err.contains("after the end of its gzip stream"), "{err}");
        // Inside the gzip member, after the tar's end: only zeros.
        let mut tar = plain_tar(&[("dump.rdb", tar::EntryType::Regular, b"REDIS0011")]);
        tar.extend_from_slice(b"hidden");
        let err = unpack(REDIS_ARCHIVE, &gz(&tar)).unwrap_err().to_string();
        assert!(err.contains("after the end of its tar archive"), "{err}");
    }

    #[test]
    fn unpacking_is_bounded_before_an_entry_is_read() {
        let tar = plain_tar(&[("dump.rdb", tar::EntryType::Regular, &[7u8; 2000])]);
        let err = unpack_bounded(REDIS_ARCHIVE, &gz(&tar), 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than its limit"), "{err}");
        let tar = plain_tar(&[
            ("a.yml", tar::EntryType::Regular, &[7u8; 600]),
            ("b.yml", tar::EntryType::Regular, &[7u8; 600]),
        ]);
        let err = unpack_bounded(COMPOSE_ARCHIVE, &gz(&tar), 1000)
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than its limit"), "{err}");
        // A header that claims far more than the data: refused from the
        // header alone, nothing is read.
        let mut header = tar::Header::new_gnu();
        header.set_path("dump.rdb").unwrap();
        header.set_size(DATA_CAP + 1);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_cksum();
        let err = unpack(REDIS_ARCHIVE, &gz(header.as_bytes()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("4 GiB"), "{err}");
        assert_eq!(archive_cap(NGINX_ARCHIVE), 16 << 20);
        // A backup never writes what a restore would refuse.
        assert!(check_fits(COMPOSE_ARCHIVE, 16 << 20).is_ok());
        assert!(check_fits(COMPOSE_ARCHIVE, (16 << 20) + 1).is_err());
        assert!(check_fits(REDIS_ARCHIVE, 1 << 30).is_ok());
        assert!(check_fits(REDIS_ARCHIVE, DATA_CAP + 1).is_err());
    }

    #[test]
    fn a_backup_is_complete_or_absent_and_verified() {
        let out = tempfile::tempdir().unwrap();
        let now = Utc::now();
        {
            let mut pending = Pending::start(out.path(), now).unwrap();
            pending.add(COMPOSE_ARCHIVE, b"abc").unwrap();
            // Dropped before commit: nothing is left.
        }
        assert!(std::fs::read_dir(out.path()).unwrap().next().is_none());
        let mut pending = Pending::start(out.path(), now).unwrap();
        pending.add(COMPOSE_ARCHIVE, b"abc").unwrap();
        let (dir, manifest) = pending.commit("p", 7, now).unwrap();
        assert_eq!(complete_backups(out.path()).unwrap(), vec![dir.clone()]);
        let (read, contents) = verify(&dir).unwrap();
        assert_eq!(read, manifest);
        assert_eq!(contents[COMPOSE_ARCHIVE], b"abc");

        std::fs::write(dir.join(COMPOSE_ARCHIVE), b"abd").unwrap();
        assert!(
            verify(&dir)
                .unwrap_err()
                .to_string()
                .contains("does not match its sha256")
        );
        std::fs::remove_file(dir.join(COMPOSE_ARCHIVE)).unwrap();
        assert!(verify(&dir).unwrap_err().to_string().contains("is missing"));
        std::fs::remove_file(dir.join(MANIFEST)).unwrap();
        assert!(verify(&dir).unwrap_err().to_string().contains("is empty"));
        std::fs::write(dir.join(COMPOSE_ARCHIVE), b"abc").unwrap();
        assert!(
            verify(&dir)
                .unwrap_err()
                .to_string()
                .contains("no manifest.json")
        );
        assert!(verify(&out.path().join("nope")).is_err());
    }

    #[tokio::test]
    async fn a_fresh_second_names_no_backup_that_exists() {
        let out = tempfile::tempdir().unwrap();
        let taken = Utc::now();
        std::fs::create_dir(out.path().join(taken.format(NAME_FORMAT).to_string())).unwrap();
        let fresh = fresh_second(out.path()).await.unwrap();
        assert_ne!(
            fresh.format(NAME_FORMAT).to_string(),
            taken.format(NAME_FORMAT).to_string()
        );
        assert!(fresh > taken);
    }

    #[test]
    fn pruning_keeps_the_newest() {
        let out = tempfile::tempdir().unwrap();
        for second in 0..5 {
            let dir = out.path().join(format!("20260101_00000{second}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(MANIFEST), "{}").unwrap();
        }
        std::fs::create_dir(out.path().join(".tmp-20260101_000009-1")).unwrap();
        std::fs::create_dir(out.path().join("not-a-backup")).unwrap();
        let removed = prune(out.path(), 3).unwrap();
        assert_eq!(removed.len(), 2);
        let left: Vec<String> = complete_backups(out.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            ["20260101_000002", "20260101_000003", "20260101_000004"]
        );
        assert!(out.path().join("not-a-backup").exists());
    }
}
