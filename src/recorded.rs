//! What the stack serves, as recorded: nginx's upstream file, the deployment
//! history and the releases `start` created (all in the `nginx-state`
//! volume), and the app containers' labels. `start` and `restart` restore
//! exactly that, or refuse and say what they cannot know; they never fall
//! back to the compose file's image, nor guess a color. Pure: the engine is
//! read by the caller.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{Entry, Outcome, Side};
use crate::stack::{Color, Release};

/// The releases `start` created, by color: what a color ran when no deploy
/// has recorded it yet (a stack that was only ever started).
pub use crate::nginx::STARTED_FILE;

/// nginx's upstream file, as read from the state volume.
#[derive(Clone, Debug, PartialEq)]
pub enum Upstream {
    /// No file: nothing was ever served from this volume.
    Missing,
    Active(Color),
    /// A file that names no active color (garbled, emptied, edited).
    Unreadable,
}

impl Upstream {
    pub fn from_text(text: Option<&str>) -> Upstream {
        match text {
            None => Upstream::Missing,
            Some(text) => {
                crate::nginx::upstream_color(text).map_or(Upstream::Unreadable, Upstream::Active)
            }
        }
    }
}

/// A color's containers, summed up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColorState {
    /// What they run, from their labels; `None` without containers.
    pub release: Option<Release>,
    /// The highest replica number among them.
    pub replicas: u32,
    pub running: u32,
}

/// Everything recorded about what serves.
pub struct Facts<'a> {
    pub upstream: Upstream,
    /// The history, or why it cannot be read.
    pub history: Result<&'a [Entry], String>,
    pub started: &'a BTreeMap<Color, Release>,
    pub blue: ColorState,
    pub green: ColorState,
}

/// Where the restored release comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// No state at all: the first start, blue with the compose file's image.
    Fresh,
    /// The active color's containers' labels.
    Containers,
    /// The deployment history.
    History,
    /// The release a former `start` created and recorded.
    Started,
}

/// What `start` restores.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub color: Color,
    /// `None` for [`Source::Fresh`]: the compose file's image.
    pub release: Option<Release>,
    /// How many replicas to run; `None`: the compose file's count.
    pub replicas: Option<u32>,
    pub source: Source,
}

/// Why `start` cannot know what to restore, and what the user can run.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    pub message: String,
    pub hint: String,
}

fn refuse(message: impl Into<String>, hint: impl Into<String>) -> Refusal {
    Refusal {
        message: message.into(),
        hint: hint.into(),
    }
}

/// In a hint, the command that removes nginx's upstream file; the caller
/// fills it in.
pub const RESET: &str = "{reset}";
/// In a hint, the command that removes the upstream file, the history and
/// the started releases: a start afresh.
pub const RESET_ALL: &str = "{reset-all}";

impl Facts<'_> {
    pub fn color(&self, color: Color) -> &ColorState {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }

    fn has_containers(&self) -> bool {
        self.blue.release.is_some() || self.green.release.is_some()
    }
}

/// The color the history leaves serving: the last entry's target if it
/// stayed, else where it came from.
pub fn history_active(entries: &[Entry]) -> Option<Color> {
    entries.last().map(|entry| match entry.outcome {
        Outcome::Ok => entry.to.color,
        Outcome::Failed | Outcome::RolledBack => entry.from.color,
    })
}

/// The newest side the history records for `color` that ran there.
pub fn recorded_side(entries: &[Entry], color: Color) -> Option<&Side> {
    entries.iter().rev().find_map(|entry| {
        if entry.to.color == color && entry.outcome == Outcome::Ok {
            Some(&entry.to)
        } else if entry.from.color == color {
            Some(&entry.from)
        } else {
            None
        }
    })
}

