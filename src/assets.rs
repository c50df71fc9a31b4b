//! The default project files, embedded so the binary alone can start a
//! project (`cryptus init`). They are the repository's own files.

pub struct Asset {
    pub path: &'static str,
    pub text: &'static str,
}

pub const DEFAULTS: &[Asset] = &[
    Asset {
        path: "compose/docker-compose.zero-downtime.yml",
        text: include_str!("../compose/docker-compose.zero-downtime.yml"),
    },
    Asset {
        path: "compose/.env.example",
        text: include_str!("../compose/.env.example"),
    },
    Asset {
        path: "nginx/nginx.conf",
        text: include_str!("../nginx/nginx.conf"),
    },
    Asset {
        path: "nginx/app.conf",
        text: include_str!("../nginx/app.conf"),
    },
    Asset {
        path: "compose/docker-compose.monitoring.yml",
        text: include_str!("../compose/docker-compose.monitoring.yml"),
    },
    Asset {
        path: "monitoring/prometheus.yml",
        text: include_str!("../monitoring/prometheus.yml"),
    },
    Asset {
        path: "monitoring/alerts.yml",
        text: include_str!("../monitoring/alerts.yml"),
    },
    Asset {
        path: "monitoring/alertmanager.yml",
        text: include_str!("../monitoring/alertmanager.yml"),
    },
    Asset {
        path: "monitoring/grafana/provisioning/datasources/prometheus.yml",
        text: include_str!("../monitoring/grafana/provisioning/datasources/prometheus.yml"),
    },
    Asset {
        path: "monitoring/grafana/provisioning/dashboards/cryptus.yml",
        text: include_str!("../monitoring/grafana/provisioning/dashboards/cryptus.yml"),
    },
    Asset {
        path: "monitoring/grafana/dashboards/cryptus.json",
        text: include_str!("../monitoring/grafana/dashboards/cryptus.json"),
    },
];
