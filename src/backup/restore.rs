//! Restoring a backup: verify everything first, then Redis (safely, through
//! a temporary instance with AOF off), then the configuration and history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use tokio::time::Instant;

use super::{COMPOSE_ARCHIVE, Manifest, NGINX_ARCHIVE, REDIS_ARCHIVE, STATE_ARCHIVE, unpack};
use crate::engine::{Container, Engine};
use crate::error::{failed, failed_with_hint};
use crate::lock::{self, Lock};
use crate::nginx::Nginx;
use crate::output::Printer;
use crate::project::Project;
use crate::redis::{Load, Redis, Scratch, wait_loaded};
use crate::stack::{LB_SERVICE, REDIS_SERVICE};

const REDIS_DEADLINE: Duration = Duration::from_secs(120);

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
}

/// What a verified backup holds, unpacked and checked entry by entry.
pub struct Contents {
    pub manifest: Manifest,
    pub dump: Vec<u8>,
    pub nginx: BTreeMap<String, Vec<u8>>,
    pub compose: BTreeMap<String, Vec<u8>>,
    pub state: BTreeMap<String, Vec<u8>>,
    pub volumes: Vec<VolumeData>,
}

/// Monitoring data to put back: the service, where its data lives in the
/// container, and the files.
pub struct VolumeData {
    pub service: String,
    pub dir: String,
    pub files: Vec<(String, Vec<u8>)>,
}

/// Verifies a backup and unpacks it, refusing any unsafe entry. Nothing
/// outside the backup is touched.
pub fn open(dir: &Path) -> Result<Contents> {
    let (manifest, files) = super::verify(dir)?;
    let archive = |name: &str| -> Result<BTreeMap<String, Vec<u8>>> {
        match files.get(name) {
            Some(bytes) => unpack(name, bytes),
            None => Err(failed(format!(
                "{} is not a complete backup: it has no {name}",
                dir.display()
            ))),
        }
    };
    let mut redis = archive(REDIS_ARCHIVE)?;
    let dump = redis.remove("dump.rdb").ok_or_else(|| {
        failed(format!(
            "{REDIS_ARCHIVE} in {} holds no dump.rdb",
            dir.display()
        ))
    })?;
    if !dump.starts_with(b"REDIS") {
        return Err(failed(format!(
            "{REDIS_ARCHIVE} in {} holds no Redis snapshot",
            dir.display()
        )));
    }
    let mut volumes = Vec::new();
    for (archive, service, dir) in super::MONITORING_ARCHIVES {
        if files.contains_key(archive) {
            let unpacked = unpack(archive, &files[archive])?;
            volumes.push(VolumeData {
                service: service.to_owned(),
                dir: dir.to_owned(),
                files: super::strip_first(unpacked),
            });
        }
    }
    Ok(Contents {
        volumes,
        manifest,
        dump,
        nginx: archive(NGINX_ARCHIVE)?,
        compose: archive(COMPOSE_ARCHIVE)?,
        state: archive(STATE_ARCHIVE)?,
    })
}

pub async fn restore(
    engine: &Engine,
    project: &Project,
    from: &Path,
    contents: Contents,
    lock_options: &lock::Options,
    printer: &Printer,
) -> Result<Restored> {
    let containers = engine.containers(&project.name).await?;
    let redis = containers
        .iter()
        .find(|c| c.service == REDIS_SERVICE)
        .filter(|c| c.running)
        .ok_or_else(|| {
            failed_with_hint(
                format!("the redis of project {} is not running", project.name),
                "run `cryptus start` first; restore needs the running stack's configuration",
            )
        })?;
    if contents.manifest.project != project.name {
        printer.warn(format!(
            "the backup is of project {}; restoring it into project {}",
            contents.manifest.project, project.name
        ));
    }
    let step = printer.step("taking the deploy lock");
    let lock = Lock::acquire(
        engine,
        &project.name,
        "restore",
        &redis.image,
        lock_options,
        printer,
    )
    .await?;
    step.done();
    let result = apply(
        engine,
        project,
        from,
        &contents,
        redis,
        &containers,
        printer,
    )
    .await;
    if let Err(err) = lock.release().await {
        printer.warn(format!("releasing the deploy lock: {err:#}"));
    }
    result
}

