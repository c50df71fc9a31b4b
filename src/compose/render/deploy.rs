//! A service's `deploy:` in the document: replicas, the resource limits and
//! reservations, the restart policy, and the keys only Swarm applies, kept
//! as the model holds them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::duration;
use crate::compose::Service;
use crate::compose::options::{Placement, RestartPolicy, UpdateConfig};

#[derive(Debug, Serialize)]
pub struct DeployDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_mode: Option<&'a str>,
    replicas: u32,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<ResourcesDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<RestartPolicyDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<PlacementDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    update_config: Option<UpdateConfigDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback_config: Option<UpdateConfigDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct ResourcesDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<LimitsDoc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservations: Option<ReservationsDoc>,
}

#[derive(Debug, Serialize)]
struct LimitsDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pids: Option<i64>,
}

#[derive(Debug, Serialize)]
struct ReservationsDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<String>,
}

#[derive(Debug, Serialize)]
struct RestartPolicyDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_attempts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<String>,
}

#[derive(Debug, Serialize)]
struct PlacementDoc<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    constraints: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    preferences: Vec<SpreadDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_replicas_per_node: Option<i64>,
}

#[derive(Debug, Serialize)]
struct SpreadDoc<'a> {
    spread: &'a str,
}

#[derive(Debug, Serialize)]
struct UpdateConfigDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    parallelism: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    monitor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_failure_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<&'a str>,
}

pub fn deploy_doc(service: &Service) -> DeployDoc<'_> {
    let swarm = &service.swarm;
    DeployDoc {
        mode: swarm.mode.as_deref(),
        endpoint_mode: swarm.endpoint_mode.as_deref(),
        replicas: service.replicas,
        labels: &swarm.labels,
        resources: resources_doc(service),
        restart_policy: swarm.restart_policy.as_ref().map(restart_policy_doc),
        placement: swarm.placement.as_ref().map(placement_doc),
        update_config: swarm.update_config.as_ref().map(update_config_doc),
        rollback_config: swarm.rollback_config.as_ref().map(update_config_doc),
    }
}

/// `resources`, left out when neither limits nor reservations are set.
/// Sizes are whole bytes, as strings, as Compose writes them.
fn resources_doc(service: &Service) -> Option<ResourcesDoc> {
    let limits = &service.limits;
    let limits_set = limits.cpus.is_some() || limits.memory.is_some() || limits.pids.is_some();
    let cpus_reservation = service.swarm.cpus_reservation;
    let reservations_set = cpus_reservation.is_some() || limits.memory_reservation.is_some();
    let doc = ResourcesDoc {
        limits: limits_set.then(|| LimitsDoc {
            cpus: limits.cpus.map(|c| c.to_string()),
            memory: limits.memory.map(|m| m.to_string()),
            pids: limits.pids,
        }),
        reservations: reservations_set.then(|| ReservationsDoc {
            cpus: cpus_reservation.map(|c| c.to_string()),
            memory: limits.memory_reservation.map(|m| m.to_string()),
        }),
    };
    (limits_set || reservations_set).then_some(doc)
}

fn restart_policy_doc(policy: &RestartPolicy) -> RestartPolicyDoc<'_> {
    RestartPolicyDoc {
        condition: policy.condition.as_deref(),
        delay: policy.delay.map(duration),
        max_attempts: policy.max_attempts,
        window: policy.window.map(duration),
    }
}

fn placement_doc(placement: &Placement) -> PlacementDoc<'_> {
    PlacementDoc {
        constraints: &placement.constraints,
        preferences: placement
            .preferences
            .iter()
            .map(|spread| SpreadDoc { spread })
            .collect(),
        max_replicas_per_node: placement.max_replicas_per_node,
    }
}

fn update_config_doc(update: &UpdateConfig) -> UpdateConfigDoc<'_> {
    UpdateConfigDoc {
        parallelism: update.parallelism,
        delay: update.delay.map(duration),
        failure_action: update.failure_action.as_deref(),
        monitor: update.monitor.map(duration),
        max_failure_ratio: update.max_failure_ratio,
        order: update.order.as_deref(),
    }
}
