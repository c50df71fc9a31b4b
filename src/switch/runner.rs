//! How a color runs: today as containers on one engine. The switch asks
//! the runner to bring up what a plan starts, to stop or remove containers
//! once nginx no longer names them, and to undo what it brought up. This is
//! the seam where another way to run a color (Swarm services) plugs in: the
//! planner and the orchestrations only speak of names and releases.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use crate::context::Stack;
use crate::engine::Container;
use crate::stack::{Color, Release, plan_container};

use super::plan::Plan;

/// Containers on one engine, and what this run did to them.
pub struct Runner<'s> {
    stack: &'s Stack<'s>,
    /// Containers this run created (removed on undo).
    created: Vec<String>,
    /// Stopped containers this run started (stopped on undo).
    started: Vec<String>,
    /// When the first container was asked to start.
    start_called: Option<Instant>,
    /// How long nginx's old workers may take to finish their requests to a
    /// container before it is replaced anyway (`--drain`).
    drain: Duration,
}

impl<'s> Runner<'s> {
    pub fn new(stack: &'s Stack<'s>, drain: Duration) -> Runner<'s> {
        Runner {
            stack,
            created: Vec::new(),
            started: Vec::new(),
            start_called: None,
            drain,
        }
    }

    pub fn start_called(&self) -> Option<Instant> {
        self.start_called
    }

    /// Whether this run made or started anything an undo would take back.
    pub fn changed_anything(&self) -> bool {
        !self.created.is_empty() || !self.started.is_empty()
    }

    /// Starts what the plan starts: reused containers as they are; else the
    /// replaced ones go first, then fresh ones are made from the compose
    /// service with `release`.
    pub async fn bring_up(&mut self, plan: &Plan, release: &Release) -> Result<()> {
        let existing = self.existing(plan.target).await?;
        if plan.reuse {
            for name in &plan.start {
                crate::interrupt::check()?;
                self.start_called.get_or_insert_with(Instant::now);
                self.stack.engine.start(name).await?;
                self.started.push(name.clone());
            }
            return Ok(());
        }
        let replaced: Vec<&Container> = existing
            .iter()
            .filter(|c| plan.replace.contains(&c.name))
            .collect();
        self.replace(plan.target, &replaced).await?;
        for name in &plan.start {
            crate::interrupt::check()?;
            self.create(plan.target, name, release).await?;
        }
        Ok(())
    }

    async fn existing(&self, color: Color) -> Result<Vec<Container>> {
        let containers = self.stack.containers().await?;
        Ok(containers
            .into_iter()
            .filter(|c| c.service == color.service())
            .collect())
    }

    /// Removes the containers a plan replaces. A running one may have
    /// requests in flight from nginx's old workers (an earlier run was
    /// killed before its drain): those finish, it stops gracefully, then it
    /// goes.
    async fn replace(&self, color: Color, replaced: &[&Container]) -> Result<()> {
        if replaced.iter().any(|c| c.running) {
            let busy = crate::interrupt::or_interrupted(
                self.stack.nginx().drain_shutting_down(self.drain),
            )
            .await?;
            if busy > 0 {
                self.stack.printer.warn(format!(
                    "{busy} old nginx workers are still busy; replacing {color} anyway"
                ));
            }
            let running: Vec<String> = replaced
                .iter()
                .filter(|c| c.running)
                .map(|c| c.name.clone())
                .collect();
            self.stop(&running).await;
        }
        for container in replaced {
            self.stack.engine.remove(&container.id, true).await?;
        }
        Ok(())
    }

    async fn create(&mut self, color: Color, name: &str, release: &Release) -> Result<()> {
        let (stack, service_name) = (self.stack, color.service());
        let service = stack
            .compose
            .service(service_name)
            .with_context(|| format!("the compose file has no service {service_name}"))?;
        let number = name
            .strip_prefix(&format!("{}-{service_name}-", stack.project.name))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{name} is not a container name of {service_name}"))?;
        let plan = plan_container(
            &stack.project.name,
            stack.compose,
            service,
            number,
            Some(release),
        )?;
        crate::host_files::create_container(stack.engine, &plan, stack.printer).await?;
        self.created.push(plan.name.clone());
        self.start_called.get_or_insert_with(Instant::now);
        stack.engine.start(&plan.name).await
    }

    /// Takes back what `bring_up` did: removes what it created, stops what
    /// it started.
    pub async fn undo(&mut self) {
        for name in self.created.drain(..) {
            if let Err(err) = self.stack.engine.remove(&name, true).await {
                self.stack.printer.warn(format!("removing {name}: {err:#}"));
            }
        }
        let started: Vec<String> = self.started.drain(..).collect();
        self.stop(&started).await;
    }

    /// Stops containers gracefully (their stop signal, then their stop
    /// timeout), all at once; a failure is a warning, the switch is done.
    pub async fn stop(&self, names: &[String]) {
        let engine = self.stack.engine;
        let results =
            futures_util::future::join_all(names.iter().map(|n| engine.stop(n, None))).await;
        for (name, result) in names.iter().zip(results) {
            if let Err(err) = result {
                self.stack.printer.warn(format!("stopping {name}: {err:#}"));
            }
        }
    }

    /// Stops, then removes, containers nginx no longer names.
    pub async fn retire(&self, names: &[String]) {
        for name in names {
            if let Err(err) = self.stack.engine.stop(name, None).await {
                self.stack.printer.warn(format!("stopping {name}: {err:#}"));
            }
            if let Err(err) = self.stack.engine.remove(name, true).await {
                self.stack.printer.warn(format!("removing {name}: {err:#}"));
            }
        }
    }

    /// Where this host reaches each container's app port.
    pub async fn addresses(&self, names: &[String]) -> Result<Vec<(String, String)>> {
        let mut addresses = Vec::new();
        for name in names {
            if let Some(container) = self.stack.engine.inspect(name).await?
                && let Some(addr) = Stack::app_addr(&container)
            {
                addresses.push((name.clone(), addr));
            }
        }
        Ok(addresses)
    }

    /// The id of the image the first container runs.
    pub async fn image_id(&self, names: &[String]) -> Option<String> {
        let first = names.first()?;
        let container = self.stack.engine.inspect(first).await.ok().flatten()?;
        Some(container.image_id)
    }
}
