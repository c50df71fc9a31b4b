//! The results file a benchmark program writes under docs/: the figures it
//! measured, with when and how, so that published figures are never typed by
//! hand.

use std::io::Write;
use std::path::Path;

/// Writes `figures` (the program's printed table) into a Markdown file,
/// atomically: a temporary file beside it, then a rename; with `picture`
/// (its alt text and relative path), the program's own picture below them.
pub fn write(
    path: &Path,
    title: &str,
    command: &str,
    figures: &str,
    picture: Option<(&str, &str)>,
) -> Result<(), String> {
    let machine = machine();
    let mut text = format!(
        "# {title}: latest results\n\n\
         Written by the program itself on {}, with:\n\n\
         ```sh\n{command}\n```\n\n\
         Machine: {machine}.\n\n\
         ```\n{}\n```\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        figures.trim_end()
    );
    if let Some((alt, file)) = picture {
        text.push_str(&format!("\n![{alt}]({file})\n"));
    }
    let temporary = path.with_extension("md.tmp");
    let written = std::fs::File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    written.map_err(|err| format!("writing {}: {err}", path.display()))
}

/// Cores and memory of the machine the figures come from.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .map_or_else(
            || "? GiB".to_owned(),
            |kb| format!("{} GiB", kb.div_ceil(1 << 20)),
        );
    format!("{cores} cores, {memory}")
}
