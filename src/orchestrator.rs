//! What runs the stack: one Docker engine (containers, the default), or a
//! Docker Swarm through one of its managers (services). Chosen by
//! `--orchestrator` or CRYPTUS_ORCHESTRATOR, checked against the engine
//! before any command touches it.

use std::fmt;

use anyhow::Result;
use serde::Serialize;

use crate::engine::{Engine, Membership};
use crate::error::usage;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Orchestrator {
    /// Containers on one engine.
    #[default]
    Engine,
    /// Services on a Docker Swarm, through a manager's engine.
    Swarm,
}

impl Orchestrator {
    pub const NAMES: &str = "engine, swarm";

    pub fn parse(text: &str) -> Result<Orchestrator, String> {
        match text.trim() {
            "engine" => Ok(Orchestrator::Engine),
            "swarm" => Ok(Orchestrator::Swarm),
            other => Err(format!(
                "unknown orchestrator '{other}' (expected one of: {})",
                Orchestrator::NAMES
            )),
        }
    }
}

impl fmt::Display for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Orchestrator::Engine => "engine",
            Orchestrator::Swarm => "swarm",
        })
    }
}

/// Connects to the engine; in Swarm mode it must be a Swarm manager.
pub async fn connect(orchestrator: Orchestrator) -> Result<Engine> {
    let engine = Engine::connect().await?;
    if orchestrator == Orchestrator::Swarm {
        let membership = engine.membership().await?;
        check_manager(&membership, &Engine::endpoint())?;
    }
    Ok(engine)
}

/// Swarm mode needs a manager: only a manager answers for services, tasks
/// and nodes. Anything else is a configuration error (exit 2).
pub fn check_manager(membership: &Membership, endpoint: &str) -> Result<()> {
    if membership.manager {
        return Ok(());
    }
    let what = match membership.state.as_str() {
        "inactive" => "is in no swarm".to_owned(),
        "active" => "is a swarm worker, not a manager".to_owned(),
        state => format!("is not a usable swarm manager (swarm state: {state})"),
    };
    Err(usage(
        format!("the engine at {endpoint} {what}; the swarm orchestrator needs a Swarm manager"),
        "run `docker swarm init` on that engine, or point DOCKER_HOST at a manager of your swarm; \
         without a swarm, use --orchestrator engine (unset CRYPTUS_ORCHESTRATOR)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership(state: &str, manager: bool) -> Membership {
        Membership {
            state: state.to_owned(),
            manager,
            node_id: None,
            node_addr: None,
            hostname: None,
            nodes: None,
            managers: None,
        }
    }

    #[test]
    fn names_parse_and_print_back() {
        for mode in [Orchestrator::Engine, Orchestrator::Swarm] {
            assert_eq!(Orchestrator::parse(&mode.to_string()), Ok(mode));
        }
        assert_eq!(Orchestrator::default(), Orchestrator::Engine);
        let err = Orchestrator::parse("kubernetes").unwrap_err();
        assert!(
            err.contains("'kubernetes'") && err.contains("engine, swarm"),
            "{err}"
        );
    }

    #[test]
    fn only_a_manager_passes_and_the_others_say_what_they_are() {
        assert!(check_manager(&membership("active", true), "unix:///s").is_ok());
        for (state, manager, says) in [
            ("inactive", false, "is in no swarm"),
            ("active", false, "is a swarm worker, not a manager"),
            ("locked", false, "swarm state: locked"),
            ("pending", false, "swarm state: pending"),
        ] {
            let err = check_manager(&membership(state, manager), "unix:///s").unwrap_err();
            let (code, hint) = crate::error::classify(&err);
            assert_eq!(code, crate::error::EXIT_USAGE);
            assert!(err.to_string().contains(says), "{err}");
            assert!(
                err.to_string().starts_with("the engine at unix:///s "),
                "{err}"
            );
            assert!(hint.is_some_and(|h| h.contains("docker swarm init")));
        }
    }
}
