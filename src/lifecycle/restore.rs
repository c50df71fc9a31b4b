//! What a start restores, and its record: nginx's recorded state read
//! (upstream file, history, started releases) and checked against what
//! nginx serves, `recorded::decide` asked, the release's image checked; after
//! the start, the started release and any repair written down.

use std::collections::BTreeMap;

use anyhow::Result;
use tokio::time::Instant;

use super::services::Change;
use crate::compose::MountKind;
use crate::context::{Stack, of_service, release_of};
use crate::engine::Container;
use crate::error::failed_with_hint;
use crate::health;
use crate::nginx;
use crate::recorded;
use crate::stack::{Color, LB_SERVICE, Release, volume_name};

/// What `start` restores, with what it was read from.
pub(super) struct Restore {
    pub(super) plan: recorded::Plan,
    pub(super) release: Release,
    /// The releases former starts recorded.
    started: BTreeMap<Color, Release>,
    /// The active color's running containers before this run.
    running_before: u32,
    upstream_missing: bool,
}

impl Stack<'_> {
    /// Refuses, as [`Stack::up`] would, when what serves cannot be known or
    /// its image is gone; reads only, so a restart can refuse before it
    /// stops anything. Without an nginx container there is nothing to read
    /// yet, and nothing serves: `up` reads the volume itself.
    pub async fn check_restorable(&self) -> Result<()> {
        if self.engine.inspect(&self.lb_container()).await?.is_none() {
            return Ok(());
        }
        let existing = self.containers().await?;
        let restore = self.restore_plan(&existing).await?;
        self.check_release_image(&restore).await
    }

    /// Reads what is recorded and decides what to restore, or refuses.
    pub(super) async fn restore_plan(&self, existing: &[Container]) -> Result<Restore> {
        let nginx = self.nginx();
        let (upstream, history, started) = tokio::join!(
            nginx.read(nginx::UPSTREAM_FILE),
            nginx.read(crate::history::HISTORY_FILE),
            nginx.read(recorded::STARTED_FILE),
        );
        let (upstream, history, started) = (upstream?, history?, started?);
        let entries = match history.as_deref() {
            Some(text) if !text.trim().is_empty() => {
                crate::history::parse(text).map_err(|err| format!("{err:#}"))
            }
            _ => Ok(Vec::new()),
        };
        let started = recorded::parse_started(started.as_deref());
        let color_state = |color: Color| {
            let containers = of_service(existing, color.service());
            recorded::ColorState {
                release: release_of(&containers),
                replicas: containers.iter().map(|c| c.number).max().unwrap_or(0),
                running: u32::try_from(containers.iter().filter(|c| c.running).count())
                    .unwrap_or(u32::MAX),
            }
        };
        let facts = recorded::Facts {
            upstream: self.upstream_as_served(upstream.as_deref()).await,
            history: entries.as_deref().map_err(Clone::clone),
            started: &started,
            blue: color_state(Color::Blue),
            green: color_state(Color::Green),
        };
        let upstream_missing = facts.upstream == recorded::Upstream::Missing;
        let plan = recorded::decide(&facts).map_err(|refusal| {
            failed_with_hint(
                refusal.message,
                refusal
                    .hint
                    .replace(recorded::RESET_ALL, &self.reset_command(true))
                    .replace(recorded::RESET, &self.reset_command(false)),
            )
        })?;
        let running_before = facts.color(plan.color).running;
        let release = match &plan.release {
            Some(release) => release.clone(),
            None => self.default_release(plan.color).await?,
        };
        Ok(Restore {
            plan,
            release,
            running_before,
            upstream_missing,
            started,
        })
    }

    /// The upstream file's color, unless a running nginx serves another:
    /// then the file cannot be trusted to say what serves, and is treated
    /// as unreadable (with a warning naming both).
    async fn upstream_as_served(&self, text: Option<&str>) -> recorded::Upstream {
        let upstream = recorded::Upstream::from_text(text);
        let recorded::Upstream::Active(color) = upstream else {
            return upstream;
        };
        let lb = self
            .engine
            .inspect(&self.lb_container())
            .await
            .ok()
            .flatten();
        let Some(addr) = lb
            .filter(|lb| lb.running)
            .as_ref()
            .and_then(Self::status_addr)
        else {
            return upstream;
        };
        match nginx::served_color(&health::client(), &addr).await {
            Ok(served) if served != color => {
                self.printer.warn(format!(
                    "nginx serves {served}, but its upstream file says {color}"
                ));
                recorded::Upstream::Unreadable
            }
            _ => upstream,
        }
    }

    /// The command that clears nginx's recorded state: the upstream file, or
    /// (`all`) the history and the started releases too.
    fn reset_command(&self, all: bool) -> String {
        let volume = self
            .compose
            .service(LB_SERVICE)
            .and_then(|s| {
                s.mounts
                    .iter()
                    .find(|m| m.kind == MountKind::Volume && m.target == nginx::STATE_DIR)
            })
            .map_or_else(
                || volume_name(&self.project.name, "nginx-state"),
                |m| volume_name(&self.project.name, &m.source),
            );
        let image = self
            .compose
            .service(LB_SERVICE)
            .and_then(|s| s.image.clone())
            .unwrap_or_else(|| "nginx".to_owned());
        let files = if all {
            format!(
                "/state/{} /state/{} /state/{}",
                nginx::UPSTREAM_FILE,
                crate::history::HISTORY_FILE,
                recorded::STARTED_FILE
            )
        } else {
            format!("/state/{}", nginx::UPSTREAM_FILE)
        };
        format!("`docker run --rm -v {volume}:/state {image} rm -f {files}`")
    }

    /// The restored release's image must still be here.
    pub(super) async fn check_release_image(&self, restore: &Restore) -> Result<()> {
        let color = restore.plan.color;
        let release = &restore.release;
        if restore.plan.source == recorded::Source::Fresh
            || restore.plan.source == recorded::Source::Containers
        {
            return self
                .check_images(&[(color.service().to_owned(), release.image.clone())])
                .await;
        }
        if self.engine.image_labels(&release.image).await?.is_some() {
            return Ok(());
        }
        Err(failed_with_hint(
            format!(
                "{color} served {} from image {}, which the engine no longer has; nothing else would be the deployed release",
                release.version, release.image
            ),
            format!(
                "load or pull {} again, then run `cryptus start`",
                release.image
            ),
        ))
    }

    /// Records what a start restored: the release it runs (for a stack
    /// never deployed), and, when it repaired served state, a history entry.
    pub(super) async fn record_restore(
        &self,
        restore: &Restore,
        release: &Release,
        changes: &BTreeMap<String, Change>,
        began: Instant,
    ) {
        let color = restore.plan.color;
        let prefix = format!("{}-{}-", self.project.name, color.service());
        let ours: Vec<(&String, &Change)> = changes
            .iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .collect();
        let made: Vec<String> = ours
            .iter()
            .filter(|(_, change)| matches!(change, Change::Created | Change::Recreated))
            .map(|(name, _)| (*name).clone())
            .collect();
        self.record_started(restore, release).await;
        let Some(reason) =
            recorded::repair_reason(&restore.plan, release, &made, restore.upstream_missing)
        else {
            self.publish_metrics(Some(color), None).await;
            return;
        };
        self.printer.info(format!("repaired: {reason}"));
        let side = |replicas: u32| crate::history::Side {
            color,
            image: release.image.clone(),
            version: release.version.clone(),
            image_id: None,
            replicas,
        };
        let entry = crate::history::Entry {
            time: chrono::Utc::now(),
            operation: crate::history::operation::REPAIR.to_owned(),
            user: crate::lock::user(),
            host: crate::lock::hostname(),
            from: side(restore.running_before),
            to: side(u32::try_from(ours.len()).unwrap_or(u32::MAX)),
            outcome: crate::history::Outcome::Ok,
            reason: Some(reason),
            durations: BTreeMap::from([("total".to_owned(), began.elapsed().as_secs_f64())]),
            hooks: Vec::new(),
        };
        let history = match crate::history::record(&self.nginx(), entry, self.printer).await {
            Ok(history) => Some(history),
            Err(err) => {
                self.printer.warn(format!("recording the repair: {err:#}"));
                None
            }
        };
        self.publish_metrics(Some(color), history).await;
    }

    /// Keeps the started releases current, so a stack that is never
    /// deployed (or one an older cryptus started) can be repaired at the
    /// release it runs. A failure is a warning: the stack is up.
    async fn record_started(&self, restore: &Restore, release: &Release) {
        let color = restore.plan.color;
        if restore.started.get(&color) == Some(release) {
            return;
        }
        let mut started = restore.started.clone();
        started.insert(color, release.clone());
        let written = match serde_json::to_string(&started) {
            Ok(text) => {
                self.nginx()
                    .write(&[(recorded::STARTED_FILE, &text)], true)
                    .await
            }
            Err(err) => Err(err.into()),
        };
        if let Err(err) = written {
            self.printer
                .warn(format!("recording the started release: {err:#}"));
        }
    }
}
