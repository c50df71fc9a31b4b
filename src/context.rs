//! The per-command context: the engine, the project, its compose file and
//! the printer, opened once by a command ([`Session::open`]) and lent to every
//! step as a [`Stack`]; with what they answer between them (the load
//! balancer's container and addresses, the containers, a color's default
//! release, a container's last log lines, waits that show them).

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::time::Instant;

use crate::compose::Compose;
use crate::engine::{Container, Engine};
use crate::health::{self, Expect};
use crate::nginx::{self, Nginx};
use crate::output::Printer;
use crate::project::Project;
use crate::ready::{self, Probes, WaitFor};
use crate::stack::{self, Color, LB_SERVICE, Release, VERSION_LABEL, container_name};
use crate::wait::Limits;

/// Lines of a failed container's log to show.
pub const LOG_LINES: usize = 50;

/// What a command opens before it changes anything: the compose file
/// first (a broken one must fail before the engine is touched, and before a
/// restart stops anything), then the engine. It owns them and lends the
/// [`Stack`] each step takes.
pub struct Session<'a> {
    project: &'a Project,
    printer: &'a Printer,
    compose: Compose,
    engine: Engine,
}

impl<'a> Session<'a> {
    pub async fn open(project: &'a Project, printer: &'a Printer) -> Result<Session<'a>> {
        let compose = project.load()?;
        let engine = crate::orchestrator::connect(project.orchestrator).await?;
        Ok(Session {
            project,
            printer,
            compose,
            engine,
        })
    }

    pub fn stack(&self) -> Stack<'_> {
        Stack {
            engine: &self.engine,
            project: self.project,
            compose: &self.compose,
            printer: self.printer,
        }
    }
}

/// The context every step of a command takes.
pub struct Stack<'a> {
    pub engine: &'a Engine,
    pub project: &'a Project,
    pub compose: &'a Compose,
    pub printer: &'a Printer,
}

/// The release a color's containers run, read from the containers.
pub fn release_of(containers: &[&Container]) -> Option<Release> {
    containers.first().map(|c| Release {
        image: c.image.clone(),
        version: c.label(VERSION_LABEL).unwrap_or("unknown").to_owned(),
    })
}

pub fn of_service<'c>(containers: &'c [Container], service: &str) -> Vec<&'c Container> {
    containers.iter().filter(|c| c.service == service).collect()
}

impl Stack<'_> {
    pub fn lb_container(&self) -> String {
        container_name(&self.project.name, LB_SERVICE, 1)
    }

    pub fn nginx(&self) -> Nginx<'_> {
        Nginx::named(self.engine, self.lb_container())
    }

    pub async fn containers(&self) -> Result<Vec<Container>> {
        self.engine.containers(&self.project.name).await
    }

    /// The release the compose file names for a color: its image, and the
    /// version that image declares.
    pub async fn default_release(&self, color: Color) -> Result<Release> {
        let service = self
            .compose
            .service(color.service())
            .with_context(|| format!("the compose file has no service {}", color.service()))?;
        let image = service
            .image
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.project.name, service.name));
        let labels = self.engine.image_labels(&image).await?.unwrap_or_default();
        Ok(Release {
            version: stack::image_version(&image, &labels),
            image,
        })
    }

    pub async fn must_inspect(&self, name: &str) -> Result<Container> {
        ready::inspect(self.engine, name).await
    }

    /// Waits for `what` under `limits`; when a container's own log explains
    /// the failure, shows it first.
    pub async fn wait(&self, what: &WaitFor<'_>, limits: Limits) -> Result<Instant> {
        let client = health::client();
        let probes = Probes {
            engine: self.engine,
            client: &client,
        };
        match what.wait(&probes, limits).await {
            Ok(at) => Ok(at),
            Err(not) => {
                if let Some(name) = &not.explained_by {
                    self.show_logs(name).await;
                }
                Err(not.error)
            }
        }
    }

    /// Waits until each container's `/api/health` answers as expected,
    /// looking every `poll` until `deadline`; the error shows its last
    /// answer. Returns when the last of them became ready, by its own clock.
    pub async fn wait_app_ready(
        &self,
        names: &[String],
        expect: &Expect,
        poll: Duration,
        deadline: Instant,
    ) -> Result<Instant> {
        let limits = Limits::until(deadline, poll);
        let waits = names.iter().map(|container| {
            let app = WaitFor::App { container, expect };
            async move { self.wait(&app, limits).await }
        });
        let ready = futures_util::future::try_join_all(waits).await?;
        Ok(ready.into_iter().max().unwrap_or_else(Instant::now))
    }

    /// Prints the last lines a container wrote, to explain a failure.
    pub async fn show_logs(&self, name: &str) {
        if let Ok(text) = self.engine.logs_tail(name, LOG_LINES).await
            && !text.trim().is_empty()
        {
            self.printer
                .info(format!("--- last {LOG_LINES} log lines of {name} ---"));
            for line in text.lines() {
                self.printer.info(format!("  {line}"));
            }
            self.printer.info("---");
        }
    }

    /// Where this host reaches an app container's port.
    pub fn app_addr(container: &Container) -> Option<String> {
        health::app_addr(container)
    }

    /// The load balancer's address on this host.
    pub async fn lb_addr(&self) -> Result<String> {
        let container = self.must_inspect(&self.lb_container()).await?;
        container
            .published_addr(nginx::HTTP_PORT)
            .ok_or_else(|| anyhow!("{} publishes no port {}", container.name, nginx::HTTP_PORT))
    }

    /// nginx's status address on this host.
    pub fn status_addr(container: &Container) -> Option<String> {
        container.published_addr(nginx::STATUS_PORT)
    }
}
