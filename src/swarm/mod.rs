//! The stack as services of a Docker Swarm, driven through a manager's
//! engine: named and labelled as `docker stack deploy` names and labels
//! them, so `docker stack services|ps <project>` show them.
//!
//! `status`: what runs where (tasks per node); `state`: what the cluster
//! holds (active color, releases, history, the deploy lock); `switch`:
//! deploy and rollback, through the edge nginx (`edge`); `scale`: the
//! active color's task count; `health`: every task, the edge and redis;
//! `logs`: every task's log, through the manager; `restart`: a rolling
//! restart of every service; `hooks`: deploy hooks as jobs of the swarm.

pub mod backup;
pub mod edge;
pub mod health;
pub mod hooks;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod nodes;
pub mod plan;
pub mod registry;
pub mod resources;
pub mod restart;
pub mod scale;
pub mod state;
pub mod status;
pub mod switch;
pub mod up;

/// A stack service's name in the swarm: `<project>_<service>`, as
/// `docker stack deploy` names it.
pub fn service_name(project: &str, service: &str) -> String {
    format!("{project}_{service}")
}

/// The compose service a stack service's name stands for, if it is the
/// project's.
pub fn compose_service<'n>(project: &str, name: &'n str) -> Option<&'n str> {
    name.strip_prefix(project)
        .and_then(|rest| rest.strip_prefix('_'))
        .filter(|service| !service.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_names_go_both_ways() {
        let name = service_name("shop", "cryptus-blue");
        assert_eq!(name, "shop_cryptus-blue");
        assert_eq!(compose_service("shop", &name), Some("cryptus-blue"));
        assert_eq!(compose_service("sho", &name), None);
        assert_eq!(compose_service("shop", "shop_"), None);
        assert_eq!(compose_service("shop", "other_redis"), None);
    }
}
