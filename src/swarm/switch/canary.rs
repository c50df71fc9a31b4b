//! `deploy --canary` on a Swarm: before the flip, every edge's nginx sends
//! each step's share of clients to the new color, held and judged as on
//! one engine ([`crate::switch::canary`]: the same steps, weights, judge
//! and report), the tally read from every edge's access log.
//!
//! The canary's upstream names each task by its address, not the color's
//! `tasks.<service>` name with `resolve`: nginx hashes a resolved address
//! by the name it was resolved from, so every task of a color would share
//! one set of points on the ring and one task would take all of that
//! color's clients. By address, each task holds its own points, weighted
//! from the task counts ([`canary::servers`]), as containers are on one
//! engine; the flip to 100% goes back to the resolved name.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;

use crate::context::Stack;
use crate::engine::Engine;
use crate::error::failed_with_hint;
use crate::history::{Entry, Outcome, Side, operation};
use crate::nginx::{self, Served};
use crate::output::Printer;
use crate::stack::{APP_PORT, Color, Release};
use crate::switch::canary::{self, Options, Progress, StepAnswers};
use crate::switch::report::{Report, Steps};

use super::{Looks, Switch, Tasks};
use crate::health::Expect;
use crate::swarm::edge::Edges;
use crate::swarm::service_name;
use crate::swarm::state::{ClusterState, LiveCanary};

/// The `ip:port` of each address, as nginx's log names the upstream.
fn with_port(addrs: &[std::net::IpAddr]) -> Vec<String> {
    addrs.iter().map(|ip| format!("{ip}:{APP_PORT}")).collect()
}

/// The upstream of a canary at `percent` of `served`'s color over the old
/// color's task addresses and the canary's, for every edge.
pub fn upstream(
    served: Served,
    old: &[std::net::IpAddr],
    canary: &[std::net::IpAddr],
    cookie: &str,
) -> Result<String> {
    let percent = served.canary.map_or(0, |c| c.percent);
    let names = |addrs: &[std::net::IpAddr]| addrs.iter().map(ToString::to_string).collect();
    let (old, canary): (Vec<String>, Vec<String>) = (names(old), names(canary));
    let servers = canary::servers(percent, &old, &canary, APP_PORT);
    nginx::render_canary_upstream(served, &servers, cookie)
}

impl Switch<'_> {
    /// A canary's steps, when one was asked, before the flip to 100%:
    /// every edge sends each step's share of clients to the new color's
    /// tasks, recorded in the cluster's state, then held and judged.
    pub(super) async fn canary_steps(&mut self, steps: &mut Steps<'_>) -> Result<()> {
        let Some(options) = self.settings.canary.clone() else {
            return Ok(());
        };
        if self.from_addrs.is_empty() {
            return Err(failed_with_hint(
                format!(
                    "no task of {} answered on the overlay: a canary needs the old color to serve the rest",
                    self.from.color
                ),
                "`cryptus health` shows each task; deploy without --canary to move every client",
            ));
        }
        self.canary = Some(Progress::new(self.to.color, &options.steps));
        for &percent in &options.steps {
            self.failed_at = Some(percent);
            self.canary_step(steps, &options, percent).await?;
        }
        self.failed_at = None;
        // The flip retires the canary's workers.
        self.old_workers = self.edge.workers().await;
        Ok(())
    }

    async fn canary_step(
        &mut self,
        steps: &mut Steps<'_>,
        options: &Options,
        percent: u8,
    ) -> Result<()> {
        let progress = self
            .canary
            .clone()
            .unwrap_or_else(|| Progress::new(self.to.color, &[]));
        let served = Served {
            color: self.from.color,
            canary: Some(progress.canary(percent)),
        };
        let text = upstream(served, &self.from_addrs, &self.to_addrs, &options.cookie)?;
        let message = format!(
            "sending {percent}% of clients to {} {}",
            self.to.color, self.to.version
        );
        let name = format!("canary {percent}%");
        steps
            .run(&name, message, self.edge.apply_upstream(&text))
            .await?;
        if let Some(progress) = &mut self.canary {
            progress.reached = Some(percent);
        }
        self.state.canary = served.canary.map(|canary| LiveCanary {
            canary,
            release: self.release.clone(),
        });
        let (engine, project) = (self.stack.engine, &self.stack.project.name);
        if let Err(err) = super::state::write(engine, project, &mut self.state).await {
            self.stack.printer.warn(format!(
                "recording the canary in the cluster's state: {err:#}"
            ));
        }
        let logs = self.edge.logs();
        let canary_addrs = with_port(&self.to_addrs);
        let until = tokio::time::Instant::now() + options.hold;
        let (gate, client) = (self.metric_gate(options.hold), crate::health::client());
        let message = format!(
            "holding {percent}% for {}",
            crate::output::seconds(options.hold)
        );
        let payload = crate::notify::Payload::canary_step(project, &self.from, &self.to, percent);
        // The canary's tasks (those its upstream names) probed, and every
        // edge answering healthy as either color, as one engine's hold
        // probes its containers; the step's judge asks the gate.
        let old = Expect {
            color: self.from.color,
            version: None,
        };
        let edges = [self.expect(), old];
        let looks = Looks {
            tasks: Tasks::At(&self.to_addrs),
            edges: &edges,
            during: "while held",
        };
        let (held, answers, warnings) = canary::hold_step(
            steps,
            (percent, message),
            (&self.settings.notify, &payload),
            // The metric gate where the stack runs Prometheus, weighed
            // against the tally of every edge's log, as on one engine.
            async |answers: &mut StepAnswers| {
                let gate = gate.as_ref().map(|gate| (&client, gate));
                let judged = canary::judge_step(&logs, &canary_addrs, gate, until, answers);
                tokio::try_join!(self.probe(looks, options.hold, None), judged)?;
                Ok(())
            },
        )
        .await;
        self.warnings.extend(warnings);
        if let Some(progress) = &mut self.canary {
            progress.answers.push(answers);
        }
        held
    }
}

