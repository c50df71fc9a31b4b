//! What `cryptus status` reports: each service's containers, the color nginx
//! serves (asked from nginx itself) and each color's version, the deploy lock
//! and the history; gathered from the engine and nginx, and rendered as text.
//!
//! Gathering never fails: what cannot be read is reported as missing (with a
//! note for the served color), so status works on a half-broken stack.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::context::{Stack, of_service, release_of};
use crate::engine::{Container, Engine};
use crate::health;
use crate::history;
use crate::lock;
use crate::maintenance;
use crate::nginx::{self, Nginx};
use crate::orchestrator::Orchestrator;
use crate::output;
use crate::project::Project;
use crate::stack::{Color, LB_SERVICE, VERSION_LABEL, container_name};

#[derive(Serialize)]
pub struct Status {
    pub ok: bool,
    pub project: String,
    /// Always `engine` here; a Swarm's status is [`crate::swarm::status`]'s.
    pub orchestrator: Orchestrator,
    /// The color nginx serves; the upstream file's when nginx cannot be asked.
    pub active: Option<Color>,
    pub nginx: NginxView,
    pub colors: BTreeMap<Color, ColorView>,
    pub services: Vec<ServiceView>,
    /// Who holds the deploy lock, if anyone.
    pub lock: Option<lock::Holder>,
    /// Maintenance mode, as nginx's state volume records it; `None` when
    /// it cannot be read.
    pub maintenance: Option<maintenance::State>,
    /// Every recorded deployment, oldest first.
    pub history: Vec<history::Entry>,
}

#[derive(Serialize)]
pub struct NginxView {
    /// What the running nginx has loaded.
    pub served: Option<Color>,
    /// What its upstream file says.
    pub upstream_file: Option<Color>,
    /// Why `served` is missing, or how the two disagree.
    pub note: Option<String>,
    /// A canary in progress (or left by a killed deploy): the new color and
    /// its share, as nginx serves it (else as its file says).
    pub canary: Option<nginx::Canary>,
}

#[derive(Serialize)]
pub struct ColorView {
    pub version: Option<String>,
    pub image: Option<String>,
    pub containers: usize,
    pub running: usize,
}

#[derive(Serialize)]
pub struct ServiceView {
    pub service: String,
    pub containers: Vec<ContainerView>,
}

#[derive(Serialize)]
pub struct ContainerView {
    pub name: String,
    pub state: String,
    pub health: Option<String>,
    pub image: String,
    pub version: Option<String>,
    pub started_at: Option<String>,
    pub uptime_seconds: Option<i64>,
}

/// The project's containers that belong to a service: the lock container
/// belongs to the project but to no service.
pub async fn service_containers(engine: &Engine, project: &str) -> Result<Vec<Container>> {
    Ok(engine
        .containers(project)
        .await?
        .into_iter()
        .filter(|c| !c.service.is_empty())
        .collect())
}

/// Everything status shows. `declared` are the compose file's services: they
/// add the services that have no container yet.
pub async fn gather(
    engine: &Engine,
    project: &Project,
    containers: &[Container],
    declared: &[String],
) -> Status {
    let from_nginx = ask_nginx(engine, project, containers).await;
    Status {
        ok: true,
        project: project.name.clone(),
        orchestrator: Orchestrator::Engine,
        active: from_nginx.view.served.or(from_nginx.view.upstream_file),
        nginx: from_nginx.view,
        colors: colors(containers),
        services: services(containers, declared, Utc::now()),
        lock: from_nginx.lock,
        maintenance: from_nginx.maintenance,
        history: from_nginx.history,
    }
}

/// What is read from nginx and beside it, all at once.
struct FromNginx {
    view: NginxView,
    history: Vec<history::Entry>,
    lock: Option<lock::Holder>,
    maintenance: Option<maintenance::State>,
}

