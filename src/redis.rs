//! Redis, through `redis-cli` run inside its container by the engine: health
//! checks and backups need no network path to Redis and no client library.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use crate::engine::Engine;

pub struct Redis<'a> {
    pub engine: &'a Engine,
    pub container: String,
}

impl Redis<'_> {
    /// Runs `redis-cli` with `args` and returns its output; a Redis error
    /// reply (`ERR ...`) is an error.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let mut command = vec!["redis-cli", "--no-auth-warning"];
        command.extend_from_slice(args);
        let output = self.engine.exec(&self.container, &command).await?;
        let text = output.stdout.trim().to_owned();
        if output.code != 0 || text.starts_with("ERR") || text.starts_with("NOAUTH") {
            bail!(
                "redis-cli {} in {} failed: {}",
                args.join(" "),
                self.container,
                format!("{text} {}", output.stderr.trim()).trim()
            );
        }
        Ok(text)
    }

    pub async fn ping(&self) -> Result<()> {
        let answer = self.cli(&["ping"]).await?;
        if answer != "PONG" {
            bail!("redis answered {answer:?} to PING");
        }
        Ok(())
    }

    /// `INFO section` as a map.
    pub async fn info(&self, section: &str) -> Result<BTreeMap<String, String>> {
        Ok(parse_info(&self.cli(&["info", section]).await?))
    }
}

/// Parses `INFO` output: `key:value` lines, `#` section headers.
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_sections() {
        let info = parse_info(
            "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\n",
        );
        assert_eq!(info["rdb_bgsave_in_progress"], "0");
        assert_eq!(info["rdb_last_bgsave_status"], "ok");
        assert_eq!(info["aof_enabled"], "1");
        assert!(!info.contains_key("# Persistence"));
    }
}
