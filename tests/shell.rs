//! Shell completions and the manual page, as an operator installs them:
//! the scripts each shell gets, bash's run by a real bash, and the pages
//! read by a real groff. No engine is needed.

mod support;

use std::process::{Command, Output};

use clap::CommandFactory;
use support::{assert_code, cryptus, stderr, stdout};

const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];

/// Every subcommand, from the command line's own tree.
fn subcommands() -> Vec<String> {
    cryptus::cli::Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[test]
fn every_shell_gets_a_script_that_names_deploy() {
    for shell in SHELLS {
        let output = cryptus(&["completions", shell], &[]);
        assert_code(&output, 0);
        let script = stdout(&output);
        assert!(!script.trim().is_empty(), "{shell}: empty script");
        assert!(script.contains("deploy"), "{shell}: no deploy in\n{script}");
        assert!(stderr(&output).is_empty(), "{shell}: {}", stderr(&output));
    }
}

#[test]
fn under_json_the_script_and_the_page_are_one_document() {
    let output = cryptus(&["completions", "fish", "--json"], &[]);
    assert_code(&output, 0);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["ok"], true);
    assert_eq!(document["shell"], "fish");
    let printed = cryptus(&["completions", "fish"], &[]);
    assert_eq!(document["script"], stdout(&printed));
    let output = cryptus(&["man", "--json"], &[]);
    assert_code(&output, 0);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["page"], "cryptus.1");
    assert!(document["roff"].as_str().unwrap().contains(".TH cryptus 1"));
}

#[test]
fn an_unknown_shell_exits_2_naming_the_shells() {
    let output = cryptus(&["completions", "tcsh"], &[]);
    assert_code(&output, 2);
    let text = stderr(&output);
    for shell in SHELLS {
        assert!(text.contains(shell), "{text}");
    }
    assert!(stdout(&output).is_empty());
}

#[test]
fn completions_need_no_project() {
    // A project name that every project command refuses.
    let output = cryptus(&["completions", "bash"], &[("CRYPTUS_PROJECT", "Bad Name")]);
    assert_code(&output, 0);
    let output = cryptus(&["man"], &[("CRYPTUS_PROJECT", "Bad Name")]);
    assert_code(&output, 0);
}

/// What bash's own completion machinery offers for `line` (the cursor at
/// its end), with the script `cryptus completions bash` prints sourced.
fn bash_completes(line: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("cryptus.bash");
    let output = cryptus(&["completions", "bash"], &[]);
    assert_code(&output, 0);
    std::fs::write(&script, &output.stdout).unwrap();
    // The function is the one the script registers for cryptus, found as
    // bash reports it; it is called as bash calls it: command, word, previous.
    let program = r#"
set -u
source "$1"
COMP_LINE="$2"
COMP_POINT=${#COMP_LINE}
read -r -a COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
spec=$(complete -p cryptus)
function=${spec##*-F }
function=${function%% *}
previous=""
(( COMP_CWORD > 0 )) && previous=${COMP_WORDS[COMP_CWORD-1]}
"$function" cryptus "${COMP_WORDS[COMP_CWORD]}" "$previous"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let mut bash = Command::new("bash");
    bash.args(["--norc", "--noprofile", "-c", program, "bash"])
        .arg(&script)
        .arg(line);
    let output: Output = support::run(bash);
    assert_code(&output, 0);
    stdout(&output)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_dep_to_deploy() {
    assert_eq!(bash_completes("cryptus dep"), ["deploy"]);
}

#[test]
fn bash_completes_flags_and_shells() {
    assert_eq!(bash_completes("cryptus deploy --dry"), ["--dry-run"]);
    assert_eq!(bash_completes("cryptus completions zs"), ["zsh"]);
    assert_eq!(
        bash_completes("cryptus history --outcome ro"),
        ["rolled-back"]
    );
    let all = bash_completes("cryptus ");
    for command in subcommands() {
        assert!(all.contains(&command), "{command} not offered: {all:?}");
    }
}

/// groff's verdict on a page: its warnings (none for valid roff) and the
/// text a reader sees, as plain text (no overstriking).
fn groff(roff: &[u8]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.1");
    std::fs::write(&page, roff).unwrap();
    let mut groff = Command::new("groff");
    groff.args(["-man", "-Tutf8", "-ww", "-P-cbou"]).arg(&page);
    let output = support::run(groff);
    assert_code(&output, 0);
    (stderr(&output), stdout(&output))
}

#[test]
fn the_man_page_is_valid_roff_naming_every_subcommand() {
    let output = cryptus(&["man"], &[]);
    assert_code(&output, 0);
    let roff = stdout(&output);
    assert!(roff.contains(".TH cryptus 1"), "{roff}");
    let (warnings, text) = groff(&output.stdout);
    assert!(warnings.is_empty(), "groff warns:\n{warnings}");
    assert!(text.contains("Exit codes"), "{text}");
    for command in subcommands() {
        assert!(
            text.contains(&format!("cryptus-{command}(1)")),
            "the page does not name {command}:\n{text}"
        );
    }
}

#[test]
fn man_out_writes_one_valid_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let output = cryptus(&["man", "--out", out.to_str().unwrap()], &[]);
    assert_code(&output, 0);
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
    let mut expected: Vec<String> = subcommands()
        .iter()
        .map(|c| format!("cryptus-{c}.1"))
        .collect();
    expected.push("cryptus.1".to_owned());
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    // Nothing else: no temporary file is left behind.
    assert_eq!(written, expected);
    let (warnings, text) = groff(&std::fs::read(out.join("cryptus-deploy.1")).unwrap());
    assert!(warnings.is_empty(), "groff warns:\n{warnings}");
    assert!(text.contains("--dry-run"), "{text}");
    // The page printed and the page written are the same.
    let printed = cryptus(&["man"], &[]);
    assert_eq!(
        std::fs::read(out.join("cryptus.1")).unwrap(),
        printed.stdout
    );
}

#[test]
fn man_out_into_a_file_exits_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, "mine").unwrap();
    let out = file.join("man1");
    let output = cryptus(&["man", "--out", out.to_str().unwrap()], &[]);
    assert_code(&output, 2);
    let text = stderr(&output);
    assert!(text.contains("hint:"), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}