/// Why a deploy waits for a canary a killed deploy left.
pub fn live(live: &LiveCanary, active: Color) -> anyhow::Error {
    failed_with_hint(
        format!(
            "a canary of {} is live at {}% (a canary deploy was killed)",
            live.canary.color, live.canary.percent
        ),
        format!("`cryptus rollback` ends it, every client back on {active}; then deploy"),
    )
}

/// Ending a canary a killed deploy left, as `rollback` and `start` do:
/// every edge back on the active color, then nginx's old workers drained
/// and the canary's service scaled to 0.
pub struct Ending<'e> {
    pub edge: &'e Edges,
    pub active: Color,
    /// The canary's service.
    pub canary: String,
}

impl Ending<'_> {
    /// Every edge serves the active color alone, its answering tasks the
    /// backups while nginx's new workers resolve its name. The workers
    /// from before, to drain.
    pub async fn back(&self) -> (Vec<Vec<String>>, Result<()>) {
        let probes = self.edge.first().probe_tasks(self.active).await;
        let addrs = probes.map(|p| super::answering(&p)).unwrap_or_default();
        let old = self.edge.workers().await;
        (old, self.edge.apply(self.active, &addrs).await)
    }

    /// Drains the `old` workers (up to `drain`: one that outlives it is a
    /// warning), then scales the canary's service to 0.
    pub async fn retire(
        &self,
        engine: &Engine,
        printer: &Printer,
        old: &[Vec<String>],
        drain: Duration,
    ) -> Result<()> {
        if let Err(err) = self.edge.drain(printer, old, drain).await {
            printer.warn(format!("{err:#}"));
        }
        engine.scale_service(&self.canary, 0).await.map(|_| ())
    }

    fn retiring(&self) -> String {
        format!(
            "draining nginx's old workers, then scaling {} to 0",
            self.canary
        )
    }
}