async fn ask_nginx(engine: &Engine, project: &Project, containers: &[Container]) -> FromNginx {
    let lb_name = container_name(&project.name, LB_SERVICE, 1);
    let lb = containers.iter().find(|c| c.name == lb_name);
    let nginx = match lb {
        Some(lb) => Nginx::of(engine, lb),
        None => Nginx::named(engine, lb_name),
    };
    // Every read is independent: ask them all at once.
    let upstream_file = async {
        match lb {
            Some(_) => nginx
                .read(nginx::UPSTREAM_FILE)
                .await
                .ok()
                .flatten()
                .as_deref()
                .and_then(nginx::upstream_served),
            None => None,
        }
    };
    let history = async {
        match lb {
            Some(_) => history::read(&nginx).await.unwrap_or_default(),
            None => Vec::new(),
        }
    };
    let lock = async { lock::holder_of(engine, &project.name).await.ok().flatten() };
    let maintenance = async {
        match lb {
            Some(_) => maintenance::read(&nginx).await.ok().flatten(),
            None => Some(maintenance::State::default()),
        }
    };
    let (upstream_file, history, lock, maintenance, (served, note)) =
        tokio::join!(upstream_file, history, lock, maintenance, served(lb));
    let canary = match served {
        Some(served) => served.canary,
        None => upstream_file.and_then(|file| file.canary),
    };
    let (served, upstream_file) = (served.map(|s| s.color), upstream_file.map(|f| f.color));
    FromNginx {
        view: NginxView {
            served,
            upstream_file,
            note: pending_reload(served, upstream_file).or(note),
            canary,
        },
        history,
        lock,
        maintenance,
    }
}

/// The color the running nginx serves, or why it cannot be told.
async fn served(lb: Option<&Container>) -> (Option<nginx::Served>, Option<String>) {
    match lb {
        None => (None, Some("there is no nginx container".to_owned())),
        Some(c) if !c.running => (None, Some(format!("nginx is {}", c.state))),
        Some(c) => match Stack::status_addr(c) {
            None => (None, Some("nginx publishes no status port".to_owned())),
            Some(addr) => match nginx::served(&health::client(), &addr).await {
                Ok(served) => (Some(served), None),
                Err(err) => (None, Some(format!("{err:#}"))),
            },
        },
    }
}

/// The note when nginx serves one color and its file names the other.
fn pending_reload(served: Option<Color>, file: Option<Color>) -> Option<String> {
    match (served, file) {
        (Some(served), Some(file)) if served != file => Some(format!(
            "nginx serves {served} but its upstream file names {file}: a reload is pending"
        )),
        _ => None,
    }
}

/// Each color's release and how many of its containers run.
fn colors(containers: &[Container]) -> BTreeMap<Color, ColorView> {
    Color::ALL
        .into_iter()
        .map(|color| {
            let of_color = of_service(containers, color.service());
            let release = release_of(&of_color);
            let view = ColorView {
                version: release.as_ref().map(|r| r.version.clone()),
                image: release.map(|r| r.image),
                containers: of_color.len(),
                running: of_color.iter().filter(|c| c.running).count(),
            };
            (color, view)
        })
        .collect()
}

/// Every service, declared or with a container, by name, with its containers.
fn services(containers: &[Container], declared: &[String], now: DateTime<Utc>) -> Vec<ServiceView> {
    let mut names: BTreeSet<String> = declared.iter().cloned().collect();
    names.extend(containers.iter().map(|c| c.service.clone()));
    names
        .into_iter()
        .map(|service| ServiceView {
            containers: containers
                .iter()
                .filter(|c| c.service == service)
                .map(|c| container_view(c, now))
                .collect(),
            service,
        })
        .collect()
}

fn container_view(c: &Container, now: DateTime<Utc>) -> ContainerView {
    // Only a running container has a start that means anything.
    let started = c.started_at.filter(|_| c.running);
    ContainerView {
        name: c.name.clone(),
        state: c.state.clone(),
        // An exited container keeps its last health; it means nothing.
        health: c.health.clone().filter(|h| h != "none" && c.running),
        image: c.image.clone(),
        version: c.label(VERSION_LABEL).map(str::to_owned),
        started_at: started.map(|t| t.to_rfc3339()),
        uptime_seconds: started.map(|t| (now - t).num_seconds().max(0)),
    }
}

/// The text of `cryptus status`.
pub fn render(status: &Status) -> String {
    let mut text = headline(status);
    match &status.maintenance {
        Some(state) if state.on => text.push_str(&format!("{}\n", state.describe())),
        Some(_) => {}
        None => text.push_str("maintenance: unknown (its file cannot be read)\n"),
    }
    text.push('\n');
    text.push_str(&services_table(&status.services));
    if let Some(holder) = &status.lock {
        text.push_str(&lock_line(holder));
    }
    if !status.history.is_empty() {
        text.push_str("\nlast deployments, newest first:\n");
        let newest: Vec<&history::Entry> = status.history.iter().rev().take(10).collect();
        text.push_str(&history::table(&newest));
    }
    text
}

