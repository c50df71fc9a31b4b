//! The engine, from the tests: engine calls from sync and async code alike,
//! and the removal of everything a project (or a private engine) holds.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder,
};

/// Removes every container, network and volume labelled with the project.
pub fn remove_project(project: &str) {
    remove_at(None, Some(project));
}

/// Removes every container, network and volume labelled with `project` on
/// the engine at `host`; everything there when `project` is `None` (an
/// engine of the test's own; the engine refuses to remove its predefined
/// networks, and that refusal is ignored).
pub fn remove_at(host: Option<String>, project: Option<&str>) {
    let project = project.map(str::to_owned);
    on_engine_at(host, move |docker| async move {
        let filter = project
            .map(|project| format!("com.docker.compose.project={project}"))
            .unwrap_or_default();
        let filters = if filter.is_empty() {
            HashMap::new()
        } else {
            HashMap::from([("label", vec![filter.as_str()])])
        };
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for container in docker
            .list_containers(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = container.id {
                let options = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(&id, Some(options)).await;
            }
        }
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        for network in docker
            .list_networks(Some(options))
            .await
            .unwrap_or_default()
        {
            if let Some(id) = network.id {
                let _ = docker.remove_network(&id).await;
            }
        }
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let volumes = docker
            .list_volumes(Some(options))
            .await
            .ok()
            .and_then(|v| v.volumes);
        for volume in volumes.unwrap_or_default() {
            let _ = docker
                .remove_volume(
                    &volume.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await;
        }
    });
}

/// The engine's volumes that no container uses (anonymous ones a removal
/// left behind among them).
pub fn dangling_volumes() -> std::collections::HashSet<String> {
    on_engine(|docker| async move {
        let filters = HashMap::from([("dangling", vec!["true"])]);
        docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .expect("listing volumes")
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    })
}

/// Asserts that no anonymous volume became dangling since `before` was
/// read: a container removed without its anonymous volumes leaves one.
/// Named volumes are left out: another test's project may be between
/// removing its containers and its volumes.
#[track_caller]
pub fn assert_no_dangling_since(before: &std::collections::HashSet<String>) {
    let anonymous =
        |name: &&String| name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
    let left: Vec<String> = dangling_volumes()
        .difference(before)
        .filter(anonymous)
        .cloned()
        .collect();
    assert!(left.is_empty(), "anonymous volumes left behind: {left:?}");
}

/// Runs engine calls on a runtime of their own, in a thread of their own, so
/// it works from sync tests, async tests and `Drop` alike.
pub fn on_engine<F, Fut, T>(work: F) -> T
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    on_engine_at(None, work)
}

/// [`on_engine`] against the engine at `host` (a DOCKER_HOST value), or the
/// shared one.
pub fn on_engine_at<F, Fut, T>(host: Option<String>, work: F) -> T
where
    F: FnOnce(Docker) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for engine calls");
        runtime.block_on(async move {
            let docker = connect(host.as_deref()).await;
            work(docker).await
        })
    })
    .join()
    .expect("engine calls panicked")
}

pub(super) async fn connect(host: Option<&str>) -> Docker {
    let docker = match host.and_then(|host| host.strip_prefix("unix://")) {
        Some(socket) => Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION),
        None => Docker::connect_with_defaults(),
    }
    .expect("connecting to the engine");
    // Speak the engine's API version when it is older than bollard's.
    let docker = docker.with_request_modifier(|mut request| {
        if request.uri().path().ends_with("/version") {
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = "/version".parse().ok();
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
        request
    });
    match docker.clone().negotiate_version().await {
        Ok(docker) => docker,
        Err(_) => docker,
    }
}