async fn apply(
    engine: &Engine,
    project: &Project,
    from: &Path,
    contents: &Contents,
    redis: &Container,
    containers: &[Container],
    printer: &Printer,
) -> Result<Restored> {
    let lb = containers.iter().find(|c| c.service == LB_SERVICE);
    let step = printer.step(format!(
        "restoring redis ({} keys)",
        contents.manifest.redis_keys
    ));
    restore_redis(engine, project, redis, &contents.dump).await?;
    let live = Redis {
        engine,
        container: redis.name.clone(),
    };
    let keys = live.keys().await?;
    if keys != contents.manifest.redis_keys {
        step.fail();
        return Err(failed(format!(
            "redis holds {keys} keys after the restore, the backup's manifest says {}",
            contents.manifest.redis_keys
        )));
    }
    step.done_with(format!("{keys} keys"));

    let step = printer.step("configuration and history");
    let mut files = Vec::new();
    let mut wanted: Vec<(PathBuf, &[u8], String)> = Vec::new();
    if let Some(conf) = contents.nginx.get("nginx.conf") {
        wanted.push((
            project.dir.join("nginx/nginx.conf"),
            conf,
            "nginx/nginx.conf".to_owned(),
        ));
    }
    for (name, bytes) in &contents.compose {
        wanted.push((
            project.dir.join("compose").join(name),
            bytes,
            format!("compose/{name}"),
        ));
    }
    for (path, bytes, label) in wanted {
        if std::fs::read(&path).ok().as_deref() != Some(bytes) {
            crate::files::write_atomically(&path, bytes)?;
            files.push(label);
        }
    }
    let mut state = Vec::new();
    match lb {
        Some(lb) => {
            let nginx = Nginx {
                engine,
                container: lb.name.clone(),
            };
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
                state.extend(texts.iter().map(|(n, _)| n.clone()));
            }
            if lb.running && files.iter().any(|f| f == "nginx/nginx.conf") {
                match nginx.test().await? {
                    Ok(()) => nginx.reload().await?,
                    Err(reason) => printer.warn(format!(
                        "the restored nginx/nginx.conf does not pass nginx -t, so nginx keeps its running configuration: {reason}"
                    )),
                }
            }
        }
        None => {
            printer.warn("there is no nginx container; the deployment history was not restored")
        }
    }
    step.done();
    for VolumeData {
        service,
        dir,
        files,
    } in &contents.volumes
    {
        let Some(container) = containers.iter().find(|c| &c.service == service) else {
            printer.warn(format!(
                "there is no {service} container; its data was not restored"
            ));
            continue;
        };
        let step = printer.step(format!("{service}'s data"));
        // Into the stopped container's volume, then it starts again.
        let was_running = container.running;
        engine.stop(&container.name, None).await?;
        let entries: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|(path, content)| (path.as_str(), content.as_slice(), 0o644))
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
        state.push(format!("{service} data"));
    }
    // The live upstream is not put back: it names the containers running now.
    Ok(Restored {
        ok: true,
        from: from.to_path_buf(),
        manifest_time: contents.manifest.time,
        redis_keys: keys,
        files,
        state,
    })
}

/// Replaces Redis's data with `dump` safely. Redis ignores `dump.rdb` when
/// appendonly is on and an AOF exists, so the dump is loaded by a temporary
/// Redis on the same volume with appendonly off; if the live configuration
/// wants AOF, that instance turns it on, which rewrites the AOF from the
/// restored data. Then the real Redis starts again on it.
async fn restore_redis(
    engine: &Engine,
    project: &Project,
    redis: &Container,
    dump: &[u8],
) -> Result<()> {
    let live = Redis {
        engine,
        container: redis.name.clone(),
    };
    let dir = live.config("dir").await?;
    let file = live.config("dbfilename").await?;
    let wants_aof = live.config("appendonly").await? == "yes";
    let (volume, target) = redis
        .volumes
        .iter()
        .find(|(_, target)| dir.starts_with(target.as_str()))
        .cloned()
        .ok_or_else(|| anyhow!("redis keeps its data in {dir}, which is on no named volume"))?;

    engine.stop(&redis.name, None).await?;
    let deadline = Instant::now() + REDIS_DEADLINE;
    let loaded = async {
        let load = Load {
            dir: &dir,
            file: &file,
            volume: Some((volume, target)),
            dump: Some(dump),
        };
        let scratch = Scratch::start(engine, &project.name, "restore", &redis.image, load).await?;
        let result = async {
            scratch.ready(deadline).await?;
            if wants_aof {
                let loader = scratch.redis();
                loader.cli(&["config", "set", "appendonly", "yes"]).await?;
                wait_aof(&loader, deadline).await?;
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        scratch.remove().await;
        result
    }
    .await;
    // Whatever happened, the real redis runs again.
    engine.start(&redis.name).await?;
    loaded.context("loading the backup into redis")?;
    wait_loaded(&live, Instant::now() + REDIS_DEADLINE).await
}

async fn wait_aof(redis: &Redis<'_>, deadline: Instant) -> Result<()> {
    loop {
        let info = redis.info("persistence").await?;
        let get = |key: &str| info.get(key).map(String::as_str);
        if get("aof_enabled") == Some("1")
            && get("aof_rewrite_in_progress") == Some("0")
            && get("aof_rewrite_scheduled") == Some("0")
        {
            return match get("aof_last_bgrewrite_status") {
                Some("ok") => Ok(()),
                status => Err(anyhow!(
                    "redis could not write its AOF (status {})",
                    status.unwrap_or("?")
                )),
            };
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("redis did not write its AOF in time"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