impl Switch<'_> {
    /// A rollback while a canary a killed deploy left is live: every edge
    /// goes back to the served color (`from`), then the canary's color
    /// (`to`) is scaled to 0. Recorded as a rollback from the canary's
    /// release.
    pub(super) async fn abandon_canary(
        mut self,
        steps: &mut Steps<'_>,
        began: Instant,
    ) -> Result<Report> {
        let active = self.from.color;
        let ending = Ending {
            edge: &self.edge,
            active,
            canary: self.target_name(),
        };
        let message = format!("putting every client back on {active}");
        let back = async {
            let (old, applied) = ending.back().await;
            applied.map(|()| old)
        };
        let back = steps.run("switch", message, back).await;
        let old_workers = match back {
            Ok(old) => old,
            Err(err) => {
                // What moved: from the canary's release back to the served
                // color's. The canary stays recorded: it is live still.
                std::mem::swap(&mut self.from, &mut self.to);
                let mut report = self.report(steps, began, Outcome::Failed, Some(&err));
                report.warnings.extend(self.record(&report).await);
                for warning in &report.warnings {
                    self.stack.printer.warn(warning);
                }
                return Ok(report);
            }
        };
        let (stack, settings) = (self.stack, self.settings);
        let retire = ending.retire(stack.engine, stack.printer, &old_workers, settings.drain);
        let retired = steps.run("drain", ending.retiring(), retire).await;
        std::mem::swap(&mut self.from, &mut self.to);
        self.old_workers = old_workers;
        self.state.canary = None;
        self.state.active = Some(active);
        let mut report = self.report(steps, began, Outcome::Ok, None);
        if let Err(err) = retired {
            report.warnings.push(format!("{err:#}"));
        }
        report.warnings.extend(self.record(&report).await);
        for warning in &report.warnings {
            stack.printer.warn(warning);
        }
        Ok(report)
    }
}

/// What `start` tells of a canary a killed deploy left, which it ends as
/// on one engine.
pub fn ended_warning(live: &LiveCanary, retired: bool) -> String {
    let color = live.canary.color;
    let service = if retired {
        format!("{color}'s service is scaled to 0")
    } else {
        format!("{color}'s service could not be scaled to 0 (said above)")
    };
    format!(
        "a canary of {color} at {}% was live (its deploy did not finish): ended; \
         every client is on the active color, and {service}",
        live.canary.percent
    )
}

/// `start` serves the recorded active color alone, as on one engine: a
/// canary a killed deploy left ends (every edge on `active`, the canary's
/// service at 0 tasks), with a warning, and the end is recorded in the
/// history as a repair from the canary's release to the active color's.
/// What went wrong after the edges were put back is a warning; the
/// canary stays recorded until they are. The edges are asked first, as
/// deploy and rollback ask them ([`super::read_active`]): a canary whose
/// deploy was cut short after its flip to 100% is over, so it is
/// forgotten and nothing is put back (the record is corrected to the
/// color they serve). The color that serves, and the canary ended.
pub async fn end_left(
    stack: &Stack<'_>,
    state: &mut ClusterState,
    active: Color,
    drain: Duration,
) -> Result<(Color, Option<LiveCanary>)> {
    if state.canary.is_none() {
        return Ok((active, None));
    }
    let began = Instant::now();
    let (engine, project, printer) = (stack.engine, &stack.project.name, stack.printer);
    let edge = Edges::find(engine, project).await.map_err(|err| {
        err.context(
            "a canary a killed deploy left is recorded, and no edge nginx answers to end it",
        )
    })?;
    let (read, active) = super::read_active(stack, &edge, true).await?;
    *state = read;
    let Some(live) = state.canary.clone() else {
        return Ok((active, None));
    };
    let ending = Ending {
        edge: &edge,
        active,
        canary: service_name(project, live.canary.color.service()),
    };
    let step = printer.step(format!("putting every client back on {active}"));
    let (old, applied) = ending.back().await;
    if let Err(err) = applied {
        step.fail();
        return Err(failed_with_hint(
            format!(
                "ending the canary of {} a killed deploy left: {err:#}",
                live.canary.color
            ),
            "`cryptus status` shows what each edge serves; `cryptus rollback` ends the canary once every edge answers",
        ));
    }
    step.done();
    let step = printer.step(ending.retiring());
    let retired = match ending.retire(engine, printer, &old, drain).await {
        Ok(()) => {
            step.done();
            true
        }
        Err(err) => {
            step.fail();
            printer.warn(format!("{err:#}"));
            false
        }
    };
    printer.warn(ended_warning(&live, retired));
    state.canary = None;
    state.active = Some(active);
    let entry = ended_entry(state, &live, active, began.elapsed());
    for warning in super::state::record(engine, project, state, entry, &[]).await {
        printer.warn(warning);
    }
    Ok((active, Some(live)))
}

