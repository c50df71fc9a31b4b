//! cryptus: zero-downtime blue/green deployments of a web app on a Docker host.
//!
//! The library behind the `cryptus` binary (`src/main.rs`), also what the
//! fuzz targets exercise: the compose model, the backup manifest, and the
//! rest of the domain, one module each.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod assets;
pub mod backup;
pub mod build;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod compose;
pub mod context;
pub mod engine;
pub mod error;
pub mod files;
pub mod health;
pub mod history;
pub mod host_files;
pub mod inside;
pub mod interrupt;
pub mod lb;
pub mod lifecycle;
pub mod lock;
pub mod logs;
pub mod maintenance;
pub mod metrics;
pub mod nginx;
pub mod notify;
pub mod orchestrator;
pub mod output;
pub mod project;
pub mod ready;
pub mod recorded;
pub mod redis;
pub mod secrets;
pub mod stack;
pub mod status;
pub mod swarm;
pub mod switch;
pub mod tcp;
pub mod wait;
