//! cryptus's own extension of the compose file, `x-cryptus:`, and the deploy
//! hooks it declares: which command runs before and after a deploy or a
//! rollback. Checked as the rest of the file is, so a hook name that does
//! not exist or a command that is not a list is refused with its line.
//! How a hook runs is `switch::hooks`'s.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::model::{Checked, Text};

/// The top-level key of cryptus's extension.
pub const EXTENSION: &str = "x-cryptus";

/// When a hook runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// Before the new color starts, once its image is known.
    PreDeploy,
    /// After the switch is proven, still under the deploy lock.
    PostDeploy,
    PreRollback,
    PostRollback,
}

impl Hook {
    pub const ALL: [Hook; 4] = [
        Hook::PreDeploy,
        Hook::PostDeploy,
        Hook::PreRollback,
        Hook::PostRollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::PreDeploy => "pre-deploy",
            Hook::PostDeploy => "post-deploy",
            Hook::PreRollback => "pre-rollback",
            Hook::PostRollback => "post-rollback",
        }
    }

    /// The hooks of an operation (`deploy`, `rollback`): before, after.
    pub fn of(operation: &str) -> Option<(Hook, Hook)> {
        match operation {
            "deploy" => Some((Hook::PreDeploy, Hook::PostDeploy)),
            "rollback" => Some((Hook::PreRollback, Hook::PostRollback)),
            _ => None,
        }
    }

    /// Whether traffic has moved when it runs.
    pub fn is_post(self) -> bool {
        matches!(self, Hook::PostDeploy | Hook::PostRollback)
    }

    fn parse(text: &str) -> Result<Hook, String> {
        Hook::ALL
            .into_iter()
            .find(|hook| hook.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Hook::ALL.iter().map(|h| h.as_str()).collect();
                format!("{text:?} is not a hook; the hooks are {}", names.join(", "))
            })
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Hook {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Hook, D::Error> {
        deserializer.deserialize_any(Checked(|text: String| Hook::parse(&text), "a hook name"))
    }
}

/// The hooks a project declares, each with its command.
pub type Hooks = BTreeMap<Hook, Vec<String>>;

/// `x-cryptus:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    #[serde(default)]
    pub hooks: BTreeMap<Hook, Argv>,
}

impl Extension {
    pub fn hooks(self) -> Hooks {
        self.hooks
            .into_iter()
            .map(|(hook, argv)| (hook, argv.0))
            .collect()
    }
}

/// A hook's command: a list of words, the first the program, run as it is
/// (no shell splits it, no entrypoint comes before it).
#[derive(Debug)]
pub struct Argv(pub Vec<String>);

