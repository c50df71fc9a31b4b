//! Making a service's containers exist and run, in dependency order: the
//! project's networks and volumes, each container created, recreated or
//! started as its configuration says, after what it depends on is ready.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::time::Instant;

use super::undo::Saga;
use crate::compose::{Condition, DEFAULT_NETWORK, Network, Service};
use crate::context::Stack;
use crate::engine::{CONFIG_HASH_LABEL, Container};
use crate::health::Expect;
use crate::interrupt;
use crate::ready::{self, WaitFor};
use crate::stack::{
    Color, LB_SERVICE, Release, container_name, network_labels, network_name, plan_container,
    volume_labels, volume_name,
};
use crate::wait::Limits;

/// How often a dependency's healthcheck is looked at: each look may run the
/// check inside the container.
const HEALTHCHECK_POLL: Duration = Duration::from_millis(200);

/// What happened to one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Unchanged,
    Started,
    Created,
    Recreated,
}

/// How [`Stack::ensure_service`] treats a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ensure {
    /// Keep a container that exists (a color: it runs its own release);
    /// start it.
    Keep,
    /// Recreate a container whose configuration changed; start it.
    Recreate,
    /// Recreate a changed container, but do not start it (nginx, whose files
    /// are written first).
    CreateOnly,
}

impl Stack<'_> {
    /// Creates the project's networks and volumes that are missing, noting
    /// each in `saga`.
    pub(super) async fn ensure_infrastructure(&self, saga: &mut Saga) -> Result<()> {
        let project = &self.project.name;
        let mut networks: Vec<(String, Network)> = self
            .compose
            .networks
            .iter()
            .map(|(name, network)| (name.clone(), network.clone()))
            .collect();
        if self.compose.uses_default_network()
            && !self.compose.networks.contains_key(DEFAULT_NETWORK)
        {
            let default = Network {
                driver: None,
                internal: false,
                labels: BTreeMap::new(),
                ipam: None,
            };
            networks.push((DEFAULT_NETWORK.to_owned(), default));
        }
        for (name, network) in networks {
            let full = network_name(project, &name);
            let labels = network_labels(project, &name, &network.labels);
            if self.engine.ensure_network(&full, &network, labels).await? {
                saga.networks.push(full);
            }
        }
        for (name, volume) in &self.compose.volumes {
            let full = volume_name(project, name);
            let labels = volume_labels(project, name, &volume.labels);
            if self
                .engine
                .ensure_volume(&full, volume.driver.as_deref(), labels)
                .await?
            {
                saga.volumes.push(full);
            }
        }
        Ok(())
    }

    /// Makes `replicas` containers of `service` exist (and run, but with
    /// [`Ensure::CreateOnly`]). A container whose configuration no longer
    /// matches the file is recreated, but with [`Ensure::Keep`]. What it
    /// creates or starts is noted in `saga` before the next step.
    pub(super) async fn ensure_service(
        &self,
        service: &Service,
        replicas: u32,
        release: Option<&Release>,
        existing: &[Container],
        mode: Ensure,
        saga: &mut Saga,
    ) -> Result<Vec<(String, Change)>> {
        let recreate = mode != Ensure::Keep;
        let start = mode != Ensure::CreateOnly;
        let mut changes = Vec::new();
        for number in 1..=replicas {
            let plan = plan_container(&self.project.name, self.compose, service, number, release)?;
            let current = existing.iter().find(|c| c.name == plan.name);
            let change = match current {
                Some(c)
                    if !recreate || c.label(CONFIG_HASH_LABEL) == plan.label(CONFIG_HASH_LABEL) =>
                {
                    if c.running || !start {
                        Change::Unchanged
                    } else {
                        saga.started.push(c.name.clone());
                        self.engine.start(&c.name).await?;
                        Change::Started
                    }
                }
                Some(c) => {
                    self.printer.info(format!(
                        "{}: its configuration changed, recreating it",
                        c.name
                    ));
                    self.engine.remove(&c.id, true).await?;
                    crate::host_files::create_container(self.engine, &plan, self.printer).await?;
                    if start {
                        self.engine.start(&plan.name).await?;
                    }
                    Change::Recreated
                }
                None => {
                    crate::host_files::create_container(self.engine, &plan, self.printer).await?;
                    saga.created.push(plan.name.clone());
                    if start {
                        self.engine.start(&plan.name).await?;
                    }
                    Change::Created
                }
            };
            changes.push((plan.name, change));
        }
        Ok(changes)
    }

    /// Waits until what `service` depends on meets its condition.
    pub(super) async fn wait_dependencies(
        &self,
        service: &Service,
        deadline: Instant,
    ) -> Result<()> {
        for dependency in &service.depends_on {
            let Some(target) = self.compose.service(&dependency.service) else {
                continue;
            };
            let names: Vec<String> = (1..=target.replicas)
                .map(|n| container_name(&self.project.name, &target.name, n))
                .collect();
            for name in names {
                let container = name.as_str();
                let (what, interval) = match dependency.condition {
                    Condition::Started => (WaitFor::Running { container }, ready::POLL),
                    Condition::Healthy => {
                        let Some(check) = &target.healthcheck else {
                            bail!(
                                "{} depends on {} being healthy, but {} has no healthcheck",
                                service.name,
                                target.name,
                                target.name
                            );
                        };
                        let test = &check.test;
                        (WaitFor::Healthy { container, test }, HEALTHCHECK_POLL)
                    }
                    Condition::CompletedSuccessfully => {
                        (WaitFor::Completed { container }, ready::POLL)
                    }
                };
                self.wait(&what, Limits::until(deadline, interval)).await?;
            }
        }
        Ok(())
    }

    /// Starts every service but nginx and the idle color, in dependency
    /// order; the active color at `release`, health-gated.
    pub(super) async fn run_services(
        &self,
        active: Color,
        release: &Release,
        replicas: u32,
        existing: &[Container],
        deadline: Instant,
        saga: &mut Saga,
    ) -> Result<Vec<(String, Change)>> {
        let mut changes = Vec::new();
        for service in self.compose.start_order()? {
            let color = Color::of_service(&service.name);
            if service.name == LB_SERVICE
                || color == Some(active.other())
                || (color.is_none() && service.replicas == 0)
            {
                continue;
            }
            interrupt::or_interrupted(self.wait_dependencies(service, deadline)).await?;
            let step = self.printer.step(service.name.clone());
            let result = match color {
                Some(color) => {
                    self.run_color(service, color, release, replicas, existing, deadline, saga)
                        .await
                }
                None => {
                    self.ensure_service(
                        service,
                        service.replicas,
                        None,
                        existing,
                        Ensure::Recreate,
                        saga,
                    )
                    .await
                }
            };
            let result = match result {
                Ok(outcome) => {
                    (self.restart_dependents(service, &outcome, &changes).await).map(|()| outcome)
                }
                failed => failed,
            };
            match result {
                Ok(outcome) => {
                    step.done_with(describe_changes(&outcome));
                    changes.extend(outcome);
                }
                Err(err) => {
                    step.fail();
                    return Err(err);
                }
            }
            interrupt::check()?;
        }
        Ok(changes)
    }

    /// Compose's `depends_on: {x: {restart: true}}`: when this run recreated
    /// `x`, the service's containers it kept are restarted too. Not the
    /// app's colors: cryptus restarts no serving color (a deploy replaces
    /// one without downtime), and says so.
    async fn restart_dependents(
        &self,
        service: &Service,
        outcome: &[(String, Change)],
        earlier: &[(String, Change)],
    ) -> Result<()> {
        let recreated = |dependency: &str| {
            let prefix = format!("{}-{dependency}-", self.project.name);
            earlier.iter().any(|(name, change)| {
                *change == Change::Recreated
                    && name
                        .strip_prefix(&prefix)
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            })
        };
        let Some(dependency) = service
            .depends_on
            .iter()
            .find(|d| d.restart && recreated(&d.service))
        else {
            return Ok(());
        };
        if Color::of_service(&service.name).is_some() {
            self.printer.warn_once(format!(
                "services.{}.depends_on.{}: restart: true does not restart a serving color; deploy to replace it",
                service.name, dependency.service
            ));
            return Ok(());
        }
        for (name, change) in outcome {
            if matches!(change, Change::Unchanged | Change::Started) {
                self.printer.info(format!(
                    "{name}: restarting, as {} was recreated",
                    dependency.service
                ));
                self.engine.stop(name, None).await?;
                self.engine.start(name).await?;
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_color(
        &self,
        service: &Service,
        color: Color,
        release: &Release,
        replicas: u32,
        existing: &[Container],
        deadline: Instant,
        saga: &mut Saga,
    ) -> Result<Vec<(String, Change)>> {
        let outcome = self
            .ensure_service(
                service,
                replicas,
                Some(release),
                existing,
                Ensure::Keep,
                saga,
            )
            .await?;
        let names: Vec<String> = outcome.iter().map(|(n, _)| n.clone()).collect();
        let expect = Expect {
            color,
            version: Some(release.version.clone()),
        };
        interrupt::or_interrupted(self.wait_app_ready(&names, &expect, ready::POLL, deadline))
            .await?;
        Ok(outcome)
    }
}

impl Change {
    /// The more significant of two changes, for one line per service.
    pub(super) fn max_with(self, other: Change) -> Change {
        let rank = |c: Change| match c {
            Change::Unchanged => 0,
            Change::Started => 1,
            Change::Created => 2,
            Change::Recreated => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

/// One line for what a service's containers went through.
fn describe_changes(outcome: &[(String, Change)]) -> String {
    let change = outcome
        .iter()
        .fold(Change::Unchanged, |acc, (_, c)| acc.max_with(*c));
    let count = outcome.len();
    let what = format!("{change:?}").to_lowercase();
    if count == 1 {
        what
    } else {
        format!("{what} ({count} containers)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_line_says_its_most_significant_change() {
        let one = [("a".to_owned(), Change::Unchanged)];
        assert_eq!(describe_changes(&one), "unchanged");
        let two = [
            ("a".to_owned(), Change::Created),
            ("b".to_owned(), Change::Started),
        ];
        assert_eq!(describe_changes(&two), "created (2 containers)");
        assert_eq!(
            Change::Recreated.max_with(Change::Started),
            Change::Recreated
        );
    }
}
