//! The compose deployment as files: docker-compose.yml (YAML anchors and `<<` merges
//! applied, as Compose applies them), the Prometheus config and the MySQL init script it
//! mounts, and the node roles of scripts/cluster.sh, read from the repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

/// Everything the checks look at, loaded once; tests change a copy to see a check fail.
#[derive(Clone)]
pub struct Deployment {
    /// The repository the files come from (host paths of bind mounts are resolved in it).
    pub root: PathBuf,
    pub compose: ComposeFile,
    pub prometheus: PrometheusConfig,
    /// deploy/mysql/init.sql.
    pub mysql_init: String,
    /// The Dockerfile the nodes are built from.
    pub dockerfile: String,
    /// scripts/cluster.sh's roles by node number (`ROLES=([1]="..." ...)`).
    pub cluster_sh_roles: BTreeMap<u16, String>,
}

/// The part of docker-compose.yml the checks read.
#[derive(Clone, Deserialize)]
pub struct ComposeFile {
    pub services: BTreeMap<String, Service>,
}

/// One service. Lists and maps take the one form this repository writes (maps for
/// `environment`, `labels` and `depends_on`), so another form fails to load, loudly.
#[derive(Clone, Default, Deserialize)]
pub struct Service {
    pub image: Option<String>,
    pub build: Option<Value>,
    pub command: Option<Value>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, Dependency>,
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub volumes: Vec<String>,
    pub restart: Option<String>,
}

/// `depends_on.<service>`.
#[derive(Clone, Deserialize)]
pub struct Dependency {
    pub condition: String,
}

/// `healthcheck` (its `test` in the exec form, `["CMD", ...]` or `["CMD-SHELL", "..."]`).
#[derive(Clone, Deserialize)]
pub struct Healthcheck {
    pub test: Vec<String>,
}

/// The part of prometheus.yml the checks read.
#[derive(Clone, Deserialize)]
pub struct PrometheusConfig {
    pub scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Clone, Deserialize)]
pub struct ScrapeConfig {
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
}

#[derive(Clone, Deserialize)]
pub struct StaticConfig {
    pub targets: Vec<String>,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

/// The Prometheus config file the compose file mounts (repository path).
pub const PROMETHEUS_CONFIG: &str = "deploy/prometheus/prometheus.yml";
/// The MySQL init script the compose file mounts (repository path).
pub const MYSQL_INIT: &str = "deploy/mysql/init.sql";

impl Deployment {
    /// Reads the deployment files of the repository this test was built from.
    pub fn load() -> Self {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let read = |path: &str| {
            std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        Deployment {
            compose: parse_yaml("docker-compose.yml", &read("docker-compose.yml")),
            prometheus: parse_yaml(PROMETHEUS_CONFIG, &read(PROMETHEUS_CONFIG)),
            mysql_init: read(MYSQL_INIT),
            dockerfile: read("Dockerfile"),
            cluster_sh_roles: cluster_sh_roles(&read("scripts/cluster.sh")),
            root,
        }
    }

    /// Whether a bind mount's host path (relative to the compose file) exists.
    pub fn has_file(&self, host_path: &str) -> bool {
        Path::new(&self.root).join(host_path).exists()
    }
}

/// Parses YAML with its `<<` merge keys applied.
fn parse_yaml<T: serde::de::DeserializeOwned>(name: &str, text: &str) -> T {
    let mut value: Value =
        serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("{name} is not YAML: {e}"));
    value
        .apply_merge()
        .unwrap_or_else(|e| panic!("{name}: a `<<` merge does not apply: {e}"));
    serde_yaml_ng::from_value(value).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `ROLES=([1]="api,..." [2]="...")` of scripts/cluster.sh, by node number.
fn cluster_sh_roles(script: &str) -> BTreeMap<u16, String> {
    let line = script
        .lines()
        .find(|l| l.starts_with("ROLES=("))
        .expect("scripts/cluster.sh has no ROLES=( line");
    let entry = regex::Regex::new(r#"\[(\d+)\]="([^"]*)""#).unwrap();
    entry
        .captures_iter(line)
        .map(|c| (c[1].parse().unwrap(), c[2].to_owned()))
        .collect()
}

/// A scalar or a list of scalars (`command`, `entrypoint`) as its words.
pub fn words(value: Option<&Value>) -> Vec<String> {
    match value {
        None => Vec::new(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_owned(),
            })
            .collect(),
        Some(other) => vec![serde_yaml_ng::to_string(other).unwrap().trim().to_owned()],
    }
}
