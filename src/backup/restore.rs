//! Restoring a backup: verify and stage everything first (the allowlist,
//! `nginx -t` on the backup's nginx.conf), then Redis (safely, through a
//! temporary instance with AOF off, with one point of no return), then the
//! configuration and history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use tokio::time::Instant;

use super::{
    COMPOSE_ARCHIVE, Entry, Manifest, NGINX_ARCHIVE, REDIS_ARCHIVE, STATE_ARCHIVE, cleanup,
    unpack_allowed,
};
use crate::engine::{Container, Engine};
use crate::error::{failed, failed_with_hint};
use crate::interrupt;
use crate::lock;
use crate::nginx::Nginx;
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;
use crate::redis::{Load, Redis, Scratch, scratch_name, wait_loaded};
use crate::stack::{LB_SERVICE, REDIS_SERVICE};
use crate::wait::{self, Limits, Seen};

const REDIS_DEADLINE: Duration = Duration::from_secs(120);
/// How often the AOF rewrite is looked at: it takes milliseconds for a
/// small data set.
const AOF_INTERVAL: Duration = Duration::from_millis(50);
/// Where the scratch redis loads the backup's dump from: its own
/// filesystem, not the volume, so nothing on the volume changes before the
/// commit and nothing is left there after.
const STAGED_DIR: &str = "/tmp";
const STAGED_DUMP: &str = "dump.rdb";
/// Where the backup's nginx.conf is checked inside the load balancer: a
/// copy of the live configuration directory, so that its relative paths
/// (`include app.conf;`) resolve as they will once it is live: nginx
/// resolves them against the directory of the file given to `-c`.
const CANDIDATE_DIR: &str = "/tmp/cryptus-restore-nginx";
/// Copies the live directory ($1) to the scratch one ($2), puts the
/// candidate (stdin) in it as nginx.conf, runs `nginx -t` on it and removes
/// the scratch directory. Exit 3: the copy failed; otherwise nginx's code.
const TEST_SCRIPT: &str = r#"live="$1"; d="$2"
rm -rf "$d"
if ! { mkdir -p "$d" && cp -a "$live/." "$d/" && cat > "$d/nginx.conf"; }; then
  rm -rf "$d"; exit 3
fi
nginx -t -q -c "$d/nginx.conf" 2>&1; code=$?
rm -rf "$d"
exit $code"#;

#[derive(Debug, Serialize)]
pub struct Restored {
    pub ok: bool,
    pub from: PathBuf,
    pub manifest_time: chrono::DateTime<chrono::Utc>,
    pub redis_keys: u64,
    /// Files of the project directory that the backup changed.
    pub files: Vec<String>,
    /// State files written into the engine.
    pub state: Vec<String>,
    /// Variables whose values the backup withheld and compose/.env does
    /// not set: to be set before `start`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unset: Vec<String>,
}

/// What a verified backup holds, unpacked and checked entry by entry
/// against the allowlist.
pub struct Contents {
    pub manifest: Manifest,
    pub dump: Vec<u8>,
    pub nginx_conf: Option<Entry>,
    pub compose: BTreeMap<String, Entry>,
    pub state: BTreeMap<String, Vec<u8>>,
    pub volumes: Vec<VolumeData>,
}

/// Monitoring data to put back: the service, where its data lives in the
/// container, and the files.
pub struct VolumeData {
    pub service: String,
    pub dir: String,
    pub files: Vec<(String, Entry)>,
}

/// Verifies a backup and unpacks it, refusing any unsafe entry and any
/// entry outside the allowlist. Nothing outside the backup is touched.
pub fn open(dir: &Path) -> Result<Contents> {
    let (manifest, files) = super::verify(dir)?;
    let archive = |name: &str| -> Result<BTreeMap<String, Entry>> {
        match files.get(name) {
            Some(bytes) => unpack_allowed(name, bytes),
            None => Err(failed(format!(
                "{} is not a complete backup: it has no {name}",
                dir.display()
            ))),
        }
    };
    let mut redis = archive(REDIS_ARCHIVE)?;
    let dump = redis
        .remove("dump.rdb")
        .ok_or_else(|| {
            failed(format!(
                "{REDIS_ARCHIVE} in {} holds no dump.rdb",
                dir.display()
            ))
        })?
        .content;
    if !dump.starts_with(b"REDIS") {
        return Err(failed(format!(
            "{REDIS_ARCHIVE} in {} holds no Redis snapshot",
            dir.display()
        )));
    }
    let mut volumes = Vec::new();
    for (archive, service, data_dir) in super::MONITORING_ARCHIVES {
        if let Some(bytes) = files.get(archive) {
            let unpacked = unpack_allowed(archive, bytes)?;
            volumes.push(VolumeData {
                service: service.to_owned(),
                dir: data_dir.to_owned(),
                files: super::strip_first(archive, unpacked)?,
            });
        }
    }
    Ok(Contents {
        volumes,
        manifest,
        dump,
        nginx_conf: archive(NGINX_ARCHIVE)?.remove("nginx.conf"),
        compose: archive(COMPOSE_ARCHIVE)?,
        state: archive(STATE_ARCHIVE)?
            .into_iter()
            .map(|(name, entry)| check_state(&name, entry.content).map(|bytes| (name, bytes)))
            .collect::<Result<_>>()?,
    })
}

