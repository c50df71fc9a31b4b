//! Stopping a project: the load balancer first, so no request reaches a
//! stopping app, then the colors, then the rest.

use std::time::Duration;

use anyhow::Result;

use crate::engine::{Container, Engine};
use crate::stack::{Color, LB_SERVICE};

/// Stops every container of a project, the load balancer first so no request
/// reaches a stopping app, then the colors, then the rest. It needs no
/// compose file: the engine's labels say what belongs to the project.
pub async fn stop_project(
    engine: &Engine,
    project: &str,
    timeout: Option<Duration>,
) -> Result<Vec<String>> {
    let containers = engine.containers(project).await?;
    let tiers: [&dyn Fn(&Container) -> bool; 3] = [
        &|c| c.service == LB_SERVICE,
        &|c| Color::of_service(&c.service).is_some(),
        &|c| c.service != LB_SERVICE && Color::of_service(&c.service).is_none(),
    ];
    let mut stopped = Vec::new();
    for tier in tiers {
        let running: Vec<&Container> = containers.iter().filter(|c| c.running && tier(c)).collect();
        let results =
            futures_util::future::join_all(running.iter().map(|c| engine.stop(&c.name, timeout)))
                .await;
        for (container, result) in running.iter().zip(results) {
            result?;
            stopped.push(container.name.clone());
        }
    }
    Ok(stopped)
}
