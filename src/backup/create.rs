//! Writing a backup: Redis's snapshot, nginx's configuration and live
//! upstream, the compose files and `.env`, and the deployment history.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use super::{
    COMPOSE_ARCHIVE, Manifest, NGINX_ARCHIVE, Pending, REDIS_ARCHIVE, STATE_ARCHIVE, pack,
};
use crate::engine::{Container, Engine};
use crate::error::{failed, failed_with_hint};
use crate::interrupt;
use crate::lock;
use crate::nginx::{self, Nginx};
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;
use crate::redis::{Load, Redis, Scratch};
use crate::stack::{LB_SERVICE, REDIS_SERVICE};

/// How long Redis's snapshot may take.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, Serialize)]
pub struct Created {
    pub ok: bool,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub pruned: Vec<PathBuf>,
}

pub struct Options {
    pub out: PathBuf,
    pub keep: Option<usize>,
    pub lock: lock::Options,
}

pub async fn create(
    engine: &Engine,
    project: &Project,
    options: &Options,
    printer: &Printer,
    warnings: &Printer,
) -> Result<Created> {
    // From here SIGINT and SIGTERM unwind: the partial backup, the scratch
    // redis and the lock go.
    interrupt::catch();
    let containers: Vec<Container> = super::stack_containers(engine, project).await?;
    let redis = running_redis(project, &containers)?;

    // A deploy in progress finishes first: the backup sees a settled stack.
    let step = printer.step("taking the deploy lock");
    let lock = super::take_lock(
        engine,
        project,
        "backup",
        &redis.image,
        &options.lock,
        printer,
    )
    .await?;
    step.done();
    // The scratch that checks the snapshot runs beside redis (on a Swarm,
    // on redis's node), where redis's image surely is.
    let beside_redis = redis.engine(engine);
    let result = async {
        // What a killed run left goes first, under the lock: no live
        // backup or restore owns it.
        crate::redis::sweep_scratch(beside_redis, &project.name, warnings).await?;
        super::sweep_temporaries(&options.out, warnings)?;
        interrupt::or_interrupted(write(engine, project, &containers, options, printer)).await
    }
    .await;
    remove_scratch(beside_redis, project, printer).await;
    super::release_lock(lock, printer).await;
    result.map_err(|err| {
        super::as_failure(
            "the backup",
            "check that redis runs (`cryptus status`; `cryptus start` starts it), then run the backup again; nothing was written",
            err,
        )
    })
}

/// The project's redis container, which must run: the backup starts from
/// its snapshot.
fn running_redis<'c>(project: &Project, containers: &'c [Container]) -> Result<&'c Container> {
    let redis = containers
        .iter()
        .find(|c| c.service == REDIS_SERVICE)
        .ok_or_else(|| {
            failed_with_hint(
                format!("project {} has no redis container", project.name),
                "run `cryptus start` first",
            )
        })?;
    if !redis.running {
        return Err(failed_with_hint(
            format!("redis is not running ({} is {})", redis.name, redis.state),
            "run `cryptus start`, then back up",
        ));
    }
    Ok(redis)
}

/// Removes the scratch redis whatever happened: an interrupted wait drops
/// the future that would have removed it. A creation the signal cut short
/// is finished first ([`crate::engine::whole`]), so a late scratch is seen.
async fn remove_scratch(engine: &Engine, project: &Project, printer: &Printer) {
    let scratch = crate::redis::scratch_name(&project.name, "check");
    let removed = engine.remove(&scratch, true);
    if let Err(err) = super::cleanup(removed).await {
        printer.warn(format!("removing {scratch}: {err:#}"));
    }
}