/// A state file is restored only if cryptus can read it back: the history
/// as a history, the pending replicas as replica counts.
fn check_state(name: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(&bytes).ok();
    let empty = text.is_some_and(|text| text.trim().is_empty());
    let readable = match (name, text) {
        (crate::history::HISTORY_FILE | crate::switch::state::PENDING_FILE, _) if empty => true,
        (crate::history::HISTORY_FILE, Some(text)) => crate::history::parse(text).is_ok(),
        (crate::swarm::state::BACKUP_FILE, Some(text)) => {
            serde_json::from_str::<crate::swarm::state::ClusterState>(text).is_ok()
        }
        (crate::switch::state::PENDING_FILE, Some(text)) => {
            serde_json::from_str::<BTreeMap<crate::stack::Color, u32>>(text).is_ok()
        }
        _ => false,
    };
    if !readable {
        return Err(failed_with_hint(
            format!("refusing {STATE_ARCHIVE}: its {name} is not one cryptus wrote"),
            "restore only backups written by `cryptus backup`; nothing was changed",
        ));
    }
    Ok(bytes)
}

pub async fn restore(
    engine: &Engine,
    project: &Project,
    from: &Path,
    contents: Contents,
    lock_options: &lock::Options,
    printer: &Printer,
) -> Result<Restored> {
    interrupt::catch();
    let containers = super::stack_containers(engine, project).await?;
    let redis = containers
        .iter()
        .find(|c| c.service == REDIS_SERVICE)
        .ok_or_else(|| redis_not_running(project))?;
    if contents.manifest.project != project.name {
        printer.warn(format!(
            "the backup is of project {}; restoring it into project {}",
            contents.manifest.project, project.name
        ));
    }
    let step = printer.step("taking the deploy lock");
    let lock = super::take_lock(
        engine,
        project,
        "restore",
        &redis.image,
        lock_options,
        printer,
    )
    .await?;
    step.done();
    let result = locked(engine, project, from, &contents, printer).await;
    super::release_lock(lock, printer).await;
    result.map_err(|err| {
        super::as_failure(
            "the restore",
            "check the stack with `cryptus status`; redis runs with its previous data unless the restore said otherwise",
            err,
        )
    })
}

fn redis_not_running(project: &Project) -> anyhow::Error {
    failed_with_hint(
        format!("the redis of project {} is not running", project.name),
        "run `cryptus start` first; restore needs the running stack's configuration",
    )
}

/// The restore under the lock: the containers are listed again, as they
/// may have changed while the lock was awaited; everything is staged and
/// checked, then applied.
async fn locked(
    engine: &Engine,
    project: &Project,
    from: &Path,
    contents: &Contents,
    printer: &Printer,
) -> Result<Restored> {
    // A scratch redis a killed run left goes before anything else, also
    // when it left redis stopped (the next `start` brings redis back).
    crate::redis::sweep_scratch(engine, &project.name, printer).await?;
    let containers = super::stack_containers(engine, project).await?;
    let redis = containers
        .iter()
        .find(|c| c.service == REDIS_SERVICE && c.running)
        .ok_or_else(|| redis_not_running(project))?;
    // On a Swarm, the scratch ran beside redis, on its node.
    if redis.node_engine.is_some() {
        crate::redis::sweep_scratch(redis.engine(engine), &project.name, printer).await?;
    }
    sweep_staged(project, printer);
    let staged = interrupt::or_interrupted(stage(engine, project, contents, &containers)).await?;
    interrupt::check()?;
    apply(
        engine,
        project,
        from,
        contents,
        staged,
        redis,
        &containers,
        printer,
    )
    .await
}

/// A file of the project directory the restore will write, staged: its
/// whole content is already in a temporary file beside it, with its mode.
struct LocalWrite {
    path: PathBuf,
    label: String,
    mode: u32,
    /// What it holds now, to put back if nginx refuses it.
    previous: Option<Vec<u8>>,
    /// The staged file, until it is renamed into place.
    temporary: Option<PathBuf>,
}

/// Every project file the restore writes, staged before anything live
/// changes: renaming a temporary file in its own directory into place is
/// all that is left, and it does not fail for want of space or permission.
/// Dropped before [`Staged::commit`] (an error, a signal), it removes its
/// temporary files and any directory it made: nothing changed.
#[derive(Default)]
struct Staged {
    writes: Vec<LocalWrite>,
    /// Directories made for new files, outermost first.
    made: Vec<PathBuf>,
    /// Variables the backup withheld that the current `.env` lacks.
    unset: Vec<String>,
}

