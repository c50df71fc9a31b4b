//! The watch after a flip: every new container and the load balancer are
//! probed for the watch window, with the metric gate where Prometheus runs.
//! A failure here flips traffic back. The gate's questions live here too;
//! a canary step asks them through its judge (`canary::judge_step`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, anyhow};
use tokio::time::Instant;

use crate::health::{self, Expect, Probe};
use crate::metrics;
use crate::output::Printer;

/// Failures in a row that end the watch.
const WATCH_FAILURES: u32 = 3;

/// The metric gate: a PromQL condition that, when true, rolls back.
pub struct Gate {
    /// Where and how Prometheus is asked: its published port on one
    /// engine, from inside an edge nginx on a Swarm.
    pub prometheus: metrics::Prometheus,
    /// The condition, filled in for the new version and the window.
    pub query: String,
    /// Whether Prometheus can judge the new version at all
    /// ([`metrics::GATE_SEES`]), filled in the same way.
    pub sees: String,
}

/// How often the gate asks Prometheus during a watch or a canary's hold.
pub const GATE_EVERY: Duration = Duration::from_secs(2);

/// What the gate answered about the new version.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The condition holds: why the new version fails.
    Fails(String),
    /// It does not, and Prometheus holds enough of the new version's
    /// series to have judged it.
    Passes,
    /// It does not, but Prometheus holds too little of the new version to
    /// judge: it has not found and scraped its containers (yet).
    Blind,
    /// Prometheus could not be asked, or refused the query: why.
    Unanswered(String),
}

impl Gate {
    /// The gate's `condition` (and [`metrics::GATE_SEES`]) about `color`'s
    /// `version` over `window`, asked of `prometheus`.
    pub fn new(
        prometheus: metrics::Prometheus,
        condition: &str,
        color: crate::stack::Color,
        version: &str,
        window: Duration,
    ) -> Gate {
        let fill = |template: &str| metrics::gate_query(template, color, version, window);
        Gate {
            prometheus,
            query: fill(condition),
            sees: fill(metrics::GATE_SEES),
        }
    }

    /// Why the new version fails, when the condition holds.
    async fn condition(&self, client: &reqwest::Client) -> Result<Option<String>> {
        let value = self.prometheus.query(client, &self.query).await?;
        Ok(value.map(|value| {
            format!(
                "the metric gate's condition is true (value {value}): {}",
                self.query
            )
        }))
    }

    /// The condition, and when it does not hold, whether that is a verdict
    /// (Prometheus sees the new version) or blindness: an empty answer is
    /// both "no 5xx" and "no data".
    pub async fn ask(&self, client: &reqwest::Client) -> Answer {
        // Both at once: a canary's hold does not read nginx's log while
        // it waits for them.
        let asked = tokio::try_join!(
            self.condition(client),
            self.prometheus.query(client, &self.sees)
        );
        match asked {
            Ok((Some(why), _)) => Answer::Fails(why),
            Ok((None, Some(_))) => Answer::Passes,
            Ok((None, None)) => Answer::Blind,
            Err(err) => Answer::Unanswered(format!("{err:#}")),
        }
    }
}

/// Probes each new container directly and the load balancer until the watch
/// window has passed; three failures in a row of any of them fail the watch,
/// and so does the gate's condition holding.
pub struct Watch<'a> {
    pub client: &'a reqwest::Client,
    pub printer: &'a Printer,
    /// What to probe: the load balancer and each new container, by label.
    pub targets: Vec<(String, String)>,
    pub expect: &'a Expect,
    pub length: Duration,
    pub poll: Duration,
    pub gate: Option<Gate>,
}

pub async fn watch(watch: Watch<'_>) -> Result<()> {
    let Watch {
        client,
        printer,
        targets,
        expect,
        length,
        poll,
        gate,
    } = watch;
    let gate = gate.as_ref();
    let end = Instant::now() + length;
    let mut next_gate = Instant::now() + GATE_EVERY;
    let mut gate_said = false;
    let mut failures: BTreeMap<String, (u32, Probe)> = BTreeMap::new();
    let interval = poll.max(Duration::from_millis(100));
    while Instant::now() < end {
        for (label, addr) in &targets {
            let probe = health::probe(client, addr, Duration::from_secs(2)).await;
            if probe.satisfies(expect) {
                failures.remove(label);
                continue;
            }
            let entry = failures.entry(label.clone()).or_insert((0, probe.clone()));
            entry.0 += 1;
            entry.1 = probe;
            if entry.0 >= WATCH_FAILURES {
                return Err(anyhow!(
                    "{label} failed {WATCH_FAILURES} health checks in a row during the watch; last answer: {}",
                    entry.1
                ));
            }
        }
        if let Some(gate) = gate
            && Instant::now() >= next_gate
        {
            next_gate = Instant::now() + GATE_EVERY;
            ask_gate(printer, client, gate, &mut gate_said).await?;
        }
        tokio::time::sleep(interval).await;
    }
    // Once more at the end, over the whole window.
    if let Some(gate) = gate {
        ask_gate(printer, client, gate, &mut gate_said).await?;
    }
    Ok(())
}

/// Fails when the gate's condition holds. Prometheus not answering is a
/// warning (said once), not a reason to roll back. The Swarm's watch asks
/// it too.
pub async fn ask_gate(
    printer: &Printer,
    client: &reqwest::Client,
    gate: &Gate,
    said: &mut bool,
) -> Result<()> {
    match gate.condition(client).await {
        Ok(Some(why)) => Err(anyhow!(why)),
        Ok(None) => Ok(()),
        Err(err) => {
            if !*said {
                printer.warn(format!("the metric gate could not ask Prometheus: {err:#}"));
                *said = true;
            }
            Ok(())
        }
    }
}
