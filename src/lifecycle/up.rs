//! The order of a start: networks and volumes, nginx's recorded state,
//! the services in dependency order, nginx last, then the app through it;
//! under the deploy lock, undone on a failure or a signal. And what it
//! changed, for the summary.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::time::Instant;

use super::restore::Restore;
use super::services::{Change, Ensure};
use super::undo::Saga;
use crate::compose::Service;
use crate::context::Stack;
use crate::error::failed_with_hint;
use crate::interrupt;
use crate::lb;
use crate::stack::{Color, LB_SERVICE, Release};

/// What `up` did.
#[derive(Debug, Serialize)]
pub struct UpSummary {
    pub active: Color,
    pub version: String,
    pub changes: BTreeMap<String, Change>,
    pub created_networks: Vec<String>,
    pub created_volumes: Vec<String>,
    /// Where the load balancer answers, from this host.
    pub url: String,
}

impl UpSummary {
    pub fn changed(&self) -> bool {
        !self.created_networks.is_empty()
            || !self.created_volumes.is_empty()
            || self.changes.values().any(|c| *c != Change::Unchanged)
    }
}

impl Stack<'_> {
    /// Takes the deploy lock for `operation`, waiting up to `wait` for a
    /// deploy that holds it.
    pub async fn lock(&self, operation: &str, wait: Duration) -> Result<crate::lock::Lock> {
        let image = lb::service(self.compose, &self.project.dir)?
            .image
            .context("the nginx service names no image")?;
        let options = crate::lock::Options {
            wait,
            force_unlock: false,
        };
        // Not wrapped in `or_interrupted`: a signal ends only the wait inside
        // `acquire`, never the request that creates the lock, which would
        // leave a lock with no holder.
        crate::lock::Lock::acquire(
            self.engine,
            &self.project.name,
            operation,
            &image,
            &options,
            self.printer,
        )
        .await
        .map_err(|err| {
            // The lock's own hint names deploy's flags, which start lacks.
            match err.downcast_ref::<crate::error::UserError>() {
                Some(held) if held.message.contains("is held") => failed_with_hint(
                    held.message.clone(),
                    format!(
                        "{operation} waited {}s (its --timeout) for it; run it again once that operation ends. A lock whose holder is gone is broken by the next run",
                        wait.as_secs()
                    ),
                ),
                _ => err,
            }
        })
    }

    /// Brings the stack up: redis, the active color at its recorded release
    /// (blue with the compose image the first time), then nginx, and returns
    /// once the app answers through the load balancer. It takes the deploy
    /// lock; SIGINT and SIGTERM undo what it made.
    pub async fn up(&self, operation: &str, timeout: Duration) -> Result<UpSummary> {
        interrupt::catch();
        let deadline = Instant::now() + timeout;
        self.preflight().await?;
        let lock = self.lock(operation, timeout).await?;
        let result = self.up_locked(deadline).await;
        if let Err(err) = lock.release().await {
            self.printer
                .warn(format!("releasing the deploy lock: {err:#}"));
        }
        result
    }

    /// [`Stack::up`] under a lock the caller holds, after [`Stack::preflight`].
    /// On a failure or a signal, what this run created is removed and what
    /// it started is stopped again.
    pub async fn up_locked(&self, deadline: Instant) -> Result<UpSummary> {
        let began = Instant::now();
        let mut saga = Saga::default();
        interrupt::check()?;
        // A scratch redis a killed restore left on the data volume goes
        // before the real one starts: two servers never write one volume.
        crate::redis::sweep_scratch(self.engine, &self.project.name, self.printer).await?;
        match self.bring_up(deadline, &mut saga, began).await {
            Ok(summary) => Ok(summary),
            Err(err) => {
                self.undo(&saga).await;
                Err(err)
            }
        }
    }

    async fn bring_up(
        &self,
        deadline: Instant,
        saga: &mut Saga,
        began: Instant,
    ) -> Result<UpSummary> {
        let lb_service = lb::service(self.compose, &self.project.dir)?;
        self.networks_and_volumes(saga).await?;
        let mut changes = self.nginx_for_its_state(&lb_service, saga).await?;
        interrupt::check()?;
        let existing = self.containers().await?;
        let restore = self.restore_plan(&existing).await?;
        let active = restore.plan.color;
        let release = restore.release.clone();
        self.check_release_image(&restore).await?;
        let replicas = self.replicas_to_run(&restore);
        let services = self
            .run_services(active, &release, replicas, &existing, deadline, saga)
            .await?;
        // nginx resolves its upstream's names when it loads them: an app
        // container started anew may have a new address.
        let prefix = format!("{}-{}-", self.project.name, active.service());
        let reload = services
            .iter()
            .any(|(name, change)| name.starts_with(&prefix) && *change != Change::Unchanged);
        changes.extend(services);
        interrupt::check()?;
        // nginx may have been created early, to read its volume.
        let earlier = changes.get(&self.lb_container()).copied();
        let (lb_name, lb_change, started) = self
            .start_nginx(&lb_service, active, reload, earlier, deadline, saga)
            .await?;
        changes.insert(lb_name, lb_change);
        let addr = self.wait_served(active, deadline).await?;
        if started {
            // It got the version-less file: nginx -v is asked once, now.
            self.settle_http_file().await;
        }
        self.record_restore(&restore, &release, &changes, began)
            .await;
        Ok(summary(active, release, changes, saga, &addr))
    }

    /// Creates the project's missing networks and volumes, as one step.
    async fn networks_and_volumes(&self, saga: &mut Saga) -> Result<()> {
        let step = self.printer.step("networks and volumes");
        self.ensure_infrastructure(saga).await?;
        step.done_with(if saga.networks.is_empty() && saga.volumes.is_empty() {
            "present".to_owned()
        } else {
            format!(
                "created {}",
                [saga.networks.clone(), saga.volumes.clone()]
                    .concat()
                    .join(", ")
            )
        });
        Ok(())
    }

    /// The state lives in nginx's volume: without an nginx container,
    /// creates one (not started) to read it.
    async fn nginx_for_its_state(
        &self,
        lb_service: &Service,
        saga: &mut Saga,
    ) -> Result<BTreeMap<String, Change>> {
        let existing = self.containers().await?;
        if existing.iter().any(|c| c.service == LB_SERVICE) {
            return Ok(BTreeMap::new());
        }
        let outcome = self
            .ensure_service(lb_service, 1, None, &existing, Ensure::CreateOnly, saga)
            .await?;
        Ok(outcome.into_iter().collect())
    }

    /// The active color's replicas: as recorded, else as the compose file
    /// says (at least one).
    fn replicas_to_run(&self, restore: &Restore) -> u32 {
        let active = restore.plan.color;
        restore.plan.replicas.unwrap_or_else(|| {
            self.compose
                .service(active.service())
                .map_or(1, |s| s.replicas.max(1))
        })
    }
}

fn summary(
    active: Color,
    release: Release,
    changes: BTreeMap<String, Change>,
    saga: &mut Saga,
    addr: &str,
) -> UpSummary {
    UpSummary {
        active,
        version: release.version,
        changes,
        created_networks: std::mem::take(&mut saga.networks),
        created_volumes: std::mem::take(&mut saga.volumes),
        url: format!("http://{addr}"),
    }
}
