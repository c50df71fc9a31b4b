//! What the engine itself costs on this machine, measured in the same run as
//! the switches and through cryptus's own engine code: the floors under
//! cryptus's timings. A switch takes its lock (a container created, and
//! removed at the end) and runs `nginx -t` and the reload in one exec that
//! was started ahead (its process start overlaps the lock and the reading
//! of the state), so a lower bound of its floor is the lock plus `nginx
//! -t`'s own work: the exec of `nginx -t` less the bare exec (`true`),
//! whose end (exit, stream closed, exit code read) the switch still pays. A rollback's traffic is back once that
//! exec ends, before the lock goes. `health` starts its exec of `nginx -t`
//! when asked, so the whole exec is its floor.

use std::collections::BTreeMap;
use std::time::Instant;

use cryptus::engine::{ContainerSpec, Engine};
use serde::{Deserialize, Serialize};

/// Milliseconds of each engine operation, one sample per measurement.
#[derive(Default)]
pub struct Floors {
    lock: Vec<f64>,
    lock_create: Vec<f64>,
    exec: Vec<f64>,
    nginx_test: Vec<f64>,
}

/// The medians, and their sum: the switch's floor.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Medians {
    /// A never-started container created, then removed (the deploy lock).
    pub lock_ms: f64,
    /// Its creation alone: what taking the lock costs before a switch.
    #[serde(default)]
    pub lock_create_ms: f64,
    /// `true` run in nginx's container through an exec.
    pub exec_ms: f64,
    /// `nginx -t` run in nginx's container through an exec.
    pub nginx_test_ms: f64,
    /// The lock created and removed, plus `nginx -t`'s own work: what no
    /// switch's overhead goes below on this engine.
    pub floor_ms: f64,
    /// The lock created, plus `nginx -t`'s own work: what no rollback's
    /// "traffic back" goes below.
    #[serde(default)]
    pub rollback_floor_ms: f64,
    pub samples: usize,
}

impl Floors {
    /// One sample of each, against the project's nginx.
    pub async fn measure(&mut self, project: &str) -> Result<(), String> {
        let engine = Engine::connect().await.map_err(|e| format!("{e:#}"))?;
        let nginx = format!("{project}-nginx-1");
        let timed = Instant::now();
        let spec = ContainerSpec {
            name: format!("{project}-floor-lock"),
            image: crate::support::app_image(),
            labels: BTreeMap::from([("com.docker.compose.project".to_owned(), project.to_owned())]),
            command: Some(vec!["floor".to_owned()]),
            ..Default::default()
        };
        let id = engine
            .create_container_exclusive(&spec)
            .await
            .map_err(|e| format!("{e:#}"))?
            .ok_or("the floor's lock container already exists")?;
        self.lock_create.push(ms(timed));
        engine
            .remove(&id, true)
            .await
            .map_err(|e| format!("{e:#}"))?;
        self.lock.push(ms(timed));
        for (command, samples) in [
            (vec!["true"], &mut self.exec),
            (
                vec!["nginx", "-t", "-q", "-c", cryptus::nginx::CONF],
                &mut self.nginx_test,
            ),
        ] {
            let timed = Instant::now();
            let output = engine
                .exec(&nginx, &command)
                .await
                .map_err(|e| format!("{e:#}"))?;
            if output.code != 0 {
                return Err(format!(
                    "`{}` in {nginx} exited {}",
                    command.join(" "),
                    output.code
                ));
            }
            samples.push(ms(timed));
        }
        Ok(())
    }

    pub fn medians(self) -> Option<Medians> {
        let samples = self.lock.len();
        let (lock_ms, lock_create_ms, exec_ms, nginx_test_ms) = (
            median(self.lock)?,
            median(self.lock_create)?,
            median(self.exec)?,
            median(self.nginx_test)?,
        );
        // `nginx -t`'s own work, its process start aside.
        let test_work = (nginx_test_ms - exec_ms).max(0.0);
        Some(Medians {
            lock_ms,
            lock_create_ms,
            exec_ms,
            nginx_test_ms,
            floor_ms: round(lock_ms + test_work),
            rollback_floor_ms: round(lock_create_ms + test_work),
            samples,
        })
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().map(round)
}
