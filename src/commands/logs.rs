//! `cryptus logs [SERVICE...]`: the logs of one service, several, or all,
//! multiplexed with a prefix per container; `--follow` keeps following
//! across a deploy, as new containers of a service start. What a line looks
//! like, as text or JSON, is [`crate::logs`]'s. On a Swarm, each task's log
//! through the manager ([`crate::swarm::logs`]).

use std::collections::BTreeSet;

use anyhow::Result;
use chrono::Utc;

use crate::error::{EXIT_OK, usage};
use crate::logs::{self, Shown};
use crate::orchestrator::Orchestrator;
use crate::output::Printer;
use crate::project::Project;
use crate::status;

pub struct Options {
    pub services: Vec<String>,
    pub follow: bool,
    pub tail: Option<usize>,
    pub since: Option<String>,
    pub timestamps: bool,
}

impl Options {
    /// The options as given on the command line, the seed's form included.
    pub fn new(
        services: Vec<String>,
        follow: bool,
        tail: Option<usize>,
        since: Option<String>,
        timestamps: bool,
    ) -> Options {
        let (services, follow) = seed_form(services, follow);
        Options {
            services,
            follow,
            tail,
            since,
            timestamps,
        }
    }
}

/// The seed's `logs nginx true`: a trailing `true`/`false` is the follow flag.
fn seed_form(mut services: Vec<String>, follow: bool) -> (Vec<String>, bool) {
    match services.last().map(String::as_str) {
        Some("true") => {
            services.pop();
            (services, true)
        }
        Some("false") => {
            services.pop();
            (services, follow)
        }
        _ => (services, follow),
    }
}

pub async fn run(project: &Project, options: Options, printer: &Printer) -> Result<u8> {
    let declared: Vec<String> = project
        .load()
        .map(|compose| compose.services.keys().cloned().collect())
        .unwrap_or_default();
    let since = match &options.since {
        Some(text) => logs::parse_since(text, Utc::now())
            .map_err(|err| usage(err, "write --since 10m or --since 2026-01-02T15:04:05Z"))?,
        None => 0,
    };
    let engine = crate::orchestrator::connect(project.orchestrator).await?;
    if project.orchestrator == Orchestrator::Swarm {
        return on_swarm(&engine, project, declared, since, &options, printer).await;
    }
    let containers = status::service_containers(&engine, &project.name).await?;
    let mut known: BTreeSet<String> = declared.into_iter().collect();
    known.extend(containers.iter().map(|c| c.service.clone()));
    let services = select(&project.name, known, &options.services)?;
    let from = (since, options.tail);
    let shown = Shown::new(services, &containers, from, options.timestamps, printer);
    if options.follow {
        logs::follow(&engine, &project.name, &shown, printer).await?;
    } else {
        logs::dump(&engine, &shown, printer).await?;
    }
    Ok(EXIT_OK)
}

/// The logs of the stack's tasks on a Swarm, through the manager.
async fn on_swarm(
    engine: &crate::engine::Engine,
    project: &Project,
    declared: Vec<String>,
    since: i64,
    options: &Options,
    printer: &Printer,
) -> Result<u8> {
    let mut known: BTreeSet<String> = declared.into_iter().collect();
    for service in engine.services(&project.name).await? {
        if let Some(name) = crate::swarm::compose_service(&project.name, &service.name) {
            known.insert(name.to_owned());
        }
    }
    let services = select(&project.name, known, &options.services)?;
    let shown = crate::swarm::logs::Shown {
        project: &project.name,
        services: &services,
        since,
        tail: options.tail,
        timestamps: options.timestamps,
    };
    if options.follow {
        crate::swarm::logs::follow(engine, &shown, printer).await?;
    } else {
        crate::swarm::logs::dump(engine, &shown, printer).await?;
    }
    Ok(EXIT_OK)
}

/// The services whose logs are shown: those asked for, else every one
/// `known`. A service not known is a usage error that lists them.
fn select(project: &str, known: BTreeSet<String>, asked: &[String]) -> Result<BTreeSet<String>> {
    if let Some(service) = asked.iter().find(|s| !known.contains(*s)) {
        let list: Vec<&str> = known.iter().map(String::as_str).collect();
        return Err(usage(
            format!("there is no service {service:?} in project {project}"),
            format!("the services are: {}", list.join(", ")),
        ));
    }
    Ok(if asked.is_empty() {
        known
    } else {
        asked.iter().cloned().collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_form_follows() {
        let (services, follow) = seed_form(vec!["nginx".into(), "true".into()], false);
        assert_eq!((services, follow), (vec!["nginx".to_owned()], true));
        let (services, follow) = seed_form(vec!["nginx".into()], false);
        assert_eq!((services, follow), (vec!["nginx".to_owned()], false));
        let (services, follow) = seed_form(vec!["nginx".into(), "false".into()], false);
        assert_eq!((services, follow), (vec!["nginx".to_owned()], false));
    }

    #[test]
    fn a_service_not_known_is_refused_naming_those_that_are() {
        let known: BTreeSet<String> = ["nginx".to_owned(), "redis".to_owned()].into();
        assert_eq!(select("shop", known.clone(), &[]).unwrap(), known);
        let asked = ["redis".to_owned()];
        assert_eq!(
            select("shop", known.clone(), &asked).unwrap(),
            BTreeSet::from(["redis".to_owned()])
        );
        let asked = ["redis".to_owned(), "mongo".to_owned()];
        let err = select("shop", known, &asked).unwrap_err();
        assert_eq!(
            err.to_string(),
            "there is no service \"mongo\" in project shop"
        );
    }
}
