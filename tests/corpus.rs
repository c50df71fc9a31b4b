//! The fuzzing corpus (fuzz/corpus, grown by `cargo +nightly fuzz run`),
//! replayed on stable with every test run: each input the fuzzers kept must
//! still be refused or accepted without a panic, by the same checks.

use std::path::Path;

fn inputs(target: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut texts: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| std::fs::read(entry.ok()?.path()).ok())
        .filter_map(|bytes| String::from_utf8(bytes).ok())
        .collect();
    texts.sort();
    assert!(texts.len() > 10, "the {target} corpus is nearly empty");
    texts
}

#[test]
fn the_compose_corpus_is_refused_or_accepted_without_panic() {
    let vars = cryptus::compose::Vars::default();
    let mut accepted = 0;
    for text in inputs("compose") {
        if cryptus::compose::parse(&text, &vars).is_ok() {
            accepted += 1;
        }
    }
    assert!(accepted > 0, "the corpus keeps valid files too");
}

#[test]
fn the_interpolation_corpus_keeps_dollar_free_text() {
    let vars = cryptus::compose::Vars::from_env_file_and_process(
        [
            ("SET".to_owned(), "value".to_owned()),
            ("EMPTY".to_owned(), String::new()),
        ]
        .into(),
    );
    for text in inputs("interpolate") {
        let result = cryptus::compose::interpolate::interpolate(&text, &vars);
        if !text.contains('$') {
            assert_eq!(result.as_deref(), Ok(text.as_str()));
        }
        let _ = cryptus::compose::interpolate::parse_env_file(&text);
    }
}

#[test]
fn the_manifest_corpus_round_trips_what_it_accepts() {
    let mut accepted = 0;
    for text in inputs("manifest") {
        if let Ok(manifest) = cryptus::backup::parse_manifest(&text) {
            let again = serde_json::to_string(&manifest).unwrap();
            assert_eq!(cryptus::backup::parse_manifest(&again), Ok(manifest));
            accepted += 1;
        }
    }
    assert!(accepted > 0);
}

/// Each compose input through the whole loader (as the one file of a
/// project, every profile on) and, when it loads, through `config`'s
/// document, which must read back to the same model.
#[test]
fn the_compose_corpus_loads_merged_or_is_refused_without_panic() {
    use cryptus::compose::{Profiles, Vars, load_with, render};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/compose");
    let scratch = tempfile::tempdir().unwrap();
    let all = Profiles::new(&["*".to_owned()]).unwrap();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    paths.sort();
    let mut loaded = 0;
    for path in paths {
        let Ok(compose) = load_with(std::slice::from_ref(&path), &Vars::default(), &all) else {
            continue;
        };
        loaded += 1;
        let text = serde_yaml::to_string(&render::document("corpus", &compose)).unwrap();
        let again_path = scratch.path().join("again.yml");
        std::fs::write(&again_path, &text).unwrap();
        let again = load_with(&[again_path], &Vars::default(), &all)
            .unwrap_or_else(|err| panic!("{}: {err:#}\n{text}", path.display()));
        let model = |c: &cryptus::compose::Compose| {
            serde_json::json!([c.services, c.networks, c.volumes, c.secrets, c.configs])
        };
        assert_eq!(model(&again), model(&compose), "{}", path.display());
    }
    assert!(loaded > 0, "the corpus keeps valid files too");
}