/// The project, what nginx serves, and one line per color.
fn headline(status: &Status) -> String {
    let active = match (status.nginx.served, status.nginx.upstream_file) {
        (Some(served), _) => format!("nginx serves {served}"),
        (None, Some(file)) => format!("nginx's upstream file names {file}"),
        (None, None) => "no color is active".to_owned(),
    };
    let canary = match status.nginx.canary {
        Some(canary) => format!(
            ", and {}% of clients to {} (a canary)",
            canary.percent, canary.color
        ),
        None => String::new(),
    };
    let mut text = format!("project {}: {active}{canary}\n", status.project);
    if let Some(note) = &status.nginx.note {
        text.push_str(&format!("  note: {note}\n"));
    }
    text.push_str(&format!(
        "mode: {}, one Docker engine\n",
        status.orchestrator
    ));
    for (color, view) in &status.colors {
        let marker = if status.active == Some(*color) {
            "*"
        } else {
            " "
        };
        text.push_str(&format!(
            "{marker} {color:<5}  version {:<10}  {}/{} running  {}\n",
            view.version.as_deref().unwrap_or("-"),
            view.running,
            view.containers,
            view.image.as_deref().unwrap_or("-"),
        ));
    }
    text
}

fn services_table(services: &[ServiceView]) -> String {
    let dash = || "-".to_owned();
    let mut rows = Vec::new();
    for service in services {
        if service.containers.is_empty() {
            let mut row = vec![service.service.clone(), dash(), "not created".into()];
            row.extend(std::iter::repeat_with(dash).take(4));
            rows.push(row);
        }
        for c in &service.containers {
            rows.push(vec![
                service.service.clone(),
                c.name.clone(),
                c.state.clone(),
                c.health.clone().unwrap_or_else(dash),
                c.version.clone().unwrap_or_else(dash),
                c.image.clone(),
                c.uptime_seconds
                    .map(|s| output::uptime(std::time::Duration::from_secs(s as u64)))
                    .unwrap_or_else(dash),
            ]);
        }
    }
    output::table(
        &[
            "SERVICE",
            "CONTAINER",
            "STATE",
            "HEALTH",
            "VERSION",
            "IMAGE",
            "UPTIME",
        ],
        &rows,
    )
}

