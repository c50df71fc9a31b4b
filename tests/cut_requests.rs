//! Requests that change the engine, cut short by their caller (a signal's
//! unwinding, a deadline, a sibling's failure), on the real engine: the
//! request still ends whole, what asks the engine afterwards sees it ended
//! (so a cleanup finds what it must remove), and a file fed through an
//! exec that ends early is never renamed into place.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use cryptus::engine::{ContainerSpec, Engine, PROJECT_LABEL, PUT_FILE_SCRIPT};
use support::{TestProject, app_image, nginx_image};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

fn spec(project: &TestProject, name: &str, image: String) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        image,
        labels: BTreeMap::from([(PROJECT_LABEL.to_owned(), project.name.clone())]),
        ..Default::default()
    }
}

/// A creation cut short at once, before its request could have left (with
/// the caller's future dropped, nothing would be sent), or while the engine
/// works on it: the container is there for the next look, and a removal
/// after the cut leaves nothing behind, however late the engine finishes.
#[test]
fn a_container_creation_cut_short_ends_whole_and_its_removal_sees_it() {
    let project = TestProject::new("cut");
    runtime().block_on(async {
        let engine = Engine::connect().await.expect("the engine");
        for (round, after) in [0u64, 1, 5, 20].into_iter().enumerate() {
            let name = format!("{}-cut-{round}", project.name);
            let container = spec(&project, &name, app_image());
            let creating = engine.create_container(&container);
            let cut = tokio::time::timeout(Duration::from_millis(after), creating).await;
            if after == 0 {
                assert!(cut.is_err(), "a creation ended within no time");
            }
            let seen = engine.inspect(&name).await.expect("inspecting");
            assert!(
                seen.is_some(),
                "round {round}: the creation cut after {after} ms was not carried to its end"
            );
            engine.remove(&name, true).await.expect("removing");
        }
        // Cut, then removed at once, with no look first: the removal
        // itself waits for the creation.
        for (round, after) in [0u64, 5].into_iter().enumerate() {
            let name = format!("{}-cut-removed-{round}", project.name);
            let container = spec(&project, &name, app_image());
            let creating = engine.create_container(&container);
            let _ = tokio::time::timeout(Duration::from_millis(after), creating).await;
            engine.remove(&name, true).await.expect("removing");
        }
        // Nothing the engine finishes later comes back.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let left = engine.containers(&project.name).await.expect("listing");
        assert!(left.is_empty(), "left behind: {left:?}");
    });
}

/// The script that writes a file into a container renames it into place
/// only when every byte arrived: a stdin closed early leaves the old file
/// and no temporary.
#[test]
fn a_file_whose_content_ends_early_is_never_put_in_place() {
    let project = TestProject::new("cutfile");
    runtime().block_on(async {
        let engine = Engine::connect().await.expect("the engine");
        let name = format!("{}-writer", project.name);
        let mut writer = spec(&project, &name, nginx_image());
        writer.command = Some(vec!["sleep".into(), "infinity".into()]);
        engine.create_container(&writer).await.expect("creating");
        engine.start(&name).await.expect("starting");

        engine
            .put_file(&name, "/tmp", "conf", b"old content\n")
            .await
            .expect("writing the file whole");
        let cut = engine
            .shell(&name, PUT_FILE_SCRIPT, &["/tmp/conf", "64"], b"new con")
            .await
            .expect("running the script")
            .expect("the image has a shell");
        assert_eq!(cut.code, 1, "{cut:?}");
        assert!(cut.stderr.contains("did not arrive whole"), "{cut:?}");
        let kept = engine.read_file(&name, "/tmp/conf").await.expect("reading");
        assert_eq!(kept.as_deref(), Some(&b"old content\n"[..]));
        let listed = engine
            .exec(&name, &["ls", "/tmp"])
            .await
            .expect("listing /tmp");
        assert_eq!(listed.stdout.trim(), "conf", "a temporary stayed");
        // A size check that cannot even compare refuses too.
        let unchecked = engine
            .shell(&name, PUT_FILE_SCRIPT, &["/tmp/conf", "x"], b"new")
            .await
            .expect("running the script")
            .expect("the image has a shell");
        assert_eq!(unchecked.code, 1, "{unchecked:?}");
        let kept = engine.read_file(&name, "/tmp/conf").await.expect("reading");
        assert_eq!(kept.as_deref(), Some(&b"old content\n"[..]));
        // A directory in the file's place is refused, not written into.
        let into_dir = engine
            .shell(&name, PUT_FILE_SCRIPT, &["/tmp", "3"], b"new")
            .await
            .expect("running the script")
            .expect("the image has a shell");
        assert_eq!(into_dir.code, 1, "{into_dir:?}");

        engine
            .put_file(&name, "/tmp", "conf", b"new content\n")
            .await
            .expect("writing the file whole");
        let written = engine.read_file(&name, "/tmp/conf").await.expect("reading");
        assert_eq!(written.as_deref(), Some(&b"new content\n"[..]));
    });
}