/// Writes the backup from the containers found before the lock was taken.
async fn write(
    engine: &Engine,
    project: &Project,
    containers: &[Container],
    options: &Options,
    printer: &Printer,
) -> Result<Created> {
    let redis = running_redis(project, containers)?;
    let lb = containers.iter().find(|c| c.service == LB_SERVICE);
    let time = super::fresh_second(&options.out).await?;
    let mut pending = Pending::start(&options.out, time)?;

    let step = printer.step("snapshotting redis");
    let keys = add_redis(redis.engine(engine), project, redis, &mut pending).await?;
    step.done_with(format!("{keys} keys"));

    let step = printer.step("nginx's configuration and live upstream");
    let (files, mut state) = nginx_files(engine, project, lb).await?;
    if project.orchestrator == Orchestrator::Swarm {
        let (name, bytes) = crate::swarm::backup::state_file(engine, &project.name).await?;
        state.push((name, bytes, 0o644));
    }
    super::check_fits(NGINX_ARCHIVE, unpacked_size(&files))?;
    pending.add(NGINX_ARCHIVE, &pack(&files)?)?;
    step.done();

    let step = printer.step("compose files, .env and the deployment history");
    let compose = compose_files(project)?;
    super::check_fits(COMPOSE_ARCHIVE, unpacked_size(&compose))?;
    super::check_fits(STATE_ARCHIVE, unpacked_size(&state))?;
    pending.add(COMPOSE_ARCHIVE, &pack(&compose)?)?;
    pending.add(STATE_ARCHIVE, &pack(&state)?)?;
    step.done();

    add_monitoring(engine, containers, &mut pending, printer).await?;

    let (dir, manifest) = pending.commit(&project.name, keys, time)?;
    let pruned = match options.keep {
        Some(keep) => super::prune(&options.out, keep)?,
        None => Vec::new(),
    };
    Ok(Created {
        ok: true,
        dir,
        manifest,
        pruned,
    })
}

/// A file to pack: its path in the archive, its content and its mode.
type Packed = (String, Vec<u8>, u32);

/// nginx's files: the local nginx.conf and, from the load balancer, the
/// live upstream and http files; and its state (the history and the
/// pending replicas), for the state archive.
async fn nginx_files(
    engine: &Engine,
    project: &Project,
    lb: Option<&Container>,
) -> Result<(Vec<Packed>, Vec<Packed>)> {
    let conf = project.dir.join("nginx/nginx.conf");
    let mut files = vec![("nginx.conf".to_owned(), read_local(&conf)?, mode_of(&conf)?)];
    let mut state = Vec::new();
    if let Some(lb) = lb {
        let nginx = Nginx::named(lb.engine(engine), lb.name.clone());
        for name in [nginx::UPSTREAM_FILE, nginx::HTTP_FILE] {
            if let Some(text) = nginx.read(name).await? {
                files.push((format!("cryptus/{name}"), text.into_bytes(), 0o644));
            }
        }
        for name in [
            crate::history::HISTORY_FILE,
            crate::switch::state::PENDING_FILE,
        ] {
            if let Some(text) = nginx.read(name).await? {
                state.push((name.to_owned(), text.into_bytes(), 0o644));
            }
        }
    }
    Ok((files, state))
}

/// Redis's snapshot into the backup, through `engine`, redis's own;
/// returns its key count.
async fn add_redis(
    engine: &Engine,
    project: &Project,
    redis: &Container,
    pending: &mut Pending,
) -> Result<u64> {
    let client = Redis {
        engine,
        container: redis.name.clone(),
    };
    let deadline = Instant::now() + SNAPSHOT_DEADLINE;
    client
        .snapshot(deadline)
        .await
        .with_context(|| format!("snapshotting redis in {}", redis.name))?;
    let dir = client.config("dir").await?;
    let file = client.config("dbfilename").await?;
    let path = format!("{}/{file}", dir.trim_end_matches('/'));
    let dump = engine
        .read_file(&redis.name, &path)
        .await
        .with_context(|| format!("reading redis's snapshot from {}", redis.name))?
        .ok_or_else(|| failed(format!("redis saved no {path} in {}", redis.name)))?;
    // The snapshot's key count comes from loading it: that also proves the
    // dump loads. Counting on the live Redis would race with its writes.
    super::check_fits(REDIS_ARCHIVE, dump.len() as u64)?;
    let keys = count_keys(engine, project, &redis.image, &dump, deadline).await?;
    pending.add(
        REDIS_ARCHIVE,
        &pack(&[("dump.rdb".to_owned(), dump, 0o600)])?,
    )?;
    Ok(keys)
}

