//! How a color runs: today as containers on one engine. The switch asks
//! the runner to bring up what a plan starts, to stop or remove containers
//! once nginx no longer names them, and to undo what it brought up. This is
//! the seam where another way to run a color (Swarm services) plugs in: the
//! planner and the orchestrations only speak of names and releases.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::{join_all, try_join_all};
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
    /// Reused containers are started as the plan found them; the ones a
    /// fresh start replaces are looked at again first, by name, at once:
    /// the lock keeps other cryptus runs out, not `cryptus stop`, the
    /// docker CLI or a restart policy, and the switch read them before its
    /// image and its pre-deploy hook.
    pub async fn bring_up(&mut self, plan: &Plan, release: &Release) -> Result<()> {
        if plan.reuse {
            crate::interrupt::check()?;
            return self.start_all(&plan.start).await;
        }
        let mut names: Vec<&String> = plan.replace.iter().chain(&plan.start).collect();
        names.sort();
        names.dedup();
        let engine = self.stack.engine;
        let found = try_join_all(names.iter().map(|name| engine.inspect(name))).await?;
        let replaced: Vec<Container> = found
            .into_iter()
            .flatten()
            .filter(|c| c.service == plan.target.service())
            .collect();
        let replaced: Vec<&Container> = replaced.iter().collect();
        self.stop_replaced(plan.target, &replaced).await?;
        crate::interrupt::check()?;
        self.create(plan.target, &plan.start, &replaced, release)
            .await
    }

    /// Starts stopped containers as they are, all at once; each one that
    /// started is stopped again on undo.
    async fn start_all(&mut self, names: &[String]) -> Result<()> {
        self.start_called.get_or_insert_with(Instant::now);
        let engine = self.stack.engine;
        let results = join_all(names.iter().map(|name| engine.start(name))).await;
        let mut first_error = None;
        for (name, result) in names.iter().zip(results) {
            match result {
                Ok(()) => self.started.push(name.clone()),
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the running containers a plan replaces: they may have requests
    /// in flight from nginx's old workers (an earlier run was killed before
    /// its drain), which finish first; then each stops gracefully.
    async fn stop_replaced(&self, color: Color, replaced: &[&Container]) -> Result<()> {
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
        Ok(())
    }

    /// Makes the containers `names` of `color` from the compose service with
    /// `release`, and starts them, once the `replaced` containers (stopped)
    /// are removed. Their host files are written one after the other (two
    /// containers may share one); then each replica, all at once, has its
    /// old container removed, is made and starts, so that many replicas cost
    /// about what one does and the first starts without waiting for the
    /// rest.
    async fn create(
        &mut self,
        color: Color,
        names: &[String],
        replaced: &[&Container],
        release: &Release,
    ) -> Result<()> {
        let (stack, service_name) = (self.stack, color.service());
        let service = stack
            .compose
            .service(service_name)
            .with_context(|| format!("the compose file has no service {service_name}"))?;
        let mut specs = Vec::new();
        for name in names {
            let number = name
                .strip_prefix(&format!("{}-{service_name}-", stack.project.name))
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("{name} is not a container name of {service_name}"))?;
            let spec = plan_container(
                &stack.project.name,
                stack.compose,
                service,
                number,
                Some(release),
            )?;
            crate::host_files::write(stack.engine, &spec, stack.printer).await?;
            specs.push(spec);
        }
        // Each container starts as soon as it is made: later ones are made
        // while earlier ones start.
        let (engine, first_start) = (stack.engine, OnceLock::new());
        let old_id = |name: &str| replaced.iter().find(|c| c.name == name).map(|c| &c.id);
        let others = replaced.iter().filter(|c| !names.contains(&c.name));
        let (outcomes, removed) = tokio::join!(
            join_all(specs.iter().map(|spec| {
                let (first_start, old) = (&first_start, old_id(&spec.name));
                async move {
                    if let Some(id) = old
                        && let Err(err) = engine.remove(id, true).await
                    {
                        return (false, Err(err));
                    }
                    if let Err(err) = engine.create_container(spec).await {
                        return (false, Err(err));
                    }
                    first_start.get_or_init(Instant::now);
                    (true, engine.start(&spec.name).await)
                }
            })),
            join_all(others.map(|c| engine.remove(&c.id, true)))
        );
        if let Some(first) = first_start.into_inner() {
            self.start_called.get_or_insert(first);
        }
        let mut first_error = None;
        for (spec, (created, result)) in specs.iter().zip(outcomes) {
            if created {
                self.created.push(spec.name.clone());
            }
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        for result in removed {
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
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
        let results = join_all(names.iter().map(|n| engine.stop(n, None))).await;
        for (name, result) in names.iter().zip(results) {
            if let Err(err) = result {
                self.stack.printer.warn(format!("stopping {name}: {err:#}"));
            }
        }
    }

    /// Stops, then removes, containers nginx no longer names.
    /// All at once: each is stopped, then removed.
    pub async fn retire(&self, names: &[String]) {
        let engine = self.stack.engine;
        join_all(names.iter().map(|name| async move {
            if let Err(err) = engine.stop(name, None).await {
                self.stack.printer.warn(format!("stopping {name}: {err:#}"));
            }
            if let Err(err) = engine.remove(name, true).await {
                self.stack.printer.warn(format!("removing {name}: {err:#}"));
            }
        }))
        .await;
    }

    /// Where this host reaches each container's app port.
    pub async fn addresses(&self, names: &[String]) -> Result<Vec<(String, String)>> {
        Ok(self
            .inspect(names)
            .await?
            .iter()
            .filter_map(|container| Some((container.name.clone(), Stack::app_addr(container)?)))
            .collect())
    }

    /// The containers `names`, as the engine has them now; those gone are
    /// left out.
    pub async fn inspect(&self, names: &[String]) -> Result<Vec<Container>> {
        let engine = self.stack.engine;
        let inspected = try_join_all(names.iter().map(|name| engine.inspect(name))).await?;
        Ok(inspected.into_iter().flatten().collect())
    }

    /// The id of the image the first container runs.
    pub async fn image_id(&self, names: &[String]) -> Option<String> {
        let first = names.first()?;
        let container = self.stack.engine.inspect(first).await.ok().flatten()?;
        Some(container.image_id)
    }
}
