//! Deploy hooks on a Swarm: each one a job of the swarm (one task, run to
//! its end, never restarted) made from the target color's service
//! ([`service_spec`]) with the hook's command. Its output comes through
//! the manager (the task's log, wherever it runs); its exit code from the
//! task's status. The job's service goes whatever happened: done, failed,
//! past `--hook-timeout`, or Ctrl-C. Which hooks run, when, and how they
//! are shown, judged and recorded is [`crate::switch::hooks`]'s, as on one
//! engine.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use crate::compose::{Compose, Hook, Service};
use crate::context::Stack;
use crate::engine::{Engine, HealthSpec, ServiceMode, Task};
use crate::error::failed_with_hint;
use crate::stack::{HOOK_LABEL, Release, as_hook};

use super::plan::{Planned, service_spec};
use super::service_name;

/// How often the job's task is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How long the task's log may take to end once the task has: the
/// manager fetches it from the task's node.
const LOG_GRACE: Duration = Duration::from_secs(3);

/// The job that runs `hook` (`command`, with `env` added) of `release`
/// for `service`, a color: the color's service, one task that runs the
/// hook's command as its whole command line, no healthcheck, no alias
/// (nothing sends it traffic), never restarted. Labelled with the hook,
/// so that a later run finds one a killed run left.
pub fn job_spec(
    (project, root): (&str, &std::path::Path),
    compose: &Compose,
    service: &Service,
    release: &Release,
    (hook, command): (Hook, &[String]),
    env: BTreeMap<String, String>,
) -> Result<Planned> {
    let mut planned = service_spec(project, root, compose, service, release, None)?;
    let spec = &mut planned.spec;
    spec.name = service_name(project, &format!("{}-{hook}", service.name));
    as_hook(&mut spec.container, (hook, command), env);
    // A swarm's task has no "no entrypoint" of one engine's: its command
    // replaces the image's entrypoint.
    spec.container.entrypoint = spec.container.command.take();
    // No healthcheck, not even the image's: a swarm kills a task that
    // turns unhealthy, and a hook serves nothing to be asked.
    spec.container.healthcheck = Some(HealthSpec {
        test: vec!["NONE".to_owned()],
        ..HealthSpec::default()
    });
    spec.mode = ServiceMode::Job;
    spec.labels
        .insert(HOOK_LABEL.to_owned(), hook.as_str().to_owned());
    Ok(planned)
}

/// Hooks as one-off jobs of the swarm.
pub struct Jobs;

impl crate::switch::hooks::RunHook for Jobs {
    async fn run_hook(
        &self,
        stack: &Stack<'_>,
        one_off: crate::switch::hooks::OneOff<'_>,
        last: &mut VecDeque<String>,
    ) -> Result<Option<i64>> {
        let project = &stack.project.name;
        let (service, release) = (one_off.service, one_off.release);
        let job = job_spec(
            (project, &stack.project.dir),
            stack.compose,
            service,
            release,
            one_off.run_as,
            one_off.env,
        )?;
        run(stack, job, one_off.run_as.0, one_off.timeout, last).await
    }
}

/// Runs `hook`'s job to its end, its output shown through
/// [`crate::switch::hooks::follow`]; its exit code, none when it was still
/// running at `timeout`. A task the swarm could not run (no node for it,
/// an image it could not find) is an error naming why.
pub async fn run(
    stack: &Stack<'_>,
    job: Planned,
    hook: Hook,
    timeout: Duration,
    last: &mut VecDeque<String>,
) -> Result<Option<i64>> {
    let (engine, project) = (stack.engine, &stack.project.name);
    crate::interrupt::check()?;
    let mut spec = job.spec;
    super::up::give_grants(engine, project, &mut spec, &job.grants).await?;
    // One of this name is what a killed run left.
    engine.remove_service(&spec.name).await?;
    let ran = async {
        if !engine.create_service(&spec).await? {
            return Err(failed_with_hint(
                format!("service {} appeared while it was made", spec.name),
                "another tool changes the stack; `cryptus status` shows it",
            ));
        }
        let deadline = Instant::now() + timeout;
        let watched = watch(stack, &spec.name, hook, last);
        match tokio::time::timeout_at(deadline, crate::interrupt::or_interrupted(watched)).await {
            Err(_elapsed) => Ok(None),
            Ok(ended) => exit_of(hook, &ended?),
        }
    }
    .await;
    if let Err(err) = engine.remove_service(&spec.name).await {
        stack
            .printer
            .warn(format!("removing the {hook} hook's job: {err:#}"));
    }
    ran
}

/// Follows the job's task from its start to its end, showing its output;
/// the task as it ended.
async fn watch(
    stack: &Stack<'_>,
    name: &str,
    hook: Hook,
    last: &mut VecDeque<String>,
) -> Result<Task> {
    let (engine, project) = (stack.engine, &stack.project.name);
    // Its log can be read once it has a container.
    let task = loop {
        if let Some(task) = job_task(engine, project, name).await?
            && (task.container_id.is_some() || ended(&task))
        {
            break task;
        }
        tokio::time::sleep(POLL).await;
    };
    if ended(&task) && task.container_id.is_none() {
        return Ok(task);
    }
    let lines = engine.task_log_lines(&task.id, true, None, 0);
    let following = crate::switch::hooks::follow(lines, stack.printer, hook, last);
    tokio::pin!(following);
    let mut followed = false;
    let task = loop {
        tokio::select! {
            _ = &mut following, if !followed => followed = true,
            () = tokio::time::sleep(POLL) => {
                if let Some(task) = job_task(engine, project, name).await?
                    && ended(&task)
                {
                    break task;
                }
            }
        }
    };
    if !followed {
        let _ = tokio::time::timeout(LOG_GRACE, following).await;
    }
    Ok(task)
}

