//! nginx last: its files written before it starts (or applied if it runs
//! and they changed), then the app answering through it; and its http file
//! settled once nginx says its version.

use anyhow::Result;
use tokio::time::Instant;

use super::services::{Change, Ensure};
use super::undo::Saga;
use crate::compose::Service;
use crate::context::{Stack, of_service};
use crate::engine::Container;
use crate::health::{self, Expect};
use crate::interrupt;
use crate::lb;
use crate::maintenance;
use crate::nginx;
use crate::ready::{self, Probes, WaitFor};
use crate::stack::Color;
use crate::switch::upstream::Upstream;
use crate::wait::Limits;

impl Stack<'_> {
    /// nginx last: its upstream names the running containers of the active
    /// color; written before it starts, or applied if it runs and differs
    /// or `reload` says its names may point elsewhere now. The last value
    /// says whether this run started nginx.
    pub(super) async fn start_nginx(
        &self,
        lb_service: &Service,
        active: Color,
        reload: bool,
        earlier: Option<Change>,
        deadline: Instant,
        saga: &mut Saga,
    ) -> Result<(String, Change, bool)> {
        let step = self.printer.step("nginx");
        interrupt::or_interrupted(self.wait_dependencies(lb_service, deadline)).await?;
        let now = self.containers().await?;
        let running: Vec<String> = of_service(&now, active.service())
            .iter()
            .filter(|c| c.running)
            .map(|c| c.name.clone())
            .collect();
        let upstream = Upstream::of(active, &running)?;
        let outcome = self
            .ensure_service(lb_service, 1, None, &now, Ensure::CreateOnly, saga)
            .await?;
        let lb = self.must_inspect(&self.lb_container()).await?;
        let mut lb_change = outcome.first().map_or(Change::Unchanged, |(_, c)| *c);
        let canary = self.live_canary().await;
        let changed = self.put_nginx_files(&lb, &upstream, reload).await?;
        if let Some(canary) = canary {
            self.end_canary(canary, &now).await;
        }
        if !lb.running {
            if !saga.created.contains(&lb.name) {
                saga.started.push(lb.name.clone());
            }
            if let Err(err) = self.engine.start(&lb.name).await {
                step.fail();
                return Err(err);
            }
        }
        if changed || !lb.running {
            lb_change = Change::Started.max_with(lb_change);
        }
        let lb_change = earlier.map_or(lb_change, |c| c.max_with(lb_change));
        step.done_with(format!("{lb_change:?}").to_lowercase());
        Ok((lb.name, lb_change, !lb.running))
    }

    /// A canary a killed deploy left in nginx's upstream file.
    async fn live_canary(&self) -> Option<nginx::Canary> {
        let text = self.nginx().read(nginx::UPSTREAM_FILE).await.ok()??;
        nginx::upstream_served(&text)?.canary
    }

    /// `start` names the active color alone: a canary a killed deploy left
    /// ends, as `rollback` ends one: its containers go, so that no later
    /// rollback takes them for the previous release.
    async fn end_canary(&self, canary: nginx::Canary, containers: &[Container]) {
        let color = canary.color;
        self.printer.warn(format!(
            "a canary of {color} at {}% was live (its deploy did not finish): ended; \
             every client is on the active color, and {color}'s containers are removed",
            canary.percent
        ));
        for container in of_service(containers, color.service()) {
            let name = &container.name;
            let gone = async {
                self.engine.stop(name, None).await?;
                self.engine.remove(name, true).await
            };
            if let Err(err) = gone.await {
                self.printer.warn(format!("removing {name}: {err:#}"));
            }
        }
    }

    /// Puts `upstream`, the http-level file and maintenance's (when this
    /// cryptus renders its state otherwise) in nginx's state volume:
    /// written as they are to a stopped nginx (it reads them when it
    /// starts); applied to a running one (checked, then reloaded) when
    /// either differs or `reload` asks. Says whether a running nginx
    /// reloaded.
    async fn put_nginx_files(
        &self,
        lb: &Container,
        upstream: &Upstream,
        reload: bool,
    ) -> Result<bool> {
        // A running nginx says its version; a stopped one is asked once it
        // serves (see `settle_http_file`).
        let version = if lb.running {
            self.nginx().version().await.ok().flatten()
        } else {
            None
        };
        let http = self.http_file(version.as_deref())?;
        let nginx = self.nginx();
        // Maintenance is kept as recorded, in this cryptus's rendering.
        let maintenance = maintenance::rerendered(&nginx, self.printer).await?;
        let mut with = vec![(nginx::HTTP_FILE, http.as_str())];
        if let Some(text) = &maintenance {
            with.push((nginx::MAINTENANCE_FILE, text.as_str()));
        }
        interrupt::check()?;
        if !lb.running {
            upstream.install(&nginx, &with).await?;
            return Ok(false);
        }
        let stale = reload
            || maintenance.is_some()
            || !upstream.is_current(&nginx).await?
            || nginx.read(nginx::HTTP_FILE).await?.as_deref() != Some(http.as_str());
        if stale {
            upstream.apply(&nginx, &with).await?;
        }
        Ok(stale)
    }

    /// The http-level file for an nginx of `version` (none: not known).
    fn http_file(&self, version: Option<&str>) -> Result<String> {
        let min_timeout = version.is_some_and(nginx::has_keepalive_min_timeout);
        lb::http_file(self.compose, &self.project.dir, min_timeout)
    }

    /// Once nginx serves, renders the http-level file with what nginx itself
    /// says its version is (`nginx -v`): an nginx started by this run got
    /// the version-less file, and gains `keepalive_min_timeout` here when it
    /// has it. A failure leaves the working file and is a warning.
    pub(super) async fn settle_http_file(&self) {
        let nginx = self.nginx();
        let settled = async {
            let version = nginx.version().await?;
            let wanted = self.http_file(version.as_deref())?;
            if nginx.read(nginx::HTTP_FILE).await?.as_deref() != Some(wanted.as_str()) {
                nginx.apply(&[(nginx::HTTP_FILE, wanted.as_str())]).await?;
            }
            Ok::<(), anyhow::Error>(())
        }
        .await;
        if let Err(err) = settled {
            self.printer
                .warn(format!("nginx keeps its http settings: {err:#}"));
        }
    }

    /// Waits until the load balancer answers healthy as `active`.
    pub(super) async fn wait_served(&self, active: Color, deadline: Instant) -> Result<String> {
        let step = self.printer.step("the app through the load balancer");
        let addr = self.lb_addr().await?;
        let expect = Expect {
            color: active,
            version: None,
        };
        let client = health::client();
        let probes = Probes {
            engine: self.engine,
            client: &client,
        };
        let balanced = WaitFor::Balanced {
            lb_addr: &addr,
            expect: &expect,
        };
        let limits = Limits::until(deadline, ready::POLL);
        let waited =
            interrupt::or_interrupted(async { Ok(balanced.wait(&probes, limits).await) }).await;
        match waited {
            Ok(Ok(_)) => {
                step.done_with(format!("{active} answers at http://{addr}"));
                Ok(addr)
            }
            Ok(Err(not)) => {
                // Its own log explains a load balancer that answers wrong.
                step.fail();
                self.show_logs(&self.lb_container()).await;
                Err(not.error)
            }
            Err(err) => {
                step.fail();
                Err(err)
            }
        }
    }
}
