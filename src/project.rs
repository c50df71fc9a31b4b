//! The project: its name, its directory and the compose files in it.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::compose::{self, Compose};
use crate::error::usage;
use crate::stack::check_project_name;

/// The stack's compose file, relative to the project directory.
pub const MAIN_FILE: &str = "compose/docker-compose.zero-downtime.yml";
/// The monitoring services, loaded beside the stack with `--monitoring`.
pub const MONITORING_FILE: &str = "compose/docker-compose.monitoring.yml";

#[derive(Clone, Debug)]
pub struct Project {
    pub name: String,
    pub dir: PathBuf,
    /// Whether the monitoring services belong to the stack: `--monitoring`
    /// or CRYPTUS_MONITORING=1.
    pub monitoring: bool,
}

impl Project {
    pub fn new(dir: &Path, name: &str) -> Result<Project> {
        check_project_name(name)
            .map_err(|message| usage(message, "pass -p NAME or set CRYPTUS_PROJECT"))?;
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let monitoring = std::env::var("CRYPTUS_MONITORING")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        Ok(Project {
            name: name.to_owned(),
            dir,
            monitoring,
        })
    }

    pub fn main_file(&self) -> PathBuf {
        self.dir.join(MAIN_FILE)
    }

    /// Loads the compose files; a missing file says to run `init`.
    pub fn load(&self) -> Result<Compose> {
        let main = self.main_file();
        if !main.exists() {
            return Err(usage(
                format!("{} does not exist", main.display()),
                format!(
                    "run `cryptus init {}` to write the default files, or pass --project-dir",
                    self.dir.display()
                ),
            ));
        }
        let mut files = vec![main];
        if self.monitoring {
            let monitoring = self.dir.join(MONITORING_FILE);
            if !monitoring.exists() {
                return Err(usage(
                    format!("{} does not exist", monitoring.display()),
                    format!(
                        "run `cryptus init {}` to write the default files",
                        self.dir.display()
                    ),
                ));
            }
            files.push(monitoring);
        }
        let vars = compose::variables(&files[0]).map_err(|err| {
            usage(
                format!("{err:#}"),
                "fix the .env file beside the compose file",
            )
        })?;
        let compose = compose::load(&files, &vars).map_err(|err| {
            usage(
                format!("{err:#}"),
                "fix the compose file; README.md lists the keys cryptus supports",
            )
        })?;
        for color in crate::stack::Color::ALL {
            if compose.service(color.service()).is_none() {
                return Err(usage(
                    format!(
                        "{}: there is no service {}",
                        files[0].display(),
                        color.service()
                    ),
                    "the stack needs the services nginx, redis, cryptus-blue and cryptus-green",
                ));
            }
        }
        if compose.service(crate::stack::LB_SERVICE).is_none() {
            return Err(usage(
                format!("{}: there is no service nginx", files[0].display()),
                "the stack needs the services nginx, redis, cryptus-blue and cryptus-green",
            ));
        }
        Ok(compose)
    }
}
