//! cryptus on a Docker Swarm, end to end, on a lab of the test's own
//! (tests/support/swarm_lab.rs): never on the shared engine, which is no
//! swarm member.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::swarm_lab::SwarmLab;
use support::wait::eventually;

/// The lab itself: 3 nodes Ready, and a `dnsrr` service's `tasks.<name>`
/// resolves, from a container on the manager, to tasks on every node, each
/// of which answers over the overlay network.
#[test]
fn lab_has_three_ready_nodes_and_dnsrr_tasks_resolve_across_them() {
    let lab = SwarmLab::up(3);

    let nodes = lab.docker_ok(1, &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
    let ready: BTreeSet<&str> = nodes
        .lines()
        .filter_map(|line| line.strip_suffix(" Ready"))
        .collect();
    let expected: BTreeSet<String> = (1..=3).map(|n| lab.node_name(n)).collect();
    assert_eq!(
        ready,
        expected.iter().map(String::as_str).collect(),
        "node ls: {nodes}"
    );

    lab.docker_ok(
        1,
        &[
            "network",
            "create",
            "-d",
            "overlay",
            "--attachable",
            "lab-net",
        ],
    );
    lab.docker_ok(
        1,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--network",
            "lab-net",
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            "3",
            "--replicas-max-per-node",
            "1",
            "--no-resolve-image",
            "--stop-grace-period",
            "2s",
            "--hostname",
            "{{.Node.Hostname}}-web",
            SwarmLab::TOOL_IMAGE,
            "sh",
            "-c",
            "mkdir -p /www && hostname >/www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    let placed = eventually(
        "3 tasks of web run",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || {
            let ps = lab.docker_ok(
                1,
                &[
                    "service",
                    "ps",
                    "web",
                    "--filter",
                    "desired-state=running",
                    "--format",
                    "{{.Node}} {{.CurrentState}}",
                ],
            );
            let running: BTreeSet<String> = ps
                .lines()
                .filter(|line| line.contains(" Running "))
                .filter_map(|line| line.split(' ').next().map(str::to_owned))
                .collect();
            if running.len() == 3 {
                Ok(running)
            } else {
                Err(ps)
            }
        },
    );
    assert_eq!(placed, expected, "one task per node");

    // From the manager: every address tasks.web names, fetched over the
    // overlay, answers with the hostname of a task on another node too.
    let probe = "for ip in $(nslookup tasks.web | sed -n '/^Name:/,$p' | awk '/^Address/ {print $NF}'); \
                 do echo \"$ip $(timeout 5 wget -qO- http://$ip/)\"; done";
    let answers = eventually(
        "tasks.web resolves to a task on every node",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            let output = lab.docker(
                1,
                &[
                    "run",
                    "--rm",
                    "--network",
                    "lab-net",
                    SwarmLab::TOOL_IMAGE,
                    "sh",
                    "-c",
                    probe,
                ],
            );
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let hosts: BTreeSet<String> = text
                .lines()
                .filter_map(|line| line.split_once(' '))
                .filter_map(|(_, host)| host.strip_suffix("-web").map(str::to_owned))
                .collect();
            if hosts == expected {
                Ok(text)
            } else {
                Err(format!("{text}{}", String::from_utf8_lossy(&output.stderr)))
            }
        },
    );
    assert_eq!(
        answers.lines().count(),
        3,
        "three task addresses: {answers}"
    );
}