impl Staged {
    /// Renames every staged file into place. Returns what it wrote.
    fn commit(&mut self) -> Result<Vec<String>> {
        let mut files = Vec::new();
        for write in &mut self.writes {
            if let Some(temporary) = write.temporary.take() {
                if let Err(err) = std::fs::rename(&temporary, &write.path) {
                    write.temporary = Some(temporary);
                    return Err(err).with_context(|| format!("writing {}", write.path.display()));
                }
                files.push(write.label.clone());
            }
        }
        self.made.clear();
        Ok(files)
    }

    fn conf(&self) -> Option<&LocalWrite> {
        self.writes.iter().find(|w| w.label == NGINX_CONF_LABEL)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for write in &self.writes {
            if let Some(temporary) = &write.temporary {
                let _ = std::fs::remove_file(temporary);
            }
        }
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

const NGINX_CONF_LABEL: &str = "nginx/nginx.conf";
/// What a staged file's name holds, before the pid of the restore.
const STAGED_MARK: &str = ".cryptus-restore-";

/// Removes the staged files a killed restore left in compose/ and nginx/
/// (`.<name>.cryptus-restore-<pid>` of a process that is gone), saying so.
fn sweep_staged(project: &Project, printer: &Printer) {
    for sub in ["compose", "nginx"] {
        let Ok(entries) = std::fs::read_dir(project.dir.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((_, pid)) = name.rsplit_once(STAGED_MARK) else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
            if name.starts_with('.') && !alive && std::fs::remove_file(entry.path()).is_ok() {
                printer.warn(format!(
                    "removed {}, left by an interrupted restore",
                    entry.path().display()
                ));
            }
        }
    }
}

/// Checks that every part of the backup has somewhere to go, stages every
/// project file and checks the backup's nginx.conf with `nginx -t` as
/// nginx will load it, changing nothing live.
async fn stage(
    engine: &Engine,
    project: &Project,
    contents: &Contents,
    containers: &[Container],
) -> Result<Staged> {
    let mut wanted: Vec<(PathBuf, String, &Entry)> = Vec::new();
    if let Some(conf) = &contents.nginx_conf {
        let label = NGINX_CONF_LABEL.to_owned();
        wanted.push((project.dir.join(&label), label, conf));
    }
    let env = merged_env(project, contents)?;
    for (name, entry) in &contents.compose {
        let entry = match &env {
            Some((merged, _)) if name == ENV_FILE => merged,
            _ => entry,
        };
        wanted.push((
            project.dir.join("compose").join(name),
            format!("compose/{name}"),
            entry,
        ));
    }
    let mut changed = Vec::new();
    for (path, label, entry) in wanted {
        refuse_unless_plain_file(&path)?;
        let previous = std::fs::read(&path).ok();
        if previous.as_deref() != Some(entry.content.as_slice()) {
            changed.push((path, label, entry, previous));
        }
    }
    let conf = changed
        .iter()
        .find(|(_, label, _, _)| label == NGINX_CONF_LABEL)
        .map(|(_, _, entry, _)| entry.content.as_slice());
    require_containers(project, contents, containers)?;
    let mut staged = Staged::default();
    for (path, label, entry, previous) in changed {
        let mode = restored_mode(&path, entry.mode)?;
        let parent = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        make_dirs(&parent, &mut staged.made)?;
        let temporary = stage_file(&path, &entry.content, mode)?;
        staged.writes.push(LocalWrite {
            path,
            label,
            mode,
            previous,
            temporary: Some(temporary),
        });
    }
    if let Some(conf) = conf {
        test_nginx_conf(engine, containers, conf).await?;
    }
    staged.unset = env.map(|(_, missing)| missing).unwrap_or_default();
    Ok(staged)
}

const ENV_FILE: &str = ".env";

/// The backup's `.env` with each withheld value taken from the project's
/// current `.env` (never from the process environment, which is not
/// written into the file), and the withheld names it lacks; `None` for a
/// backup that withheld nothing, restored as it is.
fn merged_env(project: &Project, contents: &Contents) -> Result<Option<(Entry, Vec<String>)>> {
    let Some(entry) = contents.compose.get(ENV_FILE) else {
        return Ok(None);
    };
    if !super::withheld::has_marks(&entry.content) {
        return Ok(None);
    }
    let path = project.dir.join("compose").join(ENV_FILE);
    refuse_unless_plain_file(&path)?;
    let current = match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let (content, missing) = super::withheld::merge(&entry.content, current.as_deref());
    let merged = Entry {
        content,
        mode: entry.mode,
    };
    Ok(Some((merged, missing)))
}

/// Restore puts back every part of the backup or nothing: each part needs
/// its container, found before anything changes. The history and pending
/// replicas live in nginx's state volume and nginx.conf is nginx's own (a
/// different one is checked inside the running nginx, in `stage`):
/// without nginx's container neither can be put back. Monitoring data goes
/// into its service's volume.
fn require_containers(
    project: &Project,
    contents: &Contents,
    containers: &[Container],
) -> Result<()> {
    let nothing = "nothing was changed";
    let lb = containers.iter().find(|c| c.service == LB_SERVICE);
    if lb.is_none() && (!contents.state.is_empty() || contents.nginx_conf.is_some()) {
        return Err(failed_with_hint(
            format!(
                "project {} has no nginx container, and the backup's deployment history and nginx configuration go into it",
                project.name
            ),
            format!("run `cryptus start` first; {nothing}"),
        ));
    }
    for data in &contents.volumes {
        if !containers.iter().any(|c| c.service == data.service) {
            return Err(failed_with_hint(
                format!(
                    "the backup holds {}'s data, and project {} has no {} container to put it in",
                    data.service, project.name, data.service
                ),
                format!("run `cryptus start --monitoring` first; {nothing}"),
            ));
        }
    }
    Ok(())
}

/// A restored file replaces a regular file or nothing: never a directory,
/// a link (whose target the rename would not follow), a fifo or a device.
fn refuse_unless_plain_file(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_file() => Ok(()),
        Ok(meta) => {
            let kind = if meta.file_type().is_dir() {
                "a directory"
            } else if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file"
            };
            Err(failed_with_hint(
                format!("cannot restore {}: it is {kind}", path.display()),
                "move it out of the way, then restore; nothing was changed",
            ))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// Makes `dir` and its missing parents, recording each one made.
fn make_dirs(dir: &Path, made: &mut Vec<PathBuf>) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || std::fs::symlink_metadata(path).is_ok() {
            break;
        }
        missing.push(path.to_path_buf());
        at = path.parent();
    }
    for path in missing.into_iter().rev() {
        std::fs::create_dir(&path).map_err(|err| {
            failed_with_hint(
                format!("cannot create {}: {err}", path.display()),
                "run as a user who may write the project directory; nothing was changed",
            )
        })?;
        made.push(path);
    }
    Ok(())
}

/// Writes `content` whole to `.<name>.cryptus-restore-<pid>` beside
/// `path`, synced, with exactly `mode`: private until its mode is set.
fn stage_file(path: &Path, content: &[u8], mode: u32) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let parent = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = parent.join(format!(".{name}{STAGED_MARK}{}", std::process::id()));
    let cannot = |err: std::io::Error| {
        failed_with_hint(
            format!("cannot write {}: {err}", temporary.display()),
            "run as a user who may write the project directory, with space on its disk; nothing was changed",
        )
    };
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(cannot)?;
    let written = file
        .write_all(content)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode & 0o777))
        });
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(cannot(err));
    }
    Ok(temporary)
}