/// Decides what to restore, or refuses.
pub fn decide(facts: &Facts<'_>) -> Result<Plan, Refusal> {
    let color = active_color(facts)?;
    let state = facts.color(color);
    if let Some(release) = &state.release {
        return Ok(Plan {
            color,
            release: Some(release.clone()),
            replicas: Some(state.replicas.max(1)),
            source: Source::Containers,
        });
    }
    let gone = format!("the {color} containers, which served, are gone");
    match &facts.history {
        Err(why) => Err(refuse(
            format!(
                "{gone} and the deployment history cannot be read ({why}): cryptus cannot know which release {color} ran"
            ),
            format!(
                "remove nginx's state and start afresh with the compose file's image: {RESET_ALL}, then `cryptus start` and `cryptus deploy --image ...` the release that should serve"
            ),
        )),
        Ok(entries) if !entries.is_empty() => {
            if history_active(entries) != Some(color) {
                return Err(refuse(
                    format!(
                        "{gone}, and the deployment history does not end with {color} serving: cryptus cannot know which release {color} ran"
                    ),
                    format!(
                        "`cryptus status` shows the history; to start afresh with the compose file's image: {RESET_ALL}, then `cryptus start` and `cryptus deploy --image ...`"
                    ),
                ));
            }
            let side = recorded_side(entries, color).ok_or_else(|| {
                refuse(
                    format!("{gone}, and the deployment history records no release of {color}"),
                    format!("to start afresh with the compose file's image: {RESET_ALL}, then `cryptus start`"),
                )
            })?;
            Ok(Plan {
                color,
                release: Some(side.release()),
                replicas: (side.replicas > 0).then_some(side.replicas),
                source: Source::History,
            })
        }
        Ok(_) => match facts.started.get(&color) {
            Some(release) => Ok(Plan {
                color,
                release: Some(release.clone()),
                replicas: None,
                source: Source::Started,
            }),
            None if facts.upstream == Upstream::Missing => Ok(Plan {
                color,
                release: None,
                replicas: None,
                source: Source::Fresh,
            }),
            None => Err(refuse(
                format!("{gone}, and nothing records which release {color} ran"),
                format!(
                    "to start afresh with the compose file's image: {RESET_ALL}, then `cryptus start`"
                ),
            )),
        },
    }
}

/// The color that serves, from the upstream file, else the history, else
/// the only color with containers; blue when there is no state at all.
fn active_color(facts: &Facts<'_>) -> Result<Color, Refusal> {
    match facts.upstream {
        Upstream::Active(color) => return Ok(color),
        Upstream::Unreadable => {
            let history = match &facts.history {
                Ok(entries) => match history_active(entries) {
                    Some(color) => format!("the deployment history says {color} served last"),
                    None => "the deployment history is empty".to_owned(),
                },
                Err(why) => format!("the deployment history cannot be read either ({why})"),
            };
            return Err(refuse(
                format!(
                    "nginx's upstream file names no active color, so cryptus cannot tell which color serves; {history}"
                ),
                format!(
                    "nothing was changed. Remove the damaged file with {RESET}, then `cryptus start` restores what the history records (or starts afresh without one)"
                ),
            ));
        }
        Upstream::Missing => {}
    }
    match &facts.history {
        Ok(entries) => {
            if let Some(color) = history_active(entries) {
                return Ok(color);
            }
        }
        Err(why) => {
            return Err(refuse(
                format!(
                    "nginx's upstream file is missing and the deployment history cannot be read ({why}): cryptus cannot tell which color serves"
                ),
                format!(
                    "to start afresh: {RESET_ALL} (it also removes the damaged history), then `cryptus start`"
                ),
            ));
        }
    }
    let with_containers: Vec<Color> = Color::ALL
        .into_iter()
        .filter(|c| facts.color(*c).release.is_some())
        .collect();
    let running: Vec<Color> = Color::ALL
        .into_iter()
        .filter(|c| facts.color(*c).running > 0)
        .collect();
    match (running.as_slice(), with_containers.as_slice()) {
        ([color], _) | ([], [color]) => Ok(*color),
        ([], []) => match facts.started.keys().collect::<Vec<_>>().as_slice() {
            [color] => Ok(**color),
            [] => Ok(Color::Blue),
            _ => Err(refuse(
                "nginx's upstream file is missing and both colors were started: cryptus cannot tell which color serves",
                format!("to start afresh: {RESET_ALL}, then `cryptus start`"),
            )),
        },
        _ => Err(refuse(
            format!(
                "nginx's upstream file and the deployment history are missing, and both colors have containers ({}): cryptus cannot tell which one serves",
                describe_both(facts)
            ),
            "remove the containers of the color that must not serve (`docker rm`), then `cryptus start` again",
        )),
    }
}

fn describe_both(facts: &Facts<'_>) -> String {
    Color::ALL
        .into_iter()
        .filter_map(|c| {
            let state = facts.color(c);
            state.release.as_ref().map(|r| format!("{c} {}", r.version))
        })
        .collect::<Vec<_>>()
        .join(" and ")
}

