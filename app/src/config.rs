//! The app's settings, read once from the environment.

use std::time::Duration;

pub struct Config {
    pub port: u16,
    pub color: String,
    pub version: String,
    pub redis: Option<crate::redis::Endpoint>,
    /// Wait this long before listening, like an app that boots slowly.
    pub startup_delay: Duration,
    /// Health never turns healthy (answers 503 `unhealthy`).
    pub never_healthy: bool,
    /// Exit with an error this long after start.
    pub crash_after: Option<Duration>,
    /// Share of non-health requests answered with 500, from 0 to 1.
    pub error_ratio: f64,
    /// Grafana's admin password file: /api/annotations then asks for it.
    pub grafana_password_file: Option<std::path::PathBuf>,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let number = |name: &str| -> Result<Option<f64>, String> {
            var(name)
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|n| n.is_finite() && *n >= 0.0)
                        .ok_or_else(|| format!("{name}={v:?} is not a non-negative number"))
                })
                .transpose()
        };
        let port = match var("PORT") {
            Some(port) => port
                .trim()
                .parse()
                .map_err(|_| format!("PORT={port:?} is not a port number"))?,
            None => 3000,
        };
        let error_ratio = number("APP_ERROR_RATIO")?.unwrap_or(0.0);
        if error_ratio > 1.0 {
            return Err(format!("APP_ERROR_RATIO={error_ratio} is above 1"));
        }
        let redis = var("REDIS_URL")
            .map(|url| crate::redis::Endpoint::parse(&url))
            .transpose()?;
        Ok(Config {
            port,
            color: var("INSTANCE_COLOR").unwrap_or_else(|| "blue".to_owned()),
            version: var("APP_VERSION").unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
            redis,
            startup_delay: Duration::from_secs_f64(
                number("APP_STARTUP_DELAY_MS")?.unwrap_or(0.0) / 1000.0,
            ),
            never_healthy: matches!(var("APP_UNHEALTHY").as_deref(), Some("1" | "true" | "yes")),
            crash_after: number("APP_CRASH_AFTER_S")?
                .filter(|s| *s > 0.0)
                .map(Duration::from_secs_f64),
            error_ratio,
            grafana_password_file: var("GF_SECURITY_ADMIN_PASSWORD__FILE").map(Into::into),
        })
    }
}
