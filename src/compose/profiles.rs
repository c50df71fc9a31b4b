//! Which services run: a service with `profiles:` runs only when one of
//! them is active (`--profile NAME`, `COMPOSE_PROFILES`); one without always
//! runs. Networks and volumes are not affected, as in Compose; a service
//! that runs may not depend on one left out.

use anyhow::{Result, bail};

use super::Compose;

/// The active profiles.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profiles {
    active: Vec<String>,
    /// `*`: every profile is active.
    all: bool,
}

impl Profiles {
    /// No profile active: only the services without profiles run.
    pub fn none() -> Profiles {
        Profiles::default()
    }

    /// Every profile active (`--profile '*'`).
    pub fn all() -> Profiles {
        Profiles {
            active: Vec::new(),
            all: true,
        }
    }

    /// The named profiles; `*` activates all, an empty name is ignored
    /// (`COMPOSE_PROFILES=`), and an invalid name is refused, named.
    pub fn new(names: &[String]) -> Result<Profiles, String> {
        let mut profiles = Profiles::none();
        for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if name == "*" {
                profiles.all = true;
                continue;
            }
            check_name(name)?;
            if !profiles.active.iter().any(|a| a == name) {
                profiles.active.push(name.to_owned());
            }
        }
        Ok(profiles)
    }

    /// Whether a service with these profiles runs.
    pub fn enables(&self, profiles: &[String]) -> bool {
        profiles.is_empty() || self.all || profiles.iter().any(|p| self.active.contains(p))
    }

    /// Sets aside the services no active profile enables; fails when a
    /// service that runs depends on one of them (Compose's rule).
    pub fn apply(&self, compose: &mut Compose) -> Result<()> {
        let left_out: Vec<String> = compose
            .services
            .values()
            .filter(|service| !self.enables(&service.profiles))
            .map(|service| service.name.clone())
            .collect();
        for name in left_out {
            if let Some(service) = compose.services.remove(&name) {
                compose.disabled.insert(name, service.profiles);
            }
        }
        for service in compose.services.values() {
            for dependency in service.depends_on.iter().filter(|d| d.required) {
                if let Some(profiles) = compose.disabled.get(&dependency.service) {
                    bail!(
                        "{}.depends_on: service {:?} is not enabled: it runs only with the profile {} (pass --profile {} or set COMPOSE_PROFILES)",
                        service.location(),
                        dependency.service,
                        profiles.join(" or "),
                        profiles.first().map_or("NAME", String::as_str),
                    );
                }
            }
        }
        Ok(())
    }
}

/// A profile name as the Compose Specification writes it:
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    let ok = first
        && !rest.is_empty()
        && rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "profile {name:?} is invalid: a profile name is a letter or digit, then letters, digits, '_', '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_service_without_profiles_always_runs() {
        let none = Profiles::none();
        assert!(none.enables(&[]));
        assert!(!none.enables(&names(&["debug"])));
        let debug = Profiles::new(&names(&["debug", ""])).unwrap();
        assert!(debug.enables(&names(&["test", "debug"])));
        assert!(!debug.enables(&names(&["test"])));
        assert!(
            Profiles::new(&names(&["*"]))
                .unwrap()
                .enables(&names(&["x1"]))
        );
    }

    #[test]
    fn profile_names_follow_the_specification() {
        for good in ["debug", "a1", "x.y-z_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a", "-x", "has space", "ü1"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(Profiles::new(&names(&["bad name"])).is_err());
    }

    fn load(text: &str, profiles: &Profiles) -> anyhow::Result<Compose> {
        let path = "/p/compose/base.yml";
        let vars = super::super::Vars::default();
        super::super::load_texts(&[path], &[(path, text)], &vars, profiles)
    }

    const STACK: &str = "services:\n  web:\n    image: web\n  debug-tool:\n    image: tool\n    profiles: [debug]\n  test-db:\n    image: db\n    profiles: [test, ci]\n";

    #[test]
    fn profiles_choose_the_services() {
        let off = load(STACK, &Profiles::none()).unwrap();
        assert_eq!(off.services.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(off.disabled["debug-tool"], ["debug"]);
        let on = load(STACK, &Profiles::new(&names(&["debug"])).unwrap()).unwrap();
        assert_eq!(
            on.services.keys().collect::<Vec<_>>(),
            ["debug-tool", "web"]
        );
        let ci = load(STACK, &Profiles::new(&names(&["ci"])).unwrap()).unwrap();
        assert!(ci.services.contains_key("test-db"));
        let all = load(STACK, &Profiles::new(&names(&["*"])).unwrap()).unwrap();
        assert_eq!(all.services.len(), 3);
        assert!(all.disabled.is_empty());
    }

    #[test]
    fn depending_on_a_service_left_out_is_an_error_naming_it() {
        let text = format!("{STACK}  app:\n    image: app\n    depends_on: [debug-tool]\n");
        let err = format!("{:#}", load(&text, &Profiles::none()).unwrap_err());
        assert!(err.contains("services.app.depends_on"), "{err}");
        assert!(
            err.contains("\"debug-tool\" is not enabled") && err.contains("--profile debug"),
            "{err}"
        );
        assert!(load(&text, &Profiles::new(&names(&["debug"])).unwrap()).is_ok());
        let optional = format!(
            "{STACK}  app:\n    image: app\n    depends_on: {{debug-tool: {{required: false}}}}\n"
        );
        assert!(load(&optional, &Profiles::none()).is_ok());
        let bad = "services:\n  a:\n    image: x\n    profiles: ['no good']\n";
        let err = format!("{:#}", load(bad, &Profiles::none()).unwrap_err());
        assert!(err.contains("no good") && err.contains("line 4"), "{err}");
    }
}