/// The mode a restored file gets: an existing file keeps its own; a new
/// one gets the mode the backup recorded, and `.env` never more than 0600.
fn restored_mode(path: &Path, recorded: u32) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.permissions().mode() & 0o777),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let secret = path.file_name().is_some_and(|name| name == ".env");
            Ok(if secret {
                recorded & 0o600
            } else {
                recorded & 0o777
            })
        }
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

/// `nginx -t` on the backup's nginx.conf inside the running load balancer,
/// before anything changes: a configuration nginx refuses is never written.
async fn test_nginx_conf(engine: &Engine, containers: &[Container], conf: &[u8]) -> Result<()> {
    let Some(lb) = containers
        .iter()
        .find(|c| c.service == LB_SERVICE && c.running)
    else {
        return Err(failed_with_hint(
            "the backup's nginx/nginx.conf differs from this one, and nginx is not running to check it",
            "run `cryptus start`, then restore; nothing was changed",
        ));
    };
    let live_dir = Path::new(crate::nginx::CONF)
        .parent()
        .map(|dir| dir.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = lb
        .engine(engine)
        .exec_with_input(
            &lb.name,
            &["sh", "-c", TEST_SCRIPT, "sh", &live_dir, CANDIDATE_DIR],
            Some(conf),
        )
        .await
        .with_context(|| format!("running nginx -t in {}", lb.name))?;
    let said = format!("{}{}", output.stderr, output.stdout);
    let reason = said.lines().last().unwrap_or("").trim().to_owned();
    if output.code == 3 {
        return Err(failed_with_hint(
            format!(
                "copying {live_dir} to {CANDIDATE_DIR} in {} to check the backup's nginx.conf failed: {reason}",
                lb.name
            ),
            "check that nginx's container has room in /tmp; nothing was changed",
        ));
    }
    if output.code != 0 {
        return Err(failed_with_hint(
            format!("the backup's nginx/nginx.conf does not pass nginx -t: {reason}"),
            "nothing was changed; fix nginx.conf in the backup (and its manifest) or restore another backup",
        ));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn apply(
    engine: &Engine,
    project: &Project,
    from: &Path,
    contents: &Contents,
    mut staged: Staged,
    redis: &Container,
    containers: &[Container],
    printer: &Printer,
) -> Result<Restored> {
    let expected = contents.manifest.redis_keys;
    let step = printer.step(format!("restoring redis ({expected} keys)"));
    let running = match restore_redis(engine, project, redis, &contents.dump, expected).await {
        Ok(running) => running,
        Err(err) => {
            step.fail();
            return Err(err);
        }
    };
    // Past the point of no return: the rest is finished, not undone.
    let live = Redis {
        engine: running.engine(engine),
        container: running.name.clone(),
    };
    let keys = live.keys().await?;
    if keys != expected {
        step.fail();
        return Err(failed(format!(
            "redis holds {keys} keys after the restore, the backup's manifest says {expected}"
        )));
    }
    step.done_with(format!("{keys} keys"));

    let step = printer.step("configuration and history");
    let partly = "redis's data was restored, but the rest of the backup was not";
    let files = staged.commit().context(partly)?;
    let mut state = restore_state(engine, project, containers, contents, &staged)
        .await
        .context(partly)?;
    step.done();
    let volumes = restore_volumes(engine, contents, containers, printer).await;
    state.extend(volumes.context("the backup was restored but for the monitoring data")?);
    if interrupt::seen() {
        printer.warn("a signal came after redis's data was replaced; the restore was finished");
    }
    warn_unset(&staged.unset, printer);
    // The live upstream is not put back: it names the containers running now.
    Ok(Restored {
        ok: true,
        from: from.to_path_buf(),
        manifest_time: contents.manifest.time,
        redis_keys: keys,
        files,
        state,
        unset: staged.unset.clone(),
    })
}

/// A withheld variable the current `.env` lacks: named, never its value,
/// with what to do before the stack starts again.
fn warn_unset(names: &[String], printer: &Printer) {
    for name in names {
        printer.warn(format!(
            "the backup withheld the value of {name}, which feeds a secret or config, and compose/.env does not set it\nhint: set {name} in compose/.env before `cryptus start`"
        ));
    }
}

/// The deployment history back where it lives: on one engine in nginx's
/// state (with nginx.conf reloaded); on a Swarm in the cluster's state,
/// where nginx.conf is a config of the swarm that the next `start` makes
/// from the restored file.
async fn restore_state(
    engine: &Engine,
    project: &Project,
    containers: &[Container],
    contents: &Contents,
    staged: &Staged,
) -> Result<Vec<String>> {
    if project.orchestrator == Orchestrator::Swarm {
        let Some(bytes) = contents.state.get(crate::swarm::state::BACKUP_FILE) else {
            return Ok(Vec::new());
        };
        crate::swarm::backup::restore_history(engine, &project.name, bytes).await?;
        return Ok(vec![crate::swarm::state::BACKUP_FILE.to_owned()]);
    }
    // Found before anything changed when the backup has anything for it.
    match containers.iter().find(|c| c.service == LB_SERVICE) {
        Some(lb) => restore_nginx(lb.engine(engine), lb, contents, staged).await,
        None => Ok(Vec::new()),
    }
}

/// The deployment history and pending replicas into nginx's state, and
/// the restored nginx.conf through `nginx -t` and a reload. Returns the
/// state files written.
async fn restore_nginx(
    engine: &Engine,
    lb: &Container,
    contents: &Contents,
    staged: &Staged,
) -> Result<Vec<String>> {
    let nginx = Nginx::named(engine, lb.name.clone());
    let texts: Vec<(String, String)> = contents
        .state
        .iter()
        .map(|(name, bytes)| (name.clone(), String::from_utf8_lossy(bytes).into_owned()))
        .collect();
    let entries: Vec<(&str, &str)> = texts
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    if !entries.is_empty() {
        nginx.write(&entries, lb.running).await?;
    }
    let conf = staged.conf();
    if let (Some(conf), true) = (conf, lb.running) {
        // Checked before anything changed; checked again where it lives.
        if let Err(reason) = nginx.test().await? {
            if let Some(previous) = &conf.previous {
                crate::files::write_with_exact_mode(&conf.path, previous, conf.mode)?;
            }
            return Err(failed(format!(
                "nginx refused the restored nginx/nginx.conf, so the previous one was put back: {reason}"
            )));
        }
        nginx.reload().await?;
    }
    Ok(texts.into_iter().map(|(name, _)| name).collect())
}

/// Monitoring data into each stopped service's volume; then it starts again.
async fn restore_volumes(
    engine: &Engine,
    contents: &Contents,
    containers: &[Container],
    printer: &Printer,
) -> Result<Vec<String>> {
    let mut restored = Vec::new();
    for VolumeData {
        service,
        dir,
        files,
    } in &contents.volumes
    {
        // Found before anything changed (`require_containers`).
        let Some(container) = containers.iter().find(|c| &c.service == service) else {
            return Err(anyhow!("there is no {service} container for its data"));
        };
        let step = printer.step(format!("{service}'s data"));
        let engine = container.engine(engine);
        let was_running = container.running;
        engine.stop(&container.name, None).await?;
        let entries: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(path, entry)| (path.as_str(), entry.content.as_slice(), entry.mode))
            .collect();
        // Owned as the data directory is: the service's own user.
        let written = async {
            let owner = engine.owner_of(&container.name, dir).await?;
            engine
                .write_files_as(&container.name, dir, &entries, owner)
                .await
        }
        .await;
        if was_running {
            engine.start(&container.name).await?;
        }
        written?;
        step.done();
        restored.push(format!("{service} data"));
    }
    Ok(restored)
}

/// How the live Redis keeps its data, read before it is stopped.
struct Setup {
    dir: String,
    file: String,
    wants_aof: bool,
    /// The live AOF names, for the scratch redis that writes the AOF, and
    /// leave to move its `dir` onto the volume.
    scratch_args: Vec<String>,
    volume: (String, String),
}

async fn read_setup(live: &Redis<'_>, redis: &Container) -> Result<Setup> {
    let dir = live.config("dir").await?;
    let file = live.config("dbfilename").await?;
    let wants_aof = live.config("appendonly").await? == "yes";
    let mut scratch_args = Vec::new();
    for name in ["appendfilename", "appenddirname"] {
        // appenddirname is Redis 7's; an older one has none.
        if let Ok(value) = live.config(name).await {
            scratch_args.extend([format!("--{name}"), value]);
        }
    }
    // Redis 7 refuses CONFIG SET dir unless protected configs are enabled;
    // the scratch is on no network, so that opens nothing.
    let version = live.info("server").await?;
    let major = version
        .get("redis_version")
        .and_then(|v| v.split('.').next())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if major >= 7 {
        scratch_args.extend(["--enable-protected-configs".to_owned(), "yes".to_owned()]);
    }
    let volume = redis
        .volumes
        .iter()
        .find(|(_, target)| dir.starts_with(target.as_str()))
        .cloned()
        .ok_or_else(|| anyhow!("redis keeps its data in {dir}, which is on no named volume"))?;
    Ok(Setup {
        dir,
        file,
        wants_aof,
        scratch_args,
        volume,
    })
}

/// Replaces Redis's data with `dump`, or leaves the previous data.
///
/// Redis is stopped; a scratch Redis on its volume (AOF off) loads the dump
/// from a staged name that the live data never uses, and its key count is
/// checked. Only then comes the one point of no return, an atomic rename
/// inside Redis: the AOF rewrite when the live configuration wants AOF,
/// otherwise SAVE to the live dump file. A failure or a signal before it
/// leaves the previous data in place. Whatever happens, the scratch is
/// removed and only then does the real Redis start again. Returns the
/// container that runs Redis afterwards (on a Swarm, a new task's). The
/// scratch runs beside redis, on its engine (on a Swarm, its node's);
/// `engine` is the one asked (on a Swarm, the manager's).
async fn restore_redis(
    engine: &Engine,
    project: &Project,
    redis: &Container,
    dump: &[u8],
    expected: u64,
) -> Result<Container> {
    let live = Redis {
        engine: redis.engine(engine),
        container: redis.name.clone(),
    };
    let setup = interrupt::or_interrupted(read_setup(&live, redis)).await?;
    interrupt::check()?;
    // Not interrupted: a stop half-asked would race the start that follows.
    let stopped = cleanup(stop_redis(engine, project, redis))
        .await
        .with_context(|| format!("stopping {}", redis.name));
    let replaced = match stopped {
        Ok(()) => replace(redis.engine(engine), project, redis, &setup, dump, expected).await,
        Err(err) => Err(err),
    };
    let back = bring_back(engine, project, redis, &setup).await;
    match (replaced, back) {
        (Ok(()), Ok(running)) => Ok(running),
        (Err(err), Ok(_)) => Err(err.context("redis runs again with its previous data")),
        (replaced, Err(err)) => Err(failed_with_hint(
            format!(
                "redis could not be started again after the restore{}: {err:#}",
                replaced
                    .err()
                    .map(|e| format!(" (which failed: {e:#})"))
                    .unwrap_or_default()
            ),
            "run `cryptus start`; it removes a scratch redis left behind before it starts redis",
        )),
    }
}

/// Loads the dump into a scratch Redis on `engine`, redis's, and commits
/// it. Ok means committed.
async fn replace(
    engine: &Engine,
    project: &Project,
    redis: &Container,
    setup: &Setup,
    dump: &[u8],
    expected: u64,
) -> Result<()> {
    let deadline = Instant::now() + REDIS_DEADLINE;
    let load = Load {
        dir: STAGED_DIR,
        file: STAGED_DUMP,
        volume: Some(setup.volume.clone()),
        dump: Some(dump),
        args: setup.scratch_args.clone(),
    };
    // The stopped Redis (on a Swarm, its task saving as it ends) must be
    // off the volume before the scratch writes it.
    interrupt::or_interrupted(volume_free(engine, &setup.volume.0, deadline)).await?;
    // Creating and starting it is not interrupted (a creation half-asked
    // could finish after the cleanup); waiting for it to load is.
    let scratch = Scratch::start(engine, &project.name, "restore", &redis.image, load).await?;
    let loader = scratch.redis();
    interrupt::or_interrupted(async {
        scratch.ready(deadline).await?;
        let loaded = loader.keys().await?;
        if loaded != expected {
            return Err(failed(format!(
                "the backup's snapshot loads {loaded} keys, its manifest says {expected}"
            )));
        }
        Ok(())
    })
    .await
    .context("loading the backup into a scratch redis")?;
    interrupt::check()?;
    commit(&loader, setup, deadline)
        .await
        .context("writing the restored data to redis's volume")
}

/// The point of no return, bounded by its deadline and not interrupted.
/// The scratch moves its `dir` onto the volume; with AOF the AOF rewrite
/// is the commit (Redis replaces its AOF atomically, and the real one then
/// loads the AOF, not the dump file), and SAVE writes the dump file too;
/// without AOF, SAVE's atomic rename is the commit.
async fn commit(loader: &Redis<'_>, setup: &Setup, deadline: Instant) -> Result<()> {
    loader.cli(&["config", "set", "dir", &setup.dir]).await?;
    loader
        .cli(&["config", "set", "dbfilename", &setup.file])
        .await?;
    if setup.wants_aof {
        loader.cli(&["config", "set", "appendonly", "yes"]).await?;
        wait_aof(loader, deadline).await?;
    }
    let saved = loader.cli(&["save"]).await?;
    if saved != "OK" {
        return Err(anyhow!("redis answered {saved:?} to SAVE"));
    }
    Ok(())
}

/// Removes the scratch Redis, makes sure nothing else runs on the volume,
/// and starts the real Redis again; each step under a deadline. The real
/// one never starts while a scratch may still exist.
async fn bring_back(
    engine: &Engine,
    project: &Project,
    redis: &Container,
    setup: &Setup,
) -> Result<Container> {
    let scratch = scratch_name(&project.name, "restore");
    let node = redis.engine(engine);
    cleanup(node.remove(&scratch, true))
        .await
        .with_context(|| format!("removing the scratch redis {scratch}"))?;
    let deadline = Instant::now() + REDIS_DEADLINE;
    volume_free(node, &setup.volume.0, deadline)
        .await
        .context("redis was not started beside them")?;
    let running = match project.orchestrator {
        Orchestrator::Swarm => {
            crate::swarm::backup::start_redis(engine, &project.name, deadline).await?
        }
        Orchestrator::Engine => {
            cleanup(engine.start(&redis.name)).await?;
            redis.clone()
        }
    };
    let live = Redis {
        engine: running.engine(engine),
        container: running.name.clone(),
    };
    wait_loaded(&live, deadline).await?;
    Ok(running)
}

/// Waits, up to `deadline`, until no container runs on `volume`, engine
/// wide: two Redis servers on one volume overwrite each other's dump. On
/// a Swarm the old task may still be saving after its service went to 0.
async fn volume_free(engine: &Engine, volume: &str, deadline: Instant) -> Result<()> {
    wait::until(
        Limits::until(deadline, VOLUME_POLL),
        || async {
            let running = engine.running_on_volume(volume).await?;
            Ok(if running.is_empty() {
                Seen::Ready(())
            } else {
                Seen::Not(running.join(", "))
            })
        },
        |running| anyhow!("{running} still run on the volume {volume}"),
    )
    .await
}

/// How often a volume is looked at until nothing runs on it.
const VOLUME_POLL: Duration = Duration::from_millis(200);

/// Stops the live Redis before its volume is written: its container on one
/// engine; on a Swarm its service, so the swarm starts no replacement.
async fn stop_redis(engine: &Engine, project: &Project, redis: &Container) -> Result<()> {
    match project.orchestrator {
        Orchestrator::Swarm => {
            // Within the cleanup's own deadline, so that this one is what
            // says why; a task still saving is waited for on the volume.
            let deadline =
                Instant::now() + super::CLEANUP_DEADLINE.saturating_sub(Duration::from_secs(5));
            crate::swarm::backup::stop_redis(engine, &project.name, redis, deadline).await
        }
        Orchestrator::Engine => engine.stop(&redis.name, None).await,
    }
}

/// Waits until the scratch Redis has rewritten its AOF: enabled, no rewrite
/// running or scheduled. A failed rewrite ends the wait at once.
async fn wait_aof(redis: &Redis<'_>, deadline: Instant) -> Result<()> {
    let probe = || async {
        let info = redis.info("persistence").await?;
        let get = |key: &str| info.get(key).map(String::as_str);
        let wanted = [
            ("aof_enabled", "1"),
            ("aof_rewrite_in_progress", "0"),
            ("aof_rewrite_scheduled", "0"),
        ];
        if wanted.iter().any(|(key, value)| get(key) != Some(value)) {
            let seen: Vec<String> = wanted
                .iter()
                .map(|(key, _)| format!("{key}={}", get(key).unwrap_or("?")))
                .collect();
            return Ok(Seen::Not(seen.join(" ")));
        }
        match get("aof_last_bgrewrite_status") {
            Some("ok") => Ok(Seen::Ready(())),
            status => Err(anyhow!(
                "redis could not write its AOF (status {})",
                status.unwrap_or("?")
            )),
        }
    };
    wait::until(Limits::until(deadline, AOF_INTERVAL), probe, |_| {
        anyhow!("redis did not write its AOF in time")
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restored_files_keep_their_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("docker-compose.yml");
        std::fs::write(&existing, "x").unwrap();
        std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(restored_mode(&existing, 0o644).unwrap(), 0o640);
        let env = dir.path().join(".env");
        assert_eq!(restored_mode(&env, 0o644).unwrap(), 0o600);
        assert_eq!(restored_mode(&env, 0o600).unwrap(), 0o600);
        let new = dir.path().join("new.yml");
        assert_eq!(restored_mode(&new, 0o4755).unwrap(), 0o755);
    }

    #[test]
    fn staging_writes_beside_the_target_and_a_drop_undoes_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let compose = dir.path().join("compose");
        let mut staged = Staged::default();
        make_dirs(&compose, &mut staged.made).unwrap();
        let target = compose.join("x.yml");
        let temporary = stage_file(&target, b"x", 0o640).unwrap();
        assert_eq!(temporary.parent(), Some(compose.as_path()));
        let mode = std::fs::metadata(&temporary).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        staged.writes.push(LocalWrite {
            path: target.clone(),
            label: "compose/x.yml".to_owned(),
            mode: 0o640,
            previous: None,
            temporary: Some(temporary),
        });
        drop(staged);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left"
        );

        let mut staged = Staged::default();
        make_dirs(&compose, &mut staged.made).unwrap();
        let temporary = stage_file(&target, b"x", 0o600).unwrap();
        staged.writes.push(LocalWrite {
            path: target.clone(),
            label: "compose/x.yml".to_owned(),
            mode: 0o600,
            previous: None,
            temporary: Some(temporary),
        });
        assert_eq!(staged.commit().unwrap(), ["compose/x.yml"]);
        drop(staged);
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
        assert_eq!(std::fs::read_dir(&compose).unwrap().count(), 1);
    }

    #[test]
    fn staged_files_of_a_killed_restore_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let compose = dir.path().join("compose");
        std::fs::create_dir(&compose).unwrap();
        let dead = compose.join(".x.yml.cryptus-restore-4000000");
        let mine = compose.join(format!(".x.yml.cryptus-restore-{}", std::process::id()));
        let parent = std::os::unix::process::parent_id();
        let alive = compose.join(format!(".x.yml.cryptus-restore-{parent}"));
        let other = compose.join("x.yml");
        for path in [&dead, &mine, &alive, &other] {
            std::fs::write(path, "x").unwrap();
        }
        let project = Project::new(dir.path(), "p").unwrap();
        let printer = Printer::new(crate::output::Verbosity::Quiet, false);
        sweep_staged(&project, &printer);
        assert!(!dead.exists());
        assert!(mine.exists() && alive.exists() && other.exists());
    }

    #[test]
    fn only_a_regular_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_unless_plain_file(&dir.path().join("absent.yml")).is_ok());
        let file = dir.path().join("file.yml");
        std::fs::write(&file, "x").unwrap();
        assert!(refuse_unless_plain_file(&file).is_ok());
        let sub = dir.path().join("extra.yml");
        std::fs::create_dir(&sub).unwrap();
        let err = refuse_unless_plain_file(&sub).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let link = dir.path().join("link.yml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let err = refuse_unless_plain_file(&link).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn state_files_must_read_back() {
        assert!(check_state("history.json", b"[]".to_vec()).is_ok());
        assert!(check_state("history.json", b"\n".to_vec()).is_ok());
        assert!(check_state("replicas.json", br#"{"blue":3}"#.to_vec()).is_ok());
        for (name, bad) in [
            ("history.json", b"not json".to_vec()),
            ("history.json", vec![0xff, 0xfe]),
            ("replicas.json", br#"{"purple":3}"#.to_vec()),
            ("replicas.json", br#"{"blue":-1}"#.to_vec()),
            ("other.json", b"[]".to_vec()),
        ] {
            assert!(check_state(name, bad.clone()).is_err(), "{name} {bad:?}");
        }
    }
}
