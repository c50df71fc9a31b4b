//! Bringing the stack's services up and down, for `start`, `restart` and
//! `stop`; each file owns one part:
//!
//! - `up`: the order of a start under the deploy lock, and its summary;
//! - `preflight`: what must hold before anything is created;
//! - `services`: a service's containers made to exist and run, after what
//!   it depends on is ready, and what happened to each;
//! - `serve`: nginx last, with its files, then the app through it;
//! - `restore`: what a start restores from nginx's recorded state, and the
//!   record it leaves;
//! - `undo`: what a failed or interrupted start unwinds;
//! - `stop`: stopping a project in order.
//!
//! The steps are methods of the command's [`Stack`](crate::context::Stack).

mod preflight;
mod restore;
mod serve;
mod services;
mod stop;
mod undo;
mod up;

pub use services::Change;
pub use stop::stop_project;
pub use up::UpSummary;