/// The history's entry for a canary `start` ended: a repair from the
/// canary's release to the active color's.
fn ended_entry(state: &ClusterState, live: &LiveCanary, active: Color, took: Duration) -> Entry {
    let side = |color: Color, release: Option<&Release>| Side {
        color,
        image: release.map(|r| r.image.clone()).unwrap_or_default(),
        version: release.map(|r| r.version.clone()).unwrap_or_default(),
        image_id: None,
        replicas: state.replicas.get(&color).copied().unwrap_or_default(),
    };
    let canary = live.canary.color;
    Entry {
        time: chrono::Utc::now(),
        operation: operation::REPAIR.to_owned(),
        user: crate::lock::user(),
        host: crate::lock::hostname(),
        from: Side {
            replicas: 0,
            ..side(canary, Some(&live.release))
        },
        to: side(active, state.releases.get(&active)),
        outcome: Outcome::Ok,
        reason: Some(format!(
            "ended a canary of {canary} {} at {}% that a killed deploy left",
            live.release.version, live.canary.percent
        )),
        durations: BTreeMap::from([("total".to_owned(), took.as_secs_f64())]),
        hooks: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::Canary;
    use crate::stack::Color;

    fn addrs(prefix: &str, n: usize) -> Vec<std::net::IpAddr> {
        (1..=n)
            .map(|i| format!("{prefix}.{i}").parse().unwrap())
            .collect()
    }

    /// Each task's points on nginx's ring are its weight: the canary's
    /// tasks together hold the step's share, whatever the task counts.
    #[test]
    fn a_swarm_canary_weighs_each_task_by_the_task_counts() {
        for (old, new) in [(3, 3), (3, 1), (1, 4), (5, 2)] {
            for percent in [10, 50] {
                let served = Served {
                    color: Color::Blue,
                    canary: Some(Canary {
                        color: Color::Green,
                        percent,
                    }),
                };
                let text =
                    upstream(served, &addrs("10.0.1", old), &addrs("10.0.2", new), "sid").unwrap();
                let weight_of = |prefix: &str| -> u64 {
                    text.lines()
                        .filter(|l| l.trim_start().starts_with(&format!("server {prefix}.")))
                        .map(|l| {
                            let w = l.split("weight=").nth(1).unwrap();
                            w.trim_end_matches(';').parse::<u64>().unwrap()
                        })
                        .sum()
                };
                let (blue, green) = (weight_of("10.0.1"), weight_of("10.0.2"));
                let share = 100.0 * green as f64 / (blue + green) as f64;
                assert!(
                    (share - f64::from(percent)).abs() < 0.6,
                    "{percent}% over {old}+{new} tasks: {share}\n{text}"
                );
                assert!(text.contains("hash $cryptus_canary_key consistent;"));
                assert!(text.contains("default \"blue;canary=green:"), "{text}");
                assert!(!text.contains("resolve"), "{text}");
            }
        }
    }

    /// `start` records the canary it ends as a repair from the canary's
    /// release to the active color's, and warns as one engine does.
    #[test]
    fn a_canary_start_ends_is_a_repair_from_its_release() {
        let release = |version: &str| Release {
            image: format!("app:{version}"),
            version: version.to_owned(),
        };
        let live = LiveCanary {
            canary: Canary {
                color: Color::Green,
                percent: 10,
            },
            release: release("5.0.0"),
        };
        let mut state = ClusterState::default();
        state.releases.insert(Color::Blue, release("1.0.0"));
        state.replicas.insert(Color::Blue, 3);
        let entry = ended_entry(&state, &live, Color::Blue, Duration::from_secs(2));
        assert_eq!(entry.operation, "repair");
        assert_eq!(entry.outcome, Outcome::Ok);
        assert_eq!(
            (entry.from.color, entry.from.version.as_str()),
            (Color::Green, "5.0.0")
        );
        assert_eq!(
            (entry.to.color, entry.to.version.as_str(), entry.to.replicas),
            (Color::Blue, "1.0.0", 3)
        );
        assert_eq!(
            entry.reason.as_deref(),
            Some("ended a canary of green 5.0.0 at 10% that a killed deploy left")
        );
        assert_eq!(entry.durations.get("total"), Some(&2.0));
        assert!(ended_warning(&live, false).ends_with("could not be scaled to 0 (said above)"));
        let warning = ended_warning(&live, true);
        assert!(
            warning.starts_with(
                "a canary of green at 10% was live (its deploy did not finish): ended;"
            ) && warning.ends_with("green's service is scaled to 0"),
            "{warning}"
        );
    }

    #[test]
    fn a_canary_step_names_each_task_with_the_apps_port() {
        assert_eq!(
            with_port(&addrs("10.0.2", 2)),
            ["10.0.2.1:3000", "10.0.2.2:3000"]
        );
    }
}