const ARGV: &str = "a list of words such as [\"./bin/migrate\", \"--up\"]";

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Argv, D::Error> {
        struct ArgvVisitor;
        impl<'de> Visitor<'de> for ArgvVisitor {
            type Value = Argv;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(ARGV)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Argv, E> {
                Err(E::custom(format!(
                    "a hook's command is {ARGV}, not the string {v:?}"
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Argv, A::Error> {
                let words = Vec::<Text>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                let words: Vec<String> = words.into_iter().map(|Text(word)| word).collect();
                match words.first() {
                    None => Err(de::Error::custom(format!(
                        "a hook's command is empty: write {ARGV}"
                    ))),
                    Some(program) if program.trim().is_empty() => Err(de::Error::custom(
                        "a hook's command starts with an empty program name",
                    )),
                    Some(_) => Ok(Argv(words)),
                }
            }
        }
        deserializer.deserialize_any(ArgvVisitor)
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Result;

    use super::super::{Compose, Profiles, Vars, load_texts};
    use super::*;

    const BASE: &str = "/p/compose/base.yml";
    const OVERRIDE: &str = "/p/compose/override.yml";
    const SERVICES: &str = "services:\n  web:\n    image: nginx\n";

    fn load(texts: &[(&str, &str)]) -> Result<Compose> {
        let listed: Vec<&str> = texts.iter().map(|(path, _)| *path).collect();
        let vars = Vars::new(BTreeMap::from([("STEP".to_owned(), "up".to_owned())]));
        load_texts(&listed, texts, &vars, &Profiles::none())
    }

    fn one(extension: &str) -> Result<Compose> {
        load(&[(BASE, &format!("{SERVICES}{extension}"))])
    }

    fn error(extension: &str) -> String {
        format!("{:#}", one(extension).expect_err("an error"))
    }

    #[test]
    fn hooks_are_read_with_their_commands_interpolated() {
        let compose = one(
            "x-cryptus:\n  hooks:\n    pre-deploy: [\"./bin/migrate\", \"--${STEP}\"]\n    post-rollback: [/bin/notify, 2]\n",
        )
        .unwrap();
        assert_eq!(
            compose.hooks,
            Hooks::from([
                (Hook::PreDeploy, vec!["./bin/migrate".into(), "--up".into()]),
                (Hook::PostRollback, vec!["/bin/notify".into(), "2".into()]),
            ])
        );
        // Without the extension, or with no hooks, there are none; other
        // extension fields stay ignored.
        assert!(one("x-other: {hooks: 1}\n").unwrap().hooks.is_empty());
        assert!(one("x-cryptus: {}\n").unwrap().hooks.is_empty());
    }

    #[test]
    fn bad_hooks_are_refused_at_their_line() {
        for (extension, says, line) in [
            (
                "x-cryptus:\n  hooks:\n    pre-deplyo: [a]\n",
                "\"pre-deplyo\" is not a hook; the hooks are pre-deploy, post-deploy, pre-rollback, post-rollback",
                "line 6",
            ),
            (
                "x-cryptus:\n  hooks:\n    pre-deploy: ./bin/migrate --up\n",
                "a hook's command is a list of words",
                "line 6",
            ),
            (
                "x-cryptus:\n  hooks:\n    pre-deploy: []\n",
                "is empty",
                "line 6",
            ),
            (
                "x-cryptus:\n  hooks:\n    pre-deploy: [\"\", x]\n",
                "empty program name",
                "line 6",
            ),
            (
                "x-cryptus:\n  hooks:\n    post-deploy: [[a]]\n",
                "a string, number or boolean",
                "line 6",
            ),
            (
                "x-cryptus:\n  hook: {}\n",
                "unsupported key `hook`",
                "line 5",
            ),
            ("x-cryptus:\n  hooks: [a]\n", "x-cryptus.hooks", "line 5"),
        ] {
            let err = error(extension);
            assert!(
                err.contains(says) && err.contains(line) && err.contains(BASE),
                "{extension:?}: {err}"
            );
        }
    }

    #[test]
    fn a_later_file_replaces_a_hook_and_keeps_the_others() {
        let base = format!(
            "{SERVICES}x-cryptus:\n  hooks:\n    pre-deploy: [a, b]\n    post-deploy: [c]\n"
        );
        let over = "x-cryptus:\n  hooks:\n    pre-deploy: [d]\n";
        let compose = load(&[(BASE, &base), (OVERRIDE, over)]).unwrap();
        assert_eq!(compose.hooks[&Hook::PreDeploy], ["d"]);
        assert_eq!(compose.hooks[&Hook::PostDeploy], ["c"]);
        let reset = "x-cryptus:\n  hooks:\n    post-deploy: !reset []\n";
        let compose = load(&[(BASE, &base), (OVERRIDE, reset)]).unwrap();
        assert!(!compose.hooks.contains_key(&Hook::PostDeploy));
    }

    #[test]
    fn config_prints_the_hooks_so_they_read_back() {
        let compose = one("x-cryptus:\n  hooks:\n    pre-rollback: [\"a$$b\", c]\n").unwrap();
        assert_eq!(compose.hooks[&Hook::PreRollback], ["a$b", "c"]);
        let text = serde_yaml::to_string(&super::super::render::document("p", &compose)).unwrap();
        assert!(
            text.contains("x-cryptus:\n  hooks:\n    pre-rollback:"),
            "{text}"
        );
        let again = load(&[(BASE, &text)]).unwrap();
        assert_eq!(again.hooks, compose.hooks);
    }

    #[test]
    fn each_operation_has_its_hooks() {
        assert_eq!(
            Hook::of("deploy"),
            Some((Hook::PreDeploy, Hook::PostDeploy))
        );
        assert_eq!(
            Hook::of("rollback"),
            Some((Hook::PreRollback, Hook::PostRollback))
        );
        assert_eq!(Hook::of("scale"), None);
        assert!(Hook::PostRollback.is_post() && !Hook::PreDeploy.is_post());
    }
}
