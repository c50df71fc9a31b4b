//! The soak: many deploy/rollback cycles under load, then a look at what
//! grew. A program, not a test.
//!
//!   cargo bench --bench soak -- [--cycles 100] [--build-every 10]
//!
//! Every cycle deploys a new version and rolls back under a mixed load;
//! every `--build-every`th deploy builds its image from `app/`, so image
//! pruning is exercised. It prints the requests, the failures, and before and
//! after counts of the project's containers, networks and volumes, the images
//! cryptus built, and the open files of dockerd and nginx. It exits 1 on any
//! failed request or on growth beyond what rollback keeps.

mod results;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use loadgen::{Load, Mix};

#[derive(Debug, Clone, PartialEq)]
struct Figures {
    containers: usize,
    networks: usize,
    volumes: usize,
    /// Volumes no container uses, engine-wide: anonymous ones leaked.
    dangling_volumes: usize,
    built_images: usize,
    dockerd_files: usize,
    nginx_files: usize,
}

fn open_files(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn figures(project: &support::TestProject) -> Figures {
    let name = project.name.clone();
    let (built, nginx_pids) = support::on_engine(move |docker| async move {
        let label = format!("cryptus.built-for={name}");
        let image_filters = HashMap::from([("label", vec![label.as_str()])]);
        let built = docker
            .list_images(Some(
                bollard::query_parameters::ListImagesOptionsBuilder::default()
                    .filters(&image_filters)
                    .build(),
            ))
            .await
            .unwrap_or_default()
            .len();
        let top = docker
            .top_processes(&format!("{name}-nginx-1"), None)
            .await
            .ok();
        let pids: Vec<String> = top
            .and_then(|t| t.processes)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|row| row.get(1).cloned())
            .collect();
        (built, pids)
    });
    // The engine's own dockerd (its pid file), not any other dockerd that
    // runs on the host, such as a test's private engine.
    let dockerd = std::fs::read_to_string("/var/run/docker.pid")
        .map(|pid| open_files(pid.trim()))
        .unwrap_or(0);
    Figures {
        containers: project.containers().len(),
        networks: project.networks().len(),
        volumes: project.volumes().len(),
        dangling_volumes: support::dangling_volumes().len(),
        built_images: built,
        dockerd_files: dockerd,
        nginx_files: nginx_pids.iter().map(|p| open_files(p)).sum(),
    }
}

