//! The watch after a flip: every new container and the load balancer are
//! probed for the watch window, with the metric gate where Prometheus runs.
//! A failure here flips traffic back.

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
    pub addr: String,
    pub query: String,
}

/// How often the gate asks Prometheus during the watch.
const GATE_EVERY: Duration = Duration::from_secs(2);

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
/// warning (said once), not a reason to roll back.
async fn ask_gate(
    printer: &Printer,
    client: &reqwest::Client,
    gate: &Gate,
    said: &mut bool,
) -> Result<()> {
    match metrics::query(client, &gate.addr, &gate.query).await {
        Ok(Some(value)) => Err(anyhow!(
            "the metric gate's condition is true (value {value}): {}",
            gate.query
        )),
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