/// What a start repaired, for the history, or `None` when it repaired
/// nothing: it recreated containers of the serving color (`made`), or wrote
/// nginx's upstream file anew when it was missing. A first start repairs
/// nothing.
pub fn repair_reason(
    plan: &Plan,
    release: &Release,
    made: &[String],
    upstream_missing: bool,
) -> Option<String> {
    if plan.source == Source::Fresh {
        return None;
    }
    let mut what = Vec::new();
    if !made.is_empty() {
        what.push(format!("recreated {}", made.join(", ")));
    }
    if upstream_missing {
        what.push("rewrote nginx's missing upstream file".to_owned());
    }
    if what.is_empty() {
        return None;
    }
    let from = match plan.source {
        Source::History => "the deployment history",
        Source::Started => "the release start recorded",
        Source::Containers | Source::Fresh => "the containers' labels",
    };
    Some(format!(
        "{} at {} {} from {from}",
        what.join(" and "),
        plan.color,
        release.version
    ))
}

/// Parses the started releases; a damaged file counts as none recorded.
pub fn parse_started(text: Option<&str>) -> BTreeMap<Color, Release> {
    text.and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Whether a facts set has any state at all.
pub fn is_fresh(facts: &Facts<'_>) -> bool {
    facts.upstream == Upstream::Missing
        && matches!(facts.history, Ok(entries) if entries.is_empty())
        && facts.started.is_empty()
        && !facts.has_containers()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn release(version: &str) -> Release {
        Release {
            image: format!("app:{version}"),
            version: version.into(),
        }
    }

    fn side(color: Color, version: &str, replicas: u32) -> Side {
        Side {
            color,
            image: format!("app:{version}"),
            version: version.into(),
            image_id: None,
            replicas,
        }
    }

    fn entry(from: Side, to: Side, outcome: Outcome) -> Entry {
        Entry {
            time: Utc::now(),
            operation: "deploy".into(),
            user: "u".into(),
            host: "h".into(),
            from,
            to,
            outcome,
            reason: None,
            durations: BTreeMap::new(),
            hooks: Vec::new(),
        }
    }

    fn running(version: &str, replicas: u32) -> ColorState {
        ColorState {
            release: Some(release(version)),
            replicas,
            running: replicas,
        }
    }

    fn stopped(version: &str) -> ColorState {
        ColorState {
            release: Some(release(version)),
            replicas: 1,
            running: 0,
        }
    }

    fn facts<'a>(
        upstream: Upstream,
        history: Result<&'a [Entry], String>,
        started: &'a BTreeMap<Color, Release>,
    ) -> Facts<'a> {
        Facts {
            upstream,
            history,
            started,
            blue: ColorState::default(),
            green: ColorState::default(),
        }
    }

    #[test]
    fn no_state_at_all_is_a_first_start_of_blue_with_the_compose_image() {
        let none = BTreeMap::new();
        let facts = facts(Upstream::Missing, Ok(&[]), &none);
        assert!(is_fresh(&facts));
        let plan = decide(&facts).unwrap();
        assert_eq!((plan.color, plan.source), (Color::Blue, Source::Fresh));
        assert_eq!(plan.release, None);
    }

    #[test]
    fn the_containers_labels_come_first() {
        let none = BTreeMap::new();
        let mut facts = facts(Upstream::Active(Color::Green), Ok(&[]), &none);
        facts.green = running("2.0.0", 3);
        facts.blue = stopped("1.0.0");
        let plan = decide(&facts).unwrap();
        assert_eq!(plan.color, Color::Green);
        assert_eq!(plan.release, Some(release("2.0.0")));
        assert_eq!(plan.replicas, Some(3));
        assert_eq!(plan.source, Source::Containers);
    }

    #[test]
    fn a_removed_active_color_comes_back_at_its_deployed_release() {
        let none = BTreeMap::new();
        let history = [entry(
            side(Color::Blue, "1.0.0", 1),
            side(Color::Green, "2.0.0", 2),
            Outcome::Ok,
        )];
        let mut facts = facts(Upstream::Active(Color::Green), Ok(&history), &none);
        facts.blue = stopped("1.0.0");
        let plan = decide(&facts).unwrap();
        assert_eq!(plan.release, Some(release("2.0.0")));
        assert_eq!(plan.replicas, Some(2));
        assert_eq!(plan.source, Source::History);
        // Without the upstream file, the history names the color too.
        let facts = Facts {
            upstream: Upstream::Missing,
            ..facts
        };
        assert_eq!(decide(&facts).unwrap().color, Color::Green);
    }

    #[test]
    fn a_failed_deploy_leaves_the_old_color_and_its_release() {
        let none = BTreeMap::new();
        let history = [entry(
            side(Color::Blue, "1.0.0", 1),
            side(Color::Green, "2.0.0", 1),
            Outcome::RolledBack,
        )];
        let facts = facts(Upstream::Missing, Ok(&history), &none);
        let plan = decide(&facts).unwrap();
        assert_eq!(plan.color, Color::Blue);
        assert_eq!(plan.release, Some(release("1.0.0")));
    }

    #[test]
    fn a_start_only_stack_restores_what_start_recorded() {
        let started = BTreeMap::from([(Color::Blue, release("1.0.0"))]);
        let facts = facts(Upstream::Active(Color::Blue), Ok(&[]), &started);
        let plan = decide(&facts).unwrap();
        assert_eq!(plan.release, Some(release("1.0.0")));
        assert_eq!(plan.source, Source::Started);
    }

    #[test]
    fn an_unreadable_upstream_is_refused_whatever_else_is_known() {
        let none = BTreeMap::new();
        let history = [entry(
            side(Color::Blue, "1.0.0", 1),
            side(Color::Green, "2.0.0", 1),
            Outcome::Ok,
        )];
        let mut facts = facts(Upstream::Unreadable, Ok(&history), &none);
        facts.green = running("2.0.0", 1);
        let refusal = decide(&facts).unwrap_err();
        assert!(refusal.message.contains("names no active color"));
        assert!(refusal.message.contains("green served last"));
        assert!(refusal.hint.contains(RESET));
    }

    #[test]
    fn what_cannot_be_known_is_refused() {
        let none = BTreeMap::new();
        // The history is damaged and the serving color's containers are gone.
        let facts_corrupt = facts(
            Upstream::Active(Color::Green),
            Err("not JSON".into()),
            &none,
        );
        assert!(
            decide(&facts_corrupt)
                .unwrap_err()
                .message
                .contains("not JSON")
        );
        // No upstream, no history, both colors present and stopped.
        let mut both = facts(Upstream::Missing, Ok(&[]), &none);
        both.blue = stopped("1.0.0");
        both.green = stopped("2.0.0");
        assert!(
            decide(&both)
                .unwrap_err()
                .message
                .contains("blue 1.0.0 and green 2.0.0")
        );
        // The upstream names a color nothing recorded.
        let unrecorded = facts(Upstream::Active(Color::Green), Ok(&[]), &none);
        assert!(decide(&unrecorded).is_err());
        // The upstream serves green, the history ends with blue serving.
        let history = [entry(
            side(Color::Blue, "1.0.0", 1),
            side(Color::Green, "2.0.0", 1),
            Outcome::Failed,
        )];
        let disagree = facts(Upstream::Active(Color::Green), Ok(&history), &none);
        assert!(decide(&disagree).is_err());
    }

    #[test]
    fn a_repair_says_what_it_did_and_a_first_start_is_none() {
        let plan = |source| Plan {
            color: Color::Green,
            release: Some(release("2.0.0")),
            replicas: None,
            source,
        };
        let made = ["p-cryptus-green-1".to_owned()];
        let reason = repair_reason(&plan(Source::History), &release("2.0.0"), &made, false);
        assert_eq!(
            reason.as_deref(),
            Some("recreated p-cryptus-green-1 at green 2.0.0 from the deployment history")
        );
        let reason = repair_reason(&plan(Source::Containers), &release("2.0.0"), &[], true);
        assert!(reason.unwrap().contains("missing upstream"));
        assert_eq!(
            repair_reason(&plan(Source::Containers), &release("2.0.0"), &[], false),
            None
        );
        assert_eq!(
            repair_reason(&plan(Source::Fresh), &release("1.0.0"), &made, true),
            None
        );
    }

    #[test]
    fn the_upstream_text_is_read_strictly() {
        assert_eq!(Upstream::from_text(None), Upstream::Missing);
        assert_eq!(Upstream::from_text(Some("")), Upstream::Unreadable);
        assert_eq!(Upstream::from_text(Some("garbage {")), Upstream::Unreadable);
        // A comment alone names no color; a whole rendered file does.
        assert_eq!(
            Upstream::from_text(Some("# active: green\n")),
            Upstream::Unreadable
        );
        let rendered =
            crate::nginx::render_upstream(Color::Green, &["p-cryptus-green-1:3000".to_owned()])
                .unwrap();
        assert_eq!(
            Upstream::from_text(Some(&rendered)),
            Upstream::Active(Color::Green)
        );
        assert!(parse_started(Some("{broken")).is_empty());
    }
}