fn main() -> std::process::ExitCode {
    let mut cycles = 100usize;
    let mut build_every = 10usize;
    let mut results: Option<std::path::PathBuf> = None;
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--bench" => {}
            "--cycles" => cycles = words.next().and_then(|n| n.parse().ok()).unwrap_or(cycles),
            "--build-every" => {
                build_every = words
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(build_every)
                    .max(1)
            }
            "--results" => results = words.next().map(Into::into),
            other => {
                eprintln!(
                    "error: unknown argument {other:?}; usage: soak [--cycles N] [--build-every N] [--results FILE]"
                );
                return std::process::ExitCode::from(2);
            }
        }
    }
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    else {
        eprintln!("error: no runtime");
        return std::process::ExitCode::from(2);
    };
    runtime.block_on(async move {
        let mut project = support::TestProject::new("soak");
        for key in ["CRYPTUS_RATE_SITE", "CRYPTUS_RATE_API"] {
            project.set_env(key, "1000000r/s");
        }
        let context = std::path::Path::new(support::REPO).join("app").to_string_lossy().into_owned();
        if !project.run_async(&["start"]).await.status.success() {
            eprintln!("error: the stack did not start");
            return std::process::ExitCode::from(2);
        }
        // One deploy and rollback first, so both colors exist before counting.
        let image = support::app_image();
        for args in [vec!["deploy", "--image", &image, "--version", "0.0.1", "--watch", "0s"], vec!["rollback"]] {
            if !project.run_async(&args).await.status.success() {
                eprintln!("error: the first flips failed");
                return std::process::ExitCode::from(2);
            }
        }
        let mix = Mix { keep_alive: 2, new_connection: 1, slow: 1, slow_ms: 2000, session: 1, pause: Duration::from_millis(5), ..Mix::default() };
        let load = Load::start(project.lb_addr(), &mix);
        let before = figures(&project);
        let mut flips_failed = 0;
        let mut peak_built = 0;
        for cycle in 0..cycles {
            let version = format!("9.{cycle}.0");
            let deploy: Vec<&str> = if cycle % build_every == 0 {
                vec!["deploy", "--build", &context, "--version", &version, "--watch", "0s"]
            } else {
                vec!["deploy", "--image", &image, "--version", &version, "--watch", "0s"]
            };
            for args in [deploy, vec!["rollback"]] {
                if !project.run_async(&args).await.status.success() {
                    flips_failed += 1;
                }
            }
            // Built images kept at once: the two colors' at most.
            peak_built = peak_built.max(figures(&project).built_images);
            if (cycle + 1) % 10 == 0 {
                eprintln!("soak: {}/{cycles} cycles", cycle + 1);
            }
        }
        let report = load.stop().await;
        let after = figures(&project);
        let mut out = String::new();
        out += &format!("soak: {cycles} cycles of deploy + rollback ({} flips), one deploy in {build_every} built from app/\n", cycles * 2);
        out += &format!("requests {}, failed {} {:?}, stale keep-alive closes retried {}\n", report.requests, report.failed, report.failures, report.stale_keepalive_closes);
        out += &format!("flips that failed: {flips_failed}\n");
        out += &format!("{:<28} {:>8} {:>8}\n", "", "before", "after");
        for (name, a, b) in [
            ("project containers", before.containers, after.containers),
            ("project networks", before.networks, after.networks),
            ("project volumes", before.volumes, after.volumes),
            ("unused volumes, engine-wide", before.dangling_volumes, after.dangling_volumes),
            ("images cryptus built", before.built_images, after.built_images),
            ("  most at once, during", before.built_images, peak_built),
            ("dockerd open files", before.dockerd_files, after.dockerd_files),
            ("nginx open files", before.nginx_files, after.nginx_files),
        ] {
            out += &format!("{name:<28} {a:>8} {b:>8}\n");
        }
        print!("{out}");
        if let Some(path) = &results {
            let command = format!("cargo bench --locked --bench soak -- --cycles {cycles} --build-every {build_every} --results {}", path.display());
            if let Err(err) = results::write(path, "Soak", &command, &out, None) {
                eprintln!("error: {err}");
                return std::process::ExitCode::from(2);
            }
        }
        let grew = after.containers > before.containers
            || after.networks > before.networks
            || after.volumes > before.volumes
            || after.dangling_volumes > before.dangling_volumes
            // The two colors' images are what rollback keeps.
            || after.built_images > 2
            || peak_built > 2
            || after.dockerd_files > before.dockerd_files + 20
            || after.nginx_files > before.nginx_files + 20;
        // The project goes, then the images the run built.
        let name = project.name.clone();
        drop(project);
        support::on_engine(move |docker| async move {
            let label = format!("cryptus.built-for={name}");
            let filters = HashMap::from([("label", vec![label.as_str()])]);
            for image in docker
                .list_images(Some(bollard::query_parameters::ListImagesOptionsBuilder::default().filters(&filters).build()))
                .await
                .unwrap_or_default()
            {
                let options = bollard::query_parameters::RemoveImageOptionsBuilder::default().force(true).build();
                let _ = docker.remove_image(&image.id, Some(options), None).await;
            }
        });
        if report.failed == 0 && flips_failed == 0 && !grew {
            std::process::ExitCode::SUCCESS
        } else {
            eprintln!("error: failed requests or flips, or growth beyond retention");
            std::process::ExitCode::FAILURE
        }
    })
}
