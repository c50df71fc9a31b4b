//! Redis, through `redis-cli` run inside its container by the engine: health
//! checks and backups need no network path to Redis and no client library.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::time::Instant;

use crate::engine::{ContainerSpec, Engine, MountSpec, PROJECT_LABEL};
use crate::wait::{self, Limits, Seen};

/// How often a wait on Redis looks again.
const POLL_EVERY: Duration = Duration::from_millis(50);

pub struct Redis<'a> {
    pub engine: &'a Engine,
    pub container: String,
}

impl Redis<'_> {
    /// Runs `redis-cli` with `args` and returns its output; a Redis error
    /// reply (`ERR ...`) is an error.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let mut command = vec!["redis-cli", "--no-auth-warning"];
        command.extend_from_slice(args);
        let output = self.engine.exec(&self.container, &command).await?;
        let text = output.stdout.trim().to_owned();
        if output.code != 0 || text.starts_with("ERR") || text.starts_with("NOAUTH") {
            bail!(
                "redis-cli {} in {} failed: {}",
                args.join(" "),
                self.container,
                format!("{text} {}", output.stderr.trim()).trim()
            );
        }
        Ok(text)
    }

    pub async fn ping(&self) -> Result<()> {
        let answer = self.cli(&["ping"]).await?;
        if answer != "PONG" {
            bail!("redis answered {answer:?} to PING");
        }
        Ok(())
    }

    /// `INFO section` as a map.
    pub async fn info(&self, section: &str) -> Result<BTreeMap<String, String>> {
        Ok(parse_info(&self.cli(&["info", section]).await?))
    }
}