/// The compose files and `.env` of the project, with their modes, by name.
fn compose_files(project: &Project) -> Result<Vec<Packed>> {
    let mut compose = Vec::new();
    let compose_dir = project.dir.join("compose");
    for entry in std::fs::read_dir(&compose_dir)
        .with_context(|| format!("reading {}", compose_dir.display()))?
    {
        let entry = entry.with_context(|| format!("reading {}", compose_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if super::is_compose_file(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            compose.push((name, read_local(&path)?, mode_of(&path)?));
        }
    }
    compose.sort();
    withhold_secret_values(project, &mut compose);
    Ok(compose)
}

/// Withholds from the backup's `.env` the value of every variable that
/// feeds a secret or a config through `environment:`: a secret appears in
/// no backup in clear text. The names come from every compose file backed
/// up and, when it loads, from the model (which also sees files included
/// from elsewhere).
fn withhold_secret_values(project: &Project, compose: &mut [Packed]) {
    let texts: Vec<&[u8]> = compose
        .iter()
        .filter(|(name, _, _)| name != ".env")
        .map(|(_, content, _)| content.as_slice())
        .collect();
    let mut names = super::withheld::named_in_compose(&texts);
    if let Ok(model) = project.load() {
        for source in model.secrets.values().chain(model.configs.values()) {
            if let crate::compose::Source::Environment { variable, .. } = source {
                names.insert(variable.clone());
            }
        }
    }
    if let Some((_, content, _)) = compose.iter_mut().find(|(name, _, _)| name == ".env") {
        *content = super::withheld::redact(content, &names).text;
    }
}

/// Prometheus's and Grafana's data, for those of them that exist.
async fn add_monitoring(
    engine: &Engine,
    containers: &[Container],
    pending: &mut Pending,
    printer: &Printer,
) -> Result<()> {
    for (archive, service, dir) in super::MONITORING_ARCHIVES {
        let Some(container) = containers.iter().find(|c| c.service == service) else {
            continue;
        };
        let step = printer.step(format!("{service}'s data"));
        let engine = container.engine(engine);
        let tar = if service == "prometheus" && container.running {
            prometheus_snapshot(engine, container).await?
        } else {
            engine.download(&container.name, dir).await?
        };
        if let Some(tar) = tar {
            // The tar's own size bounds what its files hold.
            super::check_fits(archive, tar.len() as u64)?;
            pending.add(archive, &super::gzip(&tar)?)?;
        }
        step.done();
    }
    Ok(())
}

/// A consistent copy of Prometheus's data: its snapshot API writes the
/// blocks (the head included) under /prometheus/snapshots, which is copied
/// out and removed.
async fn prometheus_snapshot(engine: &Engine, prometheus: &Container) -> Result<Option<Vec<u8>>> {
    let addr = prometheus
        .published_addr(9090)
        .ok_or_else(|| failed(format!("{} publishes no port 9090", prometheus.name)))?;
    let answer: serde_json::Value = crate::health::client()
        .post(format!("http://{addr}/api/v1/admin/tsdb/snapshot"))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .context("asking Prometheus for a snapshot")?
        .json()
        .await
        .context("reading Prometheus's snapshot answer")?;
    let name = answer["data"]["name"].as_str().ok_or_else(|| {
        failed_with_hint(
            format!("Prometheus made no snapshot: {answer}"),
            "run it with --web.enable-admin-api, as the shipped compose file does",
        )
    })?;
    if name.contains(['/', '.']) {
        return Err(failed(format!("Prometheus named its snapshot {name:?}")));
    }
    let path = format!("/prometheus/snapshots/{name}");
    let tar = engine.download(&prometheus.name, &path).await?;
    let _ = engine
        .shell(&prometheus.name, r#"rm -rf "$1""#, &[&path], b"")
        .await;
    Ok(tar)
}

async fn count_keys(
    engine: &Engine,
    project: &Project,
    image: &str,
    dump: &[u8],
    deadline: Instant,
) -> Result<u64> {
    let load = Load {
        dir: "/tmp",
        file: "dump.rdb",
        volume: None,
        dump: Some(dump),
        args: Vec::new(),
    };
    let scratch = Scratch::start(engine, &project.name, "check", image, load).await?;
    let counted = async {
        scratch.ready(deadline).await?;
        scratch.redis().keys().await
    }
    .await;
    scratch.remove().await;
    counted.context("loading the snapshot to check it")
}

/// A file's permission bits, recorded in the archive so a restore can
/// give a new file the mode the old one had.
fn mode_of(path: &Path) -> Result<u32> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(meta.permissions().mode() & 0o777)
}

fn read_local(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// What packed files hold, unpacked.
fn unpacked_size(files: &[Packed]) -> u64 {
    files
        .iter()
        .map(|(_, content, _)| content.len() as u64)
        .sum()
}