/// The task of job service `name`, once the swarm made it.
async fn job_task(engine: &Engine, project: &str, name: &str) -> Result<Option<Task>> {
    let (services, tasks) = tokio::try_join!(engine.services(project), engine.tasks(project))?;
    let Some(service) = services.iter().find(|s| s.name == name) else {
        return Ok(None);
    };
    Ok(tasks.into_iter().find(|t| t.service_id == service.id))
}

/// Whether a task is over: it will not run (again).
fn ended(task: &Task) -> bool {
    matches!(
        task.state.as_str(),
        "complete" | "failed" | "rejected" | "shutdown" | "orphaned" | "remove"
    )
}

/// The exit code of a job's task that ended; an error when it never ran
/// its command to an end.
fn exit_of(hook: Hook, task: &Task) -> Result<Option<i64>> {
    match (task.state.as_str(), task.exit_code) {
        ("complete", code) => Ok(Some(code.unwrap_or(0))),
        ("failed", Some(code)) if code != 0 => Ok(Some(code)),
        (state, _) => Err(failed_with_hint(
            format!(
                "the {hook} hook's task ended {state}: {}",
                task.error.as_deref().unwrap_or("the swarm says no more")
            ),
            "`docker service ps` on the manager shows why a task does not run; is the image on every node?",
        )),
    }
}

/// Removes the hook jobs a killed run left, saying so.
pub async fn sweep(stack: &Stack<'_>) {
    let (engine, project) = (stack.engine, &stack.project.name);
    let services = match engine.services(project).await {
        Ok(services) => services,
        Err(err) => {
            stack
                .printer
                .warn(format!("looking for hook jobs left behind: {err:#}"));
            return;
        }
    };
    for left in services
        .iter()
        .filter(|s| s.labels.contains_key(HOOK_LABEL))
    {
        let removed = engine.remove_service(&left.name).await;
        crate::switch::hooks::say_swept(stack.printer, &left.name, "job", removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(state: &str, exit_code: Option<i64>) -> Task {
        Task {
            id: "t".into(),
            service_id: "s".into(),
            slot: Some(1),
            node_id: None,
            state: state.into(),
            desired_state: "complete".into(),
            error: (state == "rejected").then(|| "No such image: app:9".into()),
            container_id: None,
            exit_code,
            image: "app:9".into(),
        }
    }

    #[test]
    fn a_hook_is_a_job_of_the_colors_service_with_no_alias_and_no_healthcheck() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yml");
        let text = "services:\n  cryptus-green:\n    image: app:1\n    environment: { A: b }\n    networks: { cryptus: { aliases: [app] } }\n    deploy: { replicas: 3 }\nnetworks:\n  cryptus: {}\n";
        std::fs::write(&file, text).unwrap();
        let compose = crate::compose::load(&[file], &crate::compose::Vars::default()).unwrap();
        let green = compose.service("cryptus-green").unwrap();
        let release = Release {
            image: "app:2".into(),
            version: "2".into(),
        };
        let command = ["./migrate".to_owned(), "up".to_owned()];
        let env = BTreeMap::from([("CRYPTUS_TO_VERSION".to_owned(), "2".to_owned())]);
        let job = job_spec(
            ("shop", dir.path()),
            &compose,
            green,
            &release,
            (Hook::PreDeploy, &command),
            env,
        )
        .unwrap()
        .spec;
        assert_eq!(job.name, "shop_cryptus-green-pre-deploy");
        assert_eq!(job.mode, ServiceMode::Job);
        assert_eq!(job.labels[HOOK_LABEL], "pre-deploy");
        let container = &job.container;
        assert_eq!(container.image, "app:2");
        assert_eq!(container.entrypoint.as_deref(), Some(&command[..]));
        assert_eq!(container.command, None);
        assert_eq!(container.env["A"], "b");
        assert_eq!(container.env["CRYPTUS_TO_VERSION"], "2");
        assert!(container.networks.iter().all(|n| n.aliases.is_empty()));
        let health = container.healthcheck.as_ref().map(|h| h.test.clone());
        assert_eq!(health, Some(vec!["NONE".to_owned()]));
    }

    #[test]
    fn a_jobs_task_ends_with_its_exit_code_or_why_it_never_ran() {
        let hook = Hook::PreDeploy;
        assert_eq!(
            exit_of(hook, &task("complete", Some(0))).ok(),
            Some(Some(0))
        );
        assert_eq!(exit_of(hook, &task("complete", None)).ok(), Some(Some(0)));
        assert_eq!(exit_of(hook, &task("failed", Some(3))).ok(), Some(Some(3)));
        let rejected = exit_of(hook, &task("rejected", None)).unwrap_err();
        assert_eq!(
            rejected.to_string(),
            "the pre-deploy hook's task ended rejected: No such image: app:9"
        );
        assert!(ended(&task("failed", None)) && !ended(&task("running", None)));
    }
}
