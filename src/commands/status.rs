//! `cryptus status`: each service's containers, the color nginx serves (asked
//! from nginx itself) and each color's version.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;

use crate::context::{Stack, of_service, release_of};
use crate::engine::{Container, Engine};
use crate::error::EXIT_OK;
use crate::health;
use crate::history;
use crate::lock;
use crate::nginx;
use crate::output::{self, Printer};
use crate::project::Project;
use crate::stack::{Color, LB_SERVICE, VERSION_LABEL, container_name};

#[derive(Serialize)]
struct Status {
    ok: bool,
    project: String,
    /// The color nginx serves; the upstream file's when nginx cannot be asked.
    active: Option<Color>,
    nginx: NginxView,
    colors: BTreeMap<Color, ColorView>,
    services: Vec<ServiceView>,
    /// Who holds the deploy lock, if anyone.
    lock: Option<lock::Holder>,
    /// Every recorded deployment, oldest first.
    history: Vec<history::Entry>,
}

#[derive(Serialize)]
struct NginxView {
    /// What the running nginx has loaded.
    served: Option<Color>,
    /// What its upstream file says.
    upstream_file: Option<Color>,
    /// Why `served` is missing, or how the two disagree.
    note: Option<String>,
}

#[derive(Serialize)]
struct ColorView {
    version: Option<String>,
    image: Option<String>,
    containers: usize,
    running: usize,
}

#[derive(Serialize)]
struct ServiceView {
    service: String,
    containers: Vec<ContainerView>,
}

#[derive(Serialize)]
struct ContainerView {
    name: String,
    state: String,
    health: Option<String>,
    image: String,
    version: Option<String>,
    started_at: Option<String>,
    uptime_seconds: Option<i64>,
}

pub async fn run(project: &Project, printer: &Printer) -> Result<u8> {
    // The compose file only adds services that have no container yet; status
    // works from the engine's labels even when the file is missing or broken.
    let declared: Vec<String> = match project.load() {
        Ok(compose) => compose.services.keys().cloned().collect(),
        Err(err) => {
            if project.main_file().exists() {
                printer.warn(format!("{err:#}"));
            }
            Vec::new()
        }
    };
    let engine = Engine::connect().await?;
    // The lock container belongs to the project but to no service.
    let containers: Vec<Container> = engine
        .containers(&project.name)
        .await?
        .into_iter()
        .filter(|c| !c.service.is_empty())
        .collect();
    let status = gather(&engine, project, &containers, &declared).await;
    if printer.json() {
        printer.out_json(&status)?;
    } else {
        printer.out(&render(&status))?;
    }
    Ok(EXIT_OK)
}

async fn gather(
    engine: &Engine,
    project: &Project,
    containers: &[Container],
    declared: &[String],
) -> Status {
    let lb_name = container_name(&project.name, LB_SERVICE, 1);
    let lb = containers.iter().find(|c| c.name == lb_name);
    let nginx = nginx::Nginx {
        engine,
        container: lb_name.clone(),
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
                .and_then(nginx::upstream_color),
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
    let served = async {
        match lb {
            None => (None, Some("there is no nginx container".to_owned())),
            Some(c) if !c.running => (None, Some(format!("nginx is {}", c.state))),
            Some(c) => match Stack::status_addr(c) {
                None => (None, Some("nginx publishes no status port".to_owned())),
                Some(addr) => match nginx::served_color(&health::client(), &addr).await {
                    Ok(color) => (Some(color), None),
                    Err(err) => (None, Some(format!("{err:#}"))),
                },
            },
        }
    };
    let (upstream_file, history, lock, (served, mut note)) =
        tokio::join!(upstream_file, history, lock, served);
    if let (Some(served), Some(file)) = (served, upstream_file)
        && served != file
    {
        note = Some(format!(
            "nginx serves {served} but its upstream file names {file}: a reload is pending"
        ));
    }

    let colors = Color::ALL
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
        .collect();

    let mut names: BTreeSet<String> = declared.iter().cloned().collect();
    names.extend(containers.iter().map(|c| c.service.clone()));
    let now = Utc::now();
    let services = names
        .into_iter()
        .map(|service| ServiceView {
            containers: containers
                .iter()
                .filter(|c| c.service == service)
                .map(|c| ContainerView {
                    name: c.name.clone(),
                    state: c.state.clone(),
                    // An exited container keeps its last health; it means nothing.
                    health: c.health.clone().filter(|h| h != "none" && c.running),
                    image: c.image.clone(),
                    version: c.label(VERSION_LABEL).map(str::to_owned),
                    started_at: c.started_at.filter(|_| c.running).map(|t| t.to_rfc3339()),
                    uptime_seconds: c
                        .started_at
                        .filter(|_| c.running)
                        .map(|t| (now - t).num_seconds().max(0)),
                })
                .collect(),
            service,
        })
        .collect();
    Status {
        ok: true,
        project: project.name.clone(),
        active: served.or(upstream_file),
        nginx: NginxView {
            served,
            upstream_file,
            note,
        },
        colors,
        services,
        lock,
        history,
    }
}

fn render(status: &Status) -> String {
    let mut text = String::new();
    let active = match (status.nginx.served, status.nginx.upstream_file) {
        (Some(served), _) => format!("nginx serves {served}"),
        (None, Some(file)) => format!("nginx's upstream file names {file}"),
        (None, None) => "no color is active".to_owned(),
    };
    text.push_str(&format!("project {}: {active}\n", status.project));
    if let Some(note) = &status.nginx.note {
        text.push_str(&format!("  note: {note}\n"));
    }
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
    text.push('\n');
    let mut rows = Vec::new();
    for service in &status.services {
        if service.containers.is_empty() {
            rows.push(vec![
                service.service.clone(),
                "-".into(),
                "not created".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for c in &service.containers {
            rows.push(vec![
                service.service.clone(),
                c.name.clone(),
                c.state.clone(),
                c.health.clone().unwrap_or_else(|| "-".into()),
                c.version.clone().unwrap_or_else(|| "-".into()),
                c.image.clone(),
                c.uptime_seconds
                    .map(|s| output::uptime(std::time::Duration::from_secs(s as u64)))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    text.push_str(&output::table(
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
    ));
    if let Some(holder) = &status.lock {
        text.push_str(&format!(
            "\ndeploy lock: held by {} {}@{} (pid {}) since {}\n",
            holder.operation,
            holder.user,
            holder.host,
            holder.pid,
            holder.since.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if !status.history.is_empty() {
        let rows: Vec<Vec<String>> = status
            .history
            .iter()
            .rev()
            .take(10)
            .map(|e| {
                vec![
                    e.time.format("%Y-%m-%d %H:%M:%S").to_string(),
                    e.operation.clone(),
                    format!("{} {}", e.from.color, e.from.version),
                    format!("{} {}", e.to.color, e.to.version),
                    e.outcome.as_str().to_owned(),
                    e.durations
                        .get("total")
                        .map(|t| format!("{t:.2}s"))
                        .unwrap_or_default(),
                    format!("{}@{}", e.user, e.host),
                ]
            })
            .collect();
        text.push_str("\nlast deployments, newest first:\n");
        text.push_str(&output::table(
            &[
                "TIME (UTC)",
                "OPERATION",
                "FROM",
                "TO",
                "OUTCOME",
                "TOOK",
                "BY",
            ],
            &rows,
        ));
    }
    text
}