fn lock_line(holder: &lock::Holder) -> String {
    format!(
        "\ndeploy lock: held by {} {}@{} (pid {}) since {}\n",
        holder.operation,
        holder.user,
        holder.host,
        holder.pid,
        holder.since.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn status() -> Status {
        let blue = ColorView {
            version: Some("1.2.0".into()),
            image: Some("app:1.2.0".into()),
            containers: 2,
            running: 2,
        };
        let green = ColorView {
            version: None,
            image: None,
            containers: 0,
            running: 0,
        };
        Status {
            ok: true,
            project: "shop".into(),
            orchestrator: Orchestrator::Engine,
            active: Some(Color::Blue),
            nginx: NginxView {
                served: Some(Color::Blue),
                upstream_file: Some(Color::Blue),
                note: None,
                canary: None,
            },
            colors: BTreeMap::from([(Color::Blue, blue), (Color::Green, green)]),
            services: vec![
                ServiceView {
                    service: "cryptus-blue".into(),
                    containers: vec![ContainerView {
                        name: "shop-cryptus-blue-1".into(),
                        state: "running".into(),
                        health: Some("healthy".into()),
                        image: "app:1.2.0".into(),
                        version: Some("1.2.0".into()),
                        started_at: None,
                        uptime_seconds: Some(312),
                    }],
                },
                ServiceView {
                    service: "redis".into(),
                    containers: Vec::new(),
                },
            ],
            lock: None,
            maintenance: Some(maintenance::State::default()),
            history: Vec::new(),
        }
    }

    #[test]
    fn the_active_color_is_marked_and_missing_services_shown() {
        let text = render(&status());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "project shop: nginx serves blue");
        assert_eq!(lines[1], "mode: engine, one Docker engine");
        assert_eq!(
            lines[2],
            "* blue   version 1.2.0       2/2 running  app:1.2.0"
        );
        assert_eq!(lines[3], "  green  version -           0/0 running  -");
        assert_eq!(lines[4], "");
        assert!(lines[5].starts_with("SERVICE"), "{text}");
        assert!(lines[6].ends_with("app:1.2.0  5m12s"), "{text}");
        assert!(lines[7].starts_with("redis"), "{text}");
        assert!(lines[7].contains("not created"), "{text}");
        assert!(!text.contains("deploy lock"), "{text}");
        assert!(!text.contains("maintenance"), "{text}");
        assert!(!text.contains("last deployments"), "{text}");
    }

    #[test]
    fn the_upstream_file_speaks_when_nginx_cannot() {
        let mut status = status();
        status.nginx.served = None;
        status.nginx.note = Some("nginx is exited".into());
        let text = render(&status);
        assert!(
            text.starts_with(
                "project shop: nginx's upstream file names blue\n  note: nginx is exited\nmode: engine, one Docker engine\n"
            ),
            "{text}"
        );
        status.nginx.upstream_file = None;
        assert!(render(&status).starts_with("project shop: no color is active\n"));
    }

    #[test]
    fn a_reload_is_pending_only_when_nginx_and_its_file_disagree() {
        assert_eq!(pending_reload(Some(Color::Blue), Some(Color::Blue)), None);
        assert_eq!(pending_reload(None, Some(Color::Blue)), None);
        assert_eq!(
            pending_reload(Some(Color::Blue), Some(Color::Green)).as_deref(),
            Some("nginx serves blue but its upstream file names green: a reload is pending")
        );
    }

    #[test]
    fn maintenance_shows_under_the_colors_when_on_or_unknown() {
        let mut status = status();
        let settings = maintenance::Settings::new(Some("back soon".into()), 60, &[]).unwrap();
        status.maintenance = Some(maintenance::State::on(
            &settings,
            time("2026-01-02T15:04:05Z"),
            "ann@box".into(),
        ));
        let text = render(&status);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[4].starts_with("maintenance: ON since 2026-01-02 15:04:05 UTC by ann@box;"),
            "{text}"
        );
        assert!(lines[4].ends_with("message: back soon"), "{text}");
        assert_eq!(lines[5], "", "{text}");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["maintenance"]["on"], true);
        assert_eq!(json["maintenance"]["retry_after"], 60);
        status.maintenance = None;
        assert!(render(&status).contains("\nmaintenance: unknown"));
    }

    #[test]
    fn the_lock_and_the_newest_deployments_are_listed() {
        let mut status = status();
        status.lock = Some(lock::Holder {
            operation: "deploy".into(),
            user: "ann".into(),
            host: "box".into(),
            pid: 42,
            since: time("2026-01-02T15:04:05Z"),
            heartbeat: None,
            boot_id: None,
            pid_namespace: None,
        });
        let side = |color, version: &str| history::Side {
            color,
            image: format!("app:{version}"),
            version: version.into(),
            image_id: None,
            replicas: 1,
        };
        status.history = (0..12)
            .map(|n| history::Entry {
                time: time("2026-01-02T15:00:00Z") + chrono::Duration::minutes(n),
                operation: "deploy".into(),
                user: "ann".into(),
                host: "box".into(),
                from: side(Color::Blue, &format!("1.{n}")),
                to: side(Color::Green, &format!("1.{}", n + 1)),
                outcome: history::Outcome::Ok,
                reason: None,
                durations: BTreeMap::from([("total".to_owned(), 12.5)]),
                hooks: Vec::new(),
            })
            .collect();
        let text = render(&status);
        assert!(
            text.contains(
                "\ndeploy lock: held by deploy ann@box (pid 42) since 2026-01-02 15:04:05 UTC\n"
            ),
            "{text}"
        );
        let table = text
            .split("last deployments, newest first:\n")
            .nth(1)
            .unwrap();
        let rows: Vec<&str> = table.lines().skip(1).collect();
        assert_eq!(rows.len(), 10, "{table}");
        assert!(
            rows[0].starts_with("2026-01-02 15:11:00  deploy"),
            "{table}"
        );
        // The columns are history::table's, tested there.
        assert!(
            rows[9].starts_with("2026-01-02 15:02:00  deploy"),
            "{table}"
        );
    }
}
