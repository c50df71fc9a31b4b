//! A Docker Swarm of a test's own: `scripts/swarm-lab.sh` starts one private
//! dockerd per node, each in network, mount and UTS namespaces of its own
//! and with its own socket, joined through a bridge in a namespace of the
//! lab's own (no veth, bridge or firewall rule on the host), and forms a
//! swarm of 1 manager and N-1 workers. The images the tests run are copied
//! into every node from the shared engine (no registry). On drop the script
//! removes every dockerd, namespace, cgroup, mount and file of the lab, pass
//! or fail; `scripts/test.sh` sweeps what a killed run left (`/tmp/ctsw*`).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::wait::{exited, poll, run_within};
use super::{COUNTER, REPO, app_image, nginx_image, on_engine, redis_image};

/// How long a lab may take to come up (3 nodes take 10 to 20 s, most of it
/// loading images) or to be torn down (5 to 10 s).
const LAB_DEADLINE: Duration = Duration::from_secs(300);

/// How long one docker command against a node may take.
const DOCKER_DEADLINE: Duration = Duration::from_secs(120);

pub struct SwarmLab {
    dir: PathBuf,
    nodes: usize,
}

impl SwarmLab {
    /// A busybox image in every node: a shell, `nslookup`, `wget`, `httpd`.
    pub const TOOL_IMAGE: &str = "cryptus-lab/busybox:1";

    /// Node N's address on the lab network.
    pub fn address(node: usize) -> String {
        format!("10.99.0.{}", 10 + node)
    }

