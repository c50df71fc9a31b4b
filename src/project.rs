//! The project: its name, its directory, the compose files that describe
//! it and the profiles that choose its services.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::compose::{self, Compose, Profiles};
use crate::error::usage;
use crate::orchestrator::Orchestrator;
use crate::stack::check_project_name;

/// The stack's compose file, relative to the project directory.
pub const MAIN_FILE: &str = "compose/docker-compose.zero-downtime.yml";
/// The monitoring services, loaded beside the stack with `--monitoring`.
pub const MONITORING_FILE: &str = "compose/docker-compose.monitoring.yml";
/// Local changes to the stack, merged over the other files when present,
/// as docker compose merges its override file.
pub const OVERRIDE_FILES: [&str; 2] = [
    "compose/docker-compose.override.yml",
    "compose/docker-compose.override.yaml",
];

#[derive(Clone, Debug)]
pub struct Project {
    pub name: String,
    pub dir: PathBuf,
    /// Whether the monitoring services belong to the stack: `--monitoring`
    /// or CRYPTUS_MONITORING=1.
    pub monitoring: bool,
    /// The compose files `-f` or COMPOSE_FILE name, in order; none: the
    /// project's own (the stack, monitoring, the override file).
    pub compose_files: Vec<PathBuf>,
    /// The active profiles: `--profile` or COMPOSE_PROFILES.
    pub profiles: Profiles,
    /// What runs the stack: `--orchestrator` or CRYPTUS_ORCHESTRATOR.
    pub orchestrator: Orchestrator,
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
            compose_files: compose_file_variable(),
            profiles: Profiles::none(),
            orchestrator: Orchestrator::default(),
        })
    }

    /// The files and profiles the command line names (`-f`, `--profile`,
    /// or their variables COMPOSE_FILE and COMPOSE_PROFILES).
    pub fn with_compose(mut self, files: Vec<PathBuf>, profiles: &[String]) -> Result<Project> {
        if !files.is_empty() {
            self.compose_files = files.iter().map(|f| absolute(f)).collect();
        }
        self.profiles = Profiles::new(profiles).map_err(|message| {
            usage(
                message,
                "pass --profile NAME (or set COMPOSE_PROFILES=a,b) with valid names",
            )
        })?;
        Ok(self)
    }

    pub fn main_file(&self) -> PathBuf {
        self.compose_files
            .first()
            .cloned()
            .unwrap_or_else(|| self.dir.join(MAIN_FILE))
    }

    /// The compose files in the order they merge: those `-f` or
    /// COMPOSE_FILE name; else the stack's, the monitoring file (with
    /// `--monitoring`), then the override file when there is one. A missing
    /// file says what to do.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let monitoring = self.dir.join(MONITORING_FILE);
        if !self.compose_files.is_empty() {
            let mut files = self.compose_files.clone();
            if let Some(missing) = files.iter().find(|f| !f.is_file()) {
                return Err(usage(
                    format!("{} does not exist", missing.display()),
                    "check the files -f and COMPOSE_FILE name",
                ));
            }
            if self.monitoring && !files.contains(&monitoring) {
                files.push(self.existing(monitoring)?);
            }
            return Ok(files);
        }
        let mut files = vec![self.existing(self.dir.join(MAIN_FILE))?];
        if self.monitoring {
            files.push(self.existing(monitoring)?);
        }
        if let Some(local) = OVERRIDE_FILES
            .iter()
            .map(|f| self.dir.join(f))
            .find(|f| f.is_file())
        {
            files.push(local);
        }
        Ok(files)
    }

    /// `path`, when it exists; else the hint to run `init`.
    fn existing(&self, path: PathBuf) -> Result<PathBuf> {
        if path.exists() {
            return Ok(path);
        }
        Err(usage(
            format!("{} does not exist", path.display()),
            format!(
                "run `cryptus init {}` to write the default files, or pass --project-dir",
                self.dir.display()
            ),
        ))
    }

    /// Loads the compose files; a missing file says to run `init`.
    pub fn load(&self) -> Result<Compose> {
        let files = self.files()?;
        let vars = compose::variables(&files[0]).map_err(|err| {
            usage(
                format!("{err:#}"),
                "fix the .env file beside the compose file",
            )
        })?;
        let compose = compose::load_with(&files, &vars, &self.profiles).map_err(|err| {
            usage(
                format!("{err:#}"),
                "fix the compose file; README.md lists the keys cryptus supports",
            )
        })?;
        if let Some(name) = compose.name.as_ref().filter(|name| **name != self.name) {
            return Err(usage(
                format!(
                    "{}: the files name the project {name:?}, but cryptus runs it as project {:?}",
                    files[0].display(),
                    self.name
                ),
                format!("pass -p {name} (or set CRYPTUS_PROJECT), or change name: in the file"),
            ));
        }
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

/// The files COMPOSE_FILE names, split at COMPOSE_PATH_SEPARATOR (`:` by
/// default), relative ones against the current directory, as docker
/// compose reads them.
fn compose_file_variable() -> Vec<PathBuf> {
    let Ok(list) = std::env::var("COMPOSE_FILE") else {
        return Vec::new();
    };
    let separator = std::env::var("COMPOSE_PATH_SEPARATOR")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| ":".to_owned());
    split_files(&list, &separator)
}

fn split_files(list: &str, separator: &str) -> Vec<PathBuf> {
    list.split(separator)
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| absolute(Path::new(f)))
        .collect()
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_file_lists_split_at_their_separator() {
        let files = split_files("/a/b.yml:/a/c.yml::", ":");
        assert_eq!(
            files,
            [PathBuf::from("/a/b.yml"), PathBuf::from("/a/c.yml")]
        );
        let files = split_files("/a/b.yml;/a/c.yml", ";");
        assert_eq!(files.len(), 2);
        assert!(split_files("rel.yml", ":")[0].is_absolute());
    }

    #[test]
    fn the_override_file_comes_last_and_named_files_replace_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("compose")).unwrap();
        for file in [MAIN_FILE, MONITORING_FILE, OVERRIDE_FILES[0]] {
            std::fs::write(dir.path().join(file), "services: {}\n").unwrap();
        }
        let mut project = Project::new(dir.path(), "p").unwrap();
        project.compose_files.clear();
        project.monitoring = true;
        let names: Vec<String> = project
            .files()
            .unwrap()
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "docker-compose.zero-downtime.yml",
                "docker-compose.monitoring.yml",
                "docker-compose.override.yml"
            ]
        );
        let named = dir.path().join(OVERRIDE_FILES[0]);
        let project = project.with_compose(vec![named.clone()], &[]).unwrap();
        let files = project.files().unwrap();
        assert_eq!(files[0], named);
        assert_eq!(files.len(), 2, "monitoring joins the named files");
        assert!(project.with_compose(vec![], &["bad name".into()]).is_err());
    }
}