impl Redis<'_> {
    /// `CONFIG GET name`.
    pub async fn config(&self, name: &str) -> Result<String> {
        let answer = self.cli(&["config", "get", name]).await?;
        let mut lines = answer.lines();
        match (lines.next(), lines.next()) {
            (Some(key), Some(value)) if key == name => Ok(value.to_owned()),
            _ => bail!("redis answered {answer:?} to CONFIG GET {name}"),
        }
    }

    /// Takes a snapshot: BGSAVE, then waits until a save that began after it
    /// finished, and succeeded. Waits for a save already running first.
    pub async fn snapshot(&self, deadline: Instant) -> Result<()> {
        loop {
            let before = self.info("persistence").await?;
            if before.get("rdb_bgsave_in_progress").map(String::as_str) == Some("1") {
                self.wait_bgsave(deadline).await?;
                continue;
            }
            let saves_before = saves(&before);
            self.bgsave().await?;
            return self.wait_saved(saves_before, deadline).await;
        }
    }

    /// Asks for a background save.
    async fn bgsave(&self) -> Result<()> {
        match self.cli(&["bgsave"]).await {
            // "started", or "scheduled" behind an AOF rewrite: either way
            // a save will run.
            Ok(text) if text.contains("Background saving") => Ok(()),
            Ok(text) => bail!("redis answered {text:?} to BGSAVE"),
            Err(err) if format!("{err:#}").contains("already in progress") => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Waits until a save after the `saves_before`th has finished, and
    /// succeeded.
    async fn wait_saved(&self, saves_before: Option<u64>, deadline: Instant) -> Result<()> {
        wait::until(
            Limits::until(deadline, POLL_EVERY),
            || async {
                self.wait_bgsave(deadline).await?;
                let after = saves(&self.info("persistence").await?);
                // Redis before 7.0 has no rdb_saves: the finished save is ours.
                Ok(if saves_before.is_none() || after > saves_before {
                    Seen::Ready(())
                } else {
                    Seen::Not(format!("{after:?} saves"))
                })
            },
            |_| anyhow!("redis did not take a snapshot in time"),
        )
        .await
    }

    /// The number of keys in every database, from `INFO keyspace`.
    pub async fn keys(&self) -> Result<u64> {
        let info = self.info("keyspace").await?;
        Ok(count_keys(&info))
    }

    /// Waits until no BGSAVE runs and the last one succeeded. LASTSAVE alone
    /// is not enough: it has one second resolution.
    async fn wait_bgsave(&self, deadline: Instant) -> Result<()> {
        wait::until(
            Limits::until(deadline, POLL_EVERY),
            || async {
                let info = self.info("persistence").await?;
                if info.get("rdb_bgsave_in_progress").map(String::as_str) != Some("0") {
                    return Ok(Seen::Not("a save in progress".to_owned()));
                }
                match info.get("rdb_last_bgsave_status").map(String::as_str) {
                    Some("ok") => Ok(Seen::Ready(())),
                    status => bail!(
                        "redis's snapshot failed (rdb_last_bgsave_status {}); is its disk full?",
                        status.unwrap_or("?")
                    ),
                }
            },
            |_| anyhow!("redis's snapshot did not finish in time"),
        )
        .await
    }
}

/// How many saves Redis has made (`rdb_saves`, Redis 7.0 on).
fn saves(persistence: &BTreeMap<String, String>) -> Option<u64> {
    persistence.get("rdb_saves").and_then(|n| n.parse().ok())
}

/// Parses `INFO` output: `key:value` lines, `#` section headers.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Sums `keys=` over the `dbN:keys=..,expires=..` lines of `INFO keyspace`.
pub fn count_keys(keyspace: &BTreeMap<String, String>) -> u64 {
    keyspace
        .iter()
        .filter(|(db, _)| db.starts_with("db"))
        .filter_map(|(_, value)| {
            value
                .split(',')
                .find_map(|field| field.strip_prefix("keys="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

/// What a [`Scratch`] Redis loads: `dir/file`, from `volume` (name, mount
/// point) when given, after writing `dump` there when given.
pub struct Load<'d> {
    pub dir: &'d str,
    pub file: &'d str,
    pub volume: Option<(String, String)>,
    pub dump: Option<&'d [u8]>,
    /// More `redis-server` options (the live AOF file names).
    pub args: Vec<String>,
}

/// What a scratch Redis is for; each has one fixed container name, so a
/// later run finds what a killed one left.
pub const SCRATCH_PURPOSES: [&str; 2] = ["restore", "check"];

/// The container name of the project's scratch Redis for `purpose`.
pub fn scratch_name(project: &str, purpose: &str) -> String {
    format!("{project}-redis-{purpose}")
}

/// Removes the scratch Redis containers a killed backup or restore left
/// (`<project>-redis-restore`, `<project>-redis-check`), saying so. Call it
/// while holding the deploy lock, before starting the real Redis: a scratch
/// left on the data volume must be gone before the real one starts, or two
/// servers would write one volume. Returns the names removed.
pub async fn sweep_scratch(
    engine: &Engine,
    project: &str,
    printer: &crate::output::Printer,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for purpose in SCRATCH_PURPOSES {
        let name = scratch_name(project, purpose);
        if engine.inspect(&name).await?.is_none() {
            continue;
        }
        engine
            .remove(&name, true)
            .await
            .with_context(|| format!("removing {name}, a scratch redis an interrupted run left"))?;
        printer.warn(format!(
            "removed {name}, a scratch redis left by an interrupted backup or restore"
        ));
        removed.push(name);
    }
    Ok(removed)
}

/// A throwaway Redis beside the real one, on no network: it loads a dump to
/// count its keys (proving the dump loads) or to restore it onto a volume.
pub struct Scratch<'a> {
    engine: &'a Engine,
    pub name: String,
}

impl<'a> Scratch<'a> {
    /// Starts `redis-server` from `image` with AOF off, loading what `load`
    /// says, as the container `<project>-redis-<purpose>`.
    pub async fn start(
        engine: &'a Engine,
        project: &str,
        purpose: &str,
        image: &str,
        load: Load<'_>,
    ) -> Result<Scratch<'a>> {
        let name = scratch_name(project, purpose);
        engine.remove(&name, true).await?;
        engine
            .create_container(&scratch_spec(&name, project, image, &load))
            .await?;
        let scratch = Scratch { engine, name };
        let started = async {
            if let Some(dump) = load.dump {
                engine
                    .write_files(&scratch.name, load.dir, &[(load.file, dump, 0o644)])
                    .await?;
            }
            engine.start(&scratch.name).await
        }
        .await;
        if let Err(err) = started {
            scratch.remove().await;
            return Err(err);
        }
        Ok(scratch)
    }

    pub fn redis(&self) -> Redis<'a> {
        Redis {
            engine: self.engine,
            container: self.name.clone(),
        }
    }

    /// Waits until it answers and has loaded its data.
    pub async fn ready(&self, deadline: Instant) -> Result<()> {
        wait_loaded(&self.redis(), deadline).await
    }

    pub async fn remove(self) {
        let _ = self.engine.remove(&self.name, true).await;
    }
}

/// The scratch container `name`: `redis-server` with AOF and saving off,
/// loading `load`'s file, on no network (it has no networks).
fn scratch_spec(name: &str, project: &str, image: &str, load: &Load<'_>) -> ContainerSpec {
    let mut command: Vec<String> = [
        "redis-server",
        "--appendonly",
        "no",
        "--save",
        "",
        "--dir",
        load.dir,
        "--dbfilename",
        load.file,
        "--protected-mode",
        "no",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    command.extend(load.args.iter().cloned());
    ContainerSpec {
        name: name.to_owned(),
        image: image.to_owned(),
        command: Some(command),
        labels: BTreeMap::from([(PROJECT_LABEL.to_owned(), project.to_owned())]),
        mounts: load
            .volume
            .iter()
            .map(|(source, target)| MountSpec::Volume {
                name: Some(source.clone()),
                target: target.clone(),
                read_only: false,
            })
            .collect(),
        ..Default::default()
    }
}

/// Waits until Redis answers PING and has finished loading its data; a
/// container that stopped meanwhile fails the wait at once.
pub async fn wait_loaded(redis: &Redis<'_>, deadline: Instant) -> Result<()> {
    wait::until(
        Limits::until(deadline, POLL_EVERY),
        || async {
            let err = match redis.ping().await {
                Ok(()) => {
                    let info = redis.info("persistence").await?;
                    return Ok(match info.get("loading").map(String::as_str) {
                        Some("0") => Seen::Ready(()),
                        _ => Seen::Not("loading".to_owned()),
                    });
                }
                Err(err) => err,
            };
            if let Some(container) = redis.engine.inspect(&redis.container).await?
                && matches!(container.state.as_str(), "exited" | "dead")
            {
                bail!(
                    "{} stopped before it loaded its data (exit code {}): {err:#}",
                    redis.container,
                    container.exit_code.unwrap_or_default()
                );
            }
            Ok(Seen::Not(format!("{err:#}")))
        },
        |_| anyhow!("{} did not load its data in time", redis.container),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_sections() {
        let info = parse_info(
            "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\n",
        );
        assert_eq!(info["rdb_bgsave_in_progress"], "0");
        assert_eq!(info["rdb_last_bgsave_status"], "ok");
        assert_eq!(info["aof_enabled"], "1");
        assert!(!info.contains_key("# Persistence"));
    }

    #[test]
    fn a_scratch_redis_loads_its_file_from_the_volume_on_no_network() {
        let load = Load {
            dir: "/data",
            file: "dump.rdb",
            volume: Some(("demo_redis-data".to_owned(), "/data".to_owned())),
            dump: None,
            args: vec!["--appendfilename".to_owned(), "live.aof".to_owned()],
        };
        let spec = scratch_spec("demo-redis-restore", "demo", "redis:7-alpine", &load);
        assert_eq!(spec.name, "demo-redis-restore");
        assert_eq!(spec.image, "redis:7-alpine");
        let command = spec.command.unwrap().join(" ");
        assert!(
            command.starts_with(
                "redis-server --appendonly no --save  --dir /data --dbfilename dump.rdb"
            ),
            "{command}"
        );
        assert!(command.ends_with("--appendfilename live.aof"), "{command}");
        assert_eq!(spec.labels[PROJECT_LABEL], "demo");
        assert_eq!(
            spec.mounts,
            [MountSpec::Volume {
                name: Some("demo_redis-data".to_owned()),
                target: "/data".to_owned(),
                read_only: false,
            }]
        );
        assert!(spec.networks.is_empty() && spec.ports.is_empty());
    }

    #[test]
    fn keys_over_every_database() {
        let info = parse_info(
            "# Keyspace\r\ndb0:keys=10000,expires=2,avg_ttl=0\r\ndb3:keys=5,expires=0,avg_ttl=0\r\n",
        );
        assert_eq!(count_keys(&info), 10005);
        assert_eq!(count_keys(&parse_info("# Keyspace\r\n")), 0);
    }
}