    /// A lab of `nodes` under a directory no other lab of any run uses.
    fn named(nodes: usize) -> SwarmLab {
        SwarmLab {
            dir: PathBuf::from(format!(
                "/tmp/ctsw{}x{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )),
            nodes,
        }
    }

    /// Starts a swarm of `nodes` (node 1 the manager, the others workers)
    /// with the images the tests run (nginx, redis, the app under every tag
    /// the shared engine has) loaded into every node. Needs root, dockerd,
    /// iproute2 and busybox-static, as `.ci/run` installs.
    pub fn up(nodes: usize) -> SwarmLab {
        SwarmLab::up_with(nodes, &[])
    }

    /// [`SwarmLab::up`] with `extra` images of the shared engine loaded
    /// too (the monitoring images: only the tests that run them pay for
    /// copying them into every node).
    pub fn up_with(nodes: usize, extra: &[&str]) -> SwarmLab {
        SwarmLab::start(nodes, extra, false)
    }

    /// [`SwarmLab::up_with`], with nodes that pull a task's image before
    /// running it, as real nodes do (`LAB_PULL=1`): from a registry the
    /// test runs on a lab address; any other pull fails at once (the lab
    /// has no route out) and the task runs the image its node has.
    pub fn up_pulling(nodes: usize, extra: &[&str]) -> SwarmLab {
        SwarmLab::start(nodes, extra, true)
    }

    fn start(nodes: usize, extra: &[&str], pull: bool) -> SwarmLab {
        assert!((1..=9).contains(&nodes), "a lab has 1 to 9 nodes");
        let lab = SwarmLab::named(nodes);
        // Made before the script runs: should it fail or hang, the drop
        // removes what it made.
        let mut command = lab.script("up");
        command
            .arg(nodes.to_string())
            .args(lab_images())
            .args(extra)
            .env("LAB_PULL", if pull { "1" } else { "" });
        let output = run_within("the swarm lab is up", command, LAB_DEADLINE);
        assert!(
            output.status.success(),
            "starting the swarm lab {}:\n{}",
            lab.dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        lab
    }

    /// A lab as a killed run leaves it: its script is SIGKILLed once node
    /// 1's engine has a socket, with dockerds and namespaces left running.
    /// Its drop must remove them as it removes a whole lab.
    pub fn killed_while_starting(nodes: usize) -> SwarmLab {
        let lab = SwarmLab::named(nodes);
        let mut child = lab
            .script("up")
            .arg(nodes.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the swarm lab's script");
        let socket = lab.dir.join("n1/docker.sock");
        let started = poll(LAB_DEADLINE, Duration::from_millis(50), || {
            if socket.exists() {
                Ok(())
            } else {
                Err(format!("no {}", socket.display()))
            }
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(started.is_ok(), "node 1 never got a socket: {started:?}");
        lab
    }

    /// What of the lab is on this machine: its directory, namespaces,
    /// processes, cgroups and mounts, one line each.
    pub fn leftovers(&self) -> Vec<String> {
        let dir = self.dir.display().to_string();
        let name = self.name();
        let mut found = Vec::new();
        if self.dir.exists() {
            found.push(format!("directory {dir}"));
        }
        let netns = Command::new("ip").args(["netns", "list"]).output();
        for line in netns
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
            .lines()
        {
            if line.starts_with(&format!("{name}-")) {
                found.push(format!("namespace {line}"));
            }
        }
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&format!("{dir}/")) {
                found.push(format!("process {cmdline}"));
            }
        }
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for node in 1..=self.nodes {
                let cgroup = hierarchy.path().join(format!("{name}-n{node}"));
                if cgroup.exists() {
                    found.push(format!("cgroup {}", cgroup.display()));
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        for line in mounts.lines().filter(|line| line.contains(&dir)) {
            found.push(format!("mount {line}"));
        }
        found
    }

    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// DOCKER_HOST for node N (1 is the manager).
    pub fn host(&self, node: usize) -> String {
        assert!(
            (1..=self.nodes).contains(&node),
            "no node {node} in the lab"
        );
        format!("unix://{}/n{node}/docker.sock", self.dir.display())
    }

    /// DOCKER_HOST for the manager.
    pub fn manager(&self) -> String {
        self.host(1)
    }

    /// Node N's hostname, as the swarm names it.
    pub fn node_name(&self, node: usize) -> String {
        format!("{}-n{node}", self.name())
    }

    /// `CRYPTUS_SWARM_NODES` naming the engines of `nodes` by hostname.
    pub fn nodes_setting(&self, nodes: &[usize]) -> String {
        nodes
            .iter()
            .map(|&node| format!("{}={}", self.node_name(node), self.host(node)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs the docker CLI against node N, for at most two minutes.
    #[track_caller]
    pub fn docker(&self, node: usize, args: &[&str]) -> Output {
        let mut command = Command::new("docker");
        command.args(["-H", &self.host(node)]).args(args);
        run_within(
            &format!("docker {} on node {node} ended", args.join(" ")),
            command,
            DOCKER_DEADLINE,
        )
    }

    /// [`SwarmLab::docker`], asserting success; its stdout.
    #[track_caller]
    pub fn docker_ok(&self, node: usize, args: &[&str]) -> String {
        let output = self.docker(node, args);
        assert!(
            output.status.success(),
            "docker {} on node {node}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A command run in node N's network namespace (to reach its published
    /// ports, which the host cannot).
    pub fn in_node(&self, node: usize, args: &[&str]) -> Command {
        let mut command = self.script("nsexec");
        command.arg(node.to_string()).args(args);
        command
    }

    /// Cuts node N's link to the lab's switch: its packets are dropped.
    pub fn cut(&self, node: usize) {
        self.script_ok("cut", node);
    }

    /// SIGKILLs node N's dockerd; the lab's teardown removes the rest.
    pub fn kill_engine(&self, node: usize) {
        self.script_ok("kill-engine", node);
    }

    #[track_caller]
    fn script_ok(&self, action: &str, node: usize) {
        let mut command = self.script(action);
        command.arg(node.to_string());
        let output = run_within(&format!("{action} {node} ended"), command, DOCKER_DEADLINE);
        assert!(
            output.status.success(),
            "swarm-lab.sh {action} {node}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn script(&self, action: &str) -> Command {
        let mut command = Command::new(format!("{REPO}/scripts/swarm-lab.sh"));
        command.arg(action).arg(&self.dir);
        command
    }
}

impl Drop for SwarmLab {
    fn drop(&mut self) {
        self.down();
    }
}

impl SwarmLab {
    /// Removes the whole lab now (dropping it does the same; a lab removed
    /// already is no error).
    pub fn down(&self) {
        // No panic here: this may run while a failed test unwinds.
        let Ok(mut child) = self
            .script("down")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
        else {
            return;
        };
        if poll(LAB_DEADLINE, Duration::from_millis(100), || {
            exited(&mut child)
        })
        .is_err()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The images a lab carries: the stack's, and the app under every
/// `cryptus-app:*` tag the shared engine has.
fn lab_images() -> Vec<String> {
    let mut images = vec![app_image(), nginx_image(), redis_image()];
    images.extend(on_engine(|docker| async move {
        let filters = std::collections::HashMap::from([("reference", vec!["cryptus-app"])]);
        let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        docker
            .list_images(Some(options))
            .await
            .expect("listing the app's images")
            .into_iter()
            .flat_map(|image| image.repo_tags)
            .filter(|tag| tag.starts_with("cryptus-app:"))
            .collect::<Vec<String>>()
    }));
    images.sort();
    images.dedup();
    images
}
