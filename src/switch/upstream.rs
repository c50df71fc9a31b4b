//! nginx's upstream file, and the only code that writes it: rendered from
//! the containers a color serves with, applied (write, `nginx -t`, reload
//! in one exec), waited for until nginx's loaded configuration serves it,
//! and followed by the drain of the workers that served before.

use std::time::Duration;

use anyhow::Result;

use crate::engine::Engine;
use crate::nginx::{self, Nginx, Prepared, Served};
use crate::output::Printer;
use crate::stack::{APP_PORT, Color};

/// An upstream file for one color.
#[derive(Clone, Debug, PartialEq)]
pub struct Upstream {
    pub color: Color,
    text: String,
}

impl Upstream {
    /// The upstream that sends traffic to `names`, containers of `color`.
    pub fn of(color: Color, names: &[String]) -> Result<Upstream> {
        let servers: Vec<String> = names.iter().map(|n| format!("{n}:{APP_PORT}")).collect();
        Ok(Upstream {
            color,
            text: nginx::render_upstream(color, &servers)?,
        })
    }

    /// The upstream of a canary step (`served.canary`): the served color's
    /// `old` containers and the canary's `new` ones, weighted for the
    /// step's share, clients split by `cookie`.
    pub fn canary(
        served: Served,
        old: &[String],
        new: &[String],
        cookie: &str,
    ) -> Result<Upstream> {
        let Some(canary) = served.canary else {
            anyhow::bail!("a canary step's upstream needs the canary's share");
        };
        let servers = super::canary::servers(canary.percent, old, new, APP_PORT);
        Ok(Upstream {
            color: served.color,
            text: nginx::render_canary_upstream(served, &servers, cookie)?,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn files<'a>(&'a self, with: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut files = vec![(nginx::UPSTREAM_FILE, self.text.as_str())];
        files.extend_from_slice(with);
        files
    }

    /// Applies it to a running nginx, with any other files of nginx's that
    /// go with it, in one test and reload.
    pub async fn apply(&self, nginx: &Nginx<'_>, with: &[(&str, &str)]) -> Result<()> {
        nginx.apply(&self.files(with)).await
    }

    /// [`Upstream::apply`] alone, through an exec started ahead of it by
    /// [`prepare`].
    pub async fn apply_prepared(
        &self,
        nginx: &Nginx<'_>,
        prepared: Option<Prepared>,
    ) -> Result<()> {
        nginx.apply_with(&self.files(&[]), prepared).await
    }

    /// Writes it for an nginx that is not running: nothing reads the files
    /// until it starts.
    pub async fn install(&self, nginx: &Nginx<'_>, with: &[(&str, &str)]) -> Result<()> {
        nginx.write(&self.files(with), false).await
    }

    /// Whether nginx's file already says this.
    pub async fn is_current(&self, nginx: &Nginx<'_>) -> Result<bool> {
        Ok(nginx.read(nginx::UPSTREAM_FILE).await?.as_deref() == Some(self.text.as_str()))
    }
}

/// The exec that will apply the next upstream, started in the background
/// as the switch begins, so that the flip waits for no process to start in
/// nginx's container. Dropped unused (the switch failed before its flip),
/// it is stopped, and the exec, its input never whole, changes nothing.
pub struct Pending(tokio::task::JoinHandle<Option<Prepared>>);

impl Pending {
    pub fn start(engine: &Engine, container: String) -> Pending {
        let engine = engine.clone();
        Pending(tokio::spawn(async move {
            Nginx::named(&engine, container)
                .prepare_apply(nginx::UPSTREAM_FILE)
                .await
        }))
    }

    /// The prepared exec, once it started; `None` if it could not.
    pub async fn take(mut self) -> Option<Prepared> {
        (&mut self.0).await.ok().flatten()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often nginx is asked which color it serves after a reload.
pub const SERVED_EVERY: Duration = Duration::from_millis(20);

/// Whether nginx's upstream file (read through the engine, nginx running
/// or not) names every one of `serving` and none of `not`.
pub async fn names_only(nginx: &Nginx<'_>, serving: &[String], not: &[String]) -> bool {
    match nginx.read(nginx::UPSTREAM_FILE).await {
        Ok(Some(text)) => {
            serving.iter().all(|n| text.contains(n.as_str()))
                && !not.iter().any(|n| text.contains(n.as_str()))
        }
        _ => false,
    }
}

/// Waits until the nginx workers that ran before a reload have finished
/// their in-flight requests, up to `limit`; past it, warns and goes on.
/// Returns how many were still busy.
pub async fn drain(
    nginx: &Nginx<'_>,
    printer: &Printer,
    old_workers: &[String],
    limit: Duration,
) -> Result<usize> {
    let busy = nginx.drain(old_workers, limit).await?;
    if busy > 0 {
        printer.warn(format!(
            "{busy} old nginx worker{} still busy after {}; going on anyway",
            if busy == 1 { " is" } else { "s are" },
            crate::output::seconds(limit)
        ));
    }
    Ok(busy)
}
