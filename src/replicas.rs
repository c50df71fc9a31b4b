//! Replica counts: the range cryptus accepts, and the counts `scale`
//! records for the next deploy into an idle color. Those counts are
//! deployment state, kept with the engine in nginx's state volume beside
//! the history, so that `deploy` and `scale` share them without depending
//! on each other.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::nginx::Nginx;
use crate::stack::Color;

/// More replicas than this on one host is a typo, not a plan.
pub const MAX_REPLICAS: u32 = 32;
/// Counts recorded for the next deploy into a color.
pub const PENDING_FILE: &str = "replicas.json";

/// The recorded counts; none when the file is missing or unreadable.
pub async fn read_pending(nginx: &Nginx<'_>) -> BTreeMap<Color, u32> {
    match nginx.read(PENDING_FILE).await {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

pub async fn write_pending(nginx: &Nginx<'_>, pending: &BTreeMap<Color, u32>) -> Result<()> {
    let text = serde_json::to_string(pending).context("encoding the replica counts")?;
    nginx.write(&[(PENDING_FILE, &text)], true).await
}
