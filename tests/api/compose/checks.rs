//! What the compose deployment needs to start and work, as checks that each name what is
//! wrong: the services and their dependencies, the nodes' settings read the way the binary
//! reads them (clap), their roles as a cluster needs them and as scripts/cluster.sh runs
//! them, and the files Traefik, Prometheus and MySQL are given.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use clap::{Args, FromArgMatches};
use sagashop::cluster::roles::{Role, Roles};
use sagashop::config::Config;

use super::model::{Deployment, MYSQL_INIT, PROMETHEUS_CONFIG, Service, words};

/// Environment the nodes may be given that clap does not read: the OpenTelemetry SDK's own
/// variables, and the log filter and colour switches.
const READ_OUTSIDE_CLAP: [&str; 4] = [
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_BSP_SCHEDULE_DELAY",
    "RUST_LOG",
    "NO_COLOR",
];

/// Every problem found; empty when the deployment is whole.
pub fn problems(d: &Deployment) -> Vec<String> {
    let mut p = Vec::new();
    services_have_an_image(d, &mut p);
    dependencies_are_ready_first(d, &mut p);
    host_ports_differ(d, &mut p);
    mounted_files_exist(d, &mut p);
    if !d.compose.services.contains_key("traefik") {
        p.push("no traefik service in front of the nodes".into());
    }
    let nodes = nodes(d, &mut p);
    if nodes.is_empty() {
        p.push("no sagashop node: no service is built from this repository".into());
        return p;
    }
    for node in &nodes {
        node_is_reachable(node, &mut p);
        node_has_its_databases(d, node, &mut p);
        node_has_nats_and_traces(d, node, &mut p);
        traefik_routes_to(d, node, &mut p);
    }
    image_serves_the_nodes(d, &nodes, &mut p);
    roles_make_a_cluster(&nodes, &mut p);
    nodes_are_those_of_cluster_sh(d, &nodes, &mut p);
    nodes_share_their_cluster_settings(&nodes, &mut p);
    prometheus_scrapes_every_node(d, &nodes, &mut p);
    redis_is_a_six_node_cluster(d, &mut p);
    p
}

/// A sagashop node: a service built from this repository, with its settings as parsed.
struct Node<'a> {
    name: &'a str,
    service: &'a Service,
    config: Config,
}

impl Node<'_> {
    fn env(&self, name: &str) -> Option<&str> {
        self.service.environment.get(name).map(String::as_str)
    }

    fn depends_healthy_on(&self, service: &str) -> bool {
        self.service
            .depends_on
            .get(service)
            .is_some_and(|dep| dep.condition == "service_healthy")
    }

    /// `SAGASHOP_METRICS_LISTEN` as an address (unset, `off` or unparsable: none).
    fn metrics_listen(&self) -> Option<SocketAddr> {
        self.env("SAGASHOP_METRICS_LISTEN")?.parse().ok()
    }
}

fn services_have_an_image(d: &Deployment, p: &mut Vec<String>) {
    for (name, service) in &d.compose.services {
        if service.image.is_none() && service.build.is_none() {
            p.push(format!("{name}: neither an image nor a build"));
        }
    }
}

fn dependencies_are_ready_first(d: &Deployment, p: &mut Vec<String>) {
    let services = &d.compose.services;
    for (name, service) in services {
        for (target, dep) in &service.depends_on {
            let Some(target_service) = services.get(target) else {
                p.push(format!("{name} depends on {target}, which is no service"));
                continue;
            };
            match dep.condition.as_str() {
                "service_started" => {}
                "service_healthy" => {
                    if target_service
                        .healthcheck
                        .as_ref()
                        .is_none_or(|h| h.test.is_empty())
                    {
                        p.push(format!(
                            "{name} waits for {target} to be healthy, but {target} has no healthcheck"
                        ));
                    }
                }
                "service_completed_successfully" => {
                    if target_service.restart.as_deref() != Some("no") {
                        p.push(format!(
                            "{name} waits for {target} to complete, but {target} is restarted (restart: \"no\" is a one-shot job)"
                        ));
                    }
                }
                other => p.push(format!("{name} -> {target}: unknown condition {other}")),
            }
        }
    }
}

/// Host ports published by two services would refuse the second one's start.
fn host_ports_differ(d: &Deployment, p: &mut Vec<String>) {
    let mut taken: BTreeMap<u16, &str> = BTreeMap::new();
    for (name, service) in &d.compose.services {
        for spec in &service.ports {
            let parts: Vec<&str> = spec.split(':').collect();
            // `[ip:]host:container`; a bare container port gets an ephemeral host port.
            let Some(host) = parts.len().checked_sub(2).map(|i| parts[i]) else {
                continue;
            };
            let Ok(host) = host.parse::<u16>() else {
                p.push(format!("{name}: host port in `{spec}` is not a number"));
                continue;
            };
            if let Some(other) = taken.insert(host, name) {
                p.push(format!(
                    "host port {host} is published by {other} and by {name}"
                ));
            }
        }
    }
}

/// Bind mounts (`./path:/in/container`) name files of this repository.
fn mounted_files_exist(d: &Deployment, p: &mut Vec<String>) {
    for (name, service) in &d.compose.services {
        for volume in &service.volumes {
            let host = volume.split(':').next().unwrap_or_default();
            if host.starts_with("./") && !d.has_file(host) {
                p.push(format!(
                    "{name} mounts {host}, which the repository does not have"
                ));
            }
        }
    }
}

/// The services built from this repository, their environment checked against the
/// binary's settings and parsed by clap as `sagashop serve` parses it.
fn nodes<'a>(d: &'a Deployment, p: &mut Vec<String>) -> Vec<Node<'a>> {
    let serve = Config::augment_args(clap::Command::new("serve"));
    let long_of_env: BTreeMap<String, String> = serve
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?.to_owned();
            Some((env, arg.get_long()?.to_owned()))
        })
        .collect();
    let mut nodes = Vec::new();
    for (name, service) in &d.compose.services {
        if service.build.is_none() {
            continue;
        }
        let mut argv = vec!["serve".to_owned()];
        for (var, value) in &service.environment {
            match long_of_env.get(var) {
                Some(long) => argv.push(format!("--{long}={}", interpolated(value))),
                None if READ_OUTSIDE_CLAP.contains(&var.as_str()) => {}
                None => p.push(format!("{name}: {var} is no setting of the binary")),
            }
        }
        // Only what the file says counts: the test process's own environment must not.
        let serve = Config::augment_args(clap::Command::new("serve"))
            .mut_args(|arg| arg.env(None::<&'static str>));
        match serve
            .try_get_matches_from(&argv)
            .and_then(|matches| Config::from_arg_matches(&matches))
        {
            Ok(config) => nodes.push(Node {
                name,
                service,
                config,
            }),
            Err(e) => p.push(format!("{name}: the binary refuses its settings: {e}")),
        }
    }
    nodes
}

/// The value a variable has once Compose interpolates `${...}` (a placeholder here).
fn interpolated(value: &str) -> String {
    let variable = regex::Regex::new(r"\$\{[^}]*\}").unwrap();
    variable
        .replace_all(value, "placeholder")
        .replace("$$", "$")
}

/// The host of a `scheme://[user[:password]@]host[:port][/path]` URL.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    host_port.split(':').next().unwrap_or_default()
}

/// Traefik and Prometheus reach the node: it listens on every interface, serves metrics on
/// a port of their own, and its healthcheck asks the binary.
fn node_is_reachable(node: &Node<'_>, p: &mut Vec<String>) {
    let name = node.name;
    let listen = node.config.listen;
    if !listen.ip().is_unspecified() {
        p.push(format!(
            "{name}: SAGASHOP_LISTEN {listen} is not reachable from other containers (use 0.0.0.0)"
        ));
    }
    match node.metrics_listen() {
        None => p.push(format!(
            "{name}: SAGASHOP_METRICS_LISTEN is not an address: nothing to scrape"
        )),
        Some(metrics) if metrics.port() == listen.port() => p.push(format!(
            "{name}: the API and the metrics listener share port {}",
            listen.port()
        )),
        Some(metrics) if !metrics.ip().is_unspecified() => p.push(format!(
            "{name}: SAGASHOP_METRICS_LISTEN {metrics} is not reachable from Prometheus (use 0.0.0.0)"
        )),
        Some(_) => {}
    }
    let probe = node
        .service
        .healthcheck
        .as_ref()
        .map(|h| h.test.clone())
        .unwrap_or_default();
    let asks_the_binary = probe.first().map(String::as_str) == Some("CMD")
        && probe.get(1).is_some_and(|bin| bin.ends_with("/sagashop"))
        && probe.get(2).map(String::as_str) == Some("healthcheck");
    if !asks_the_binary {
        p.push(format!(
            "{name}: its healthcheck is not `sagashop healthcheck` (got {probe:?})"
        ));
    }
}

/// Every database of the node's roles: a MySQL URL on a server of this deployment, which
/// the node waits for, and whose init script creates that database.
fn node_has_its_databases(d: &Deployment, node: &Node<'_>, p: &mut Vec<String>) {
    let name = node.name;
    for db in node.config.cluster.roles.databases() {
        let Some(url) = node.config.databases.database_url(db) else {
            p.push(format!(
                "{name} runs a role on the {} database but has no {}_DATABASE_URL",
                db.name(),
                db.name().to_uppercase()
            ));
            continue;
        };
        if !url.is_mysql() {
            p.push(format!("{name}: the {} database is not MySQL", db.name()));
            continue;
        }
        let raw = url.expose();
        let server = host_of(raw);
        let Some(mysql) = d.compose.services.get(server) else {
            p.push(format!(
                "{name}: the {} database is on {server}, which is no service",
                db.name()
            ));
            continue;
        };
        if !node.depends_healthy_on(server) {
            p.push(format!("{name} does not wait for {server} to be healthy"));
        }
        if !mysql
            .volumes
            .iter()
            .any(|v| v.starts_with(&format!("./{MYSQL_INIT}:/docker-entrypoint-initdb.d/")))
        {
            p.push(format!(
                "{server} does not run {MYSQL_INIT} at its first start"
            ));
        }
        let database = raw.rsplit('/').next().unwrap_or_default();
        let database = database.split('?').next().unwrap_or_default();
        let created = format!("CREATE DATABASE IF NOT EXISTS `{database}`");
        let granted = format!("ON `{database}`.* TO");
        if !d.mysql_init.contains(&created) || !d.mysql_init.contains(&granted) {
            p.push(format!(
                "{MYSQL_INIT} does not create and grant {database} ({name}'s {} database)",
                db.name()
            ));
        }
    }
}

/// NATS with JetStream, waited for; traces go to a service of this deployment that takes OTLP.
fn node_has_nats_and_traces(d: &Deployment, node: &Node<'_>, p: &mut Vec<String>) {
    let name = node.name;
    match &node.config.cluster.nats_url {
        None => p.push(format!(
            "{name}: no NATS_URL (a node without one runs alone)"
        )),
        Some(url) => {
            let server = host_of(url.expose());
            match d.compose.services.get(server) {
                None => p.push(format!("{name}: NATS is on {server}, which is no service")),
                Some(nats) => {
                    if !words(nats.command.as_ref()).iter().any(|w| w == "-js") {
                        p.push(format!("{server}: NATS runs without JetStream (-js)"));
                    }
                    if !node.depends_healthy_on(server) {
                        p.push(format!("{name} does not wait for {server} to be healthy"));
                    }
                }
            }
        }
    }
    match node.env("OTEL_EXPORTER_OTLP_ENDPOINT") {
        None => p.push(format!(
            "{name}: no OTEL_EXPORTER_OTLP_ENDPOINT: traces go nowhere"
        )),
        Some(endpoint) => {
            let collector = host_of(endpoint);
            let takes_otlp = d.compose.services.get(collector).is_some_and(|s| {
                s.environment
                    .get("COLLECTOR_OTLP_ENABLED")
                    .map(String::as_str)
                    == Some("true")
            });
            if !takes_otlp {
                p.push(format!(
                    "{name}: traces go to {collector}, which is no service receiving OTLP"
                ));
            }
        }
    }
}

/// The node's labels put it behind Traefik: a router for `/api` and `/dashboard` on an
/// entrypoint Traefik publishes, to the node's API port.
fn traefik_routes_to(d: &Deployment, node: &Node<'_>, p: &mut Vec<String>) {
    let name = node.name;
    let labels = &node.service.labels;
    if labels.get("traefik.enable").map(String::as_str) != Some("true") {
        p.push(format!("{name}: traefik.enable is not \"true\""));
        return;
    }
    let routers: Vec<&str> = labels
        .keys()
        .filter_map(|k| {
            k.strip_prefix("traefik.http.routers.")?
                .strip_suffix(".rule")
        })
        .collect();
    let routed = routers.iter().find(|router| {
        let rule = &labels[&format!("traefik.http.routers.{router}.rule")];
        rule.contains("PathPrefix(`/api`)") && rule.contains("PathPrefix(`/dashboard`)")
    });
    let Some(router) = routed else {
        p.push(format!("{name}: no Traefik router for /api and /dashboard"));
        return;
    };
    let service = labels
        .get(&format!("traefik.http.routers.{router}.service"))
        .map_or(*router, String::as_str);
    let port = labels.get(&format!(
        "traefik.http.services.{service}.loadbalancer.server.port"
    ));
    if port.map(String::as_str) != Some(&node.config.listen.port().to_string()) {
        p.push(format!(
            "{name}: Traefik sends to port {port:?}, the API listens on {}",
            node.config.listen.port()
        ));
    }
    let Some(traefik) = d.compose.services.get("traefik") else {
        return;
    };
    let flags = words(traefik.command.as_ref());
    for flag in [
        "--providers.docker=true",
        "--providers.docker.exposedbydefault=false",
    ] {
        if !flags.iter().any(|f| f == flag) {
            p.push(format!("traefik: no {flag}"));
        }
    }
    let entrypoints = labels
        .get(&format!("traefik.http.routers.{router}.entrypoints"))
        .map_or("", String::as_str);
    for entrypoint in entrypoints.split(',').filter(|e| !e.is_empty()) {
        let prefix = format!("--entrypoints.{entrypoint}.address=:");
        let port = flags.iter().find_map(|f| f.strip_prefix(&prefix));
        let published = port.is_some_and(|port| {
            traefik
                .ports
                .iter()
                .any(|spec| spec.ends_with(&format!(":{port}")))
        });
        if !published {
            p.push(format!(
                "{name}: Traefik entrypoint {entrypoint} is not defined and published"
            ));
        }
        // Otherwise Traefik v3 cuts a request, and so a result stream, after 60 s.
        let unbounded =
            format!("--entrypoints.{entrypoint}.transport.respondingTimeouts.readTimeout=0");
        if !flags.contains(&unbounded) {
            p.push(format!(
                "traefik: entrypoint {entrypoint} would end result streams after its readTimeout (set {unbounded})"
            ));
        }
    }
}

/// The image the nodes run exposes their ports, runs as a user of its own, and starts the
/// binary.
fn image_serves_the_nodes(d: &Deployment, nodes: &[Node<'_>], p: &mut Vec<String>) {
    let instructions: Vec<(&str, &str)> = d
        .dockerfile
        .lines()
        .filter_map(|line| line.trim().split_once(' '))
        .collect();
    let last = |name: &str| {
        instructions
            .iter()
            .rev()
            .find(|(i, _)| i.eq_ignore_ascii_case(name))
            .map(|(_, rest)| rest.trim())
    };
    let exposed: BTreeSet<u16> = instructions
        .iter()
        .filter(|(i, _)| i.eq_ignore_ascii_case("EXPOSE"))
        .flat_map(|(_, ports)| ports.split_whitespace().filter_map(|p| p.parse().ok()))
        .collect();
    for node in nodes {
        let ports = [
            Some(node.config.listen.port()),
            node.metrics_listen().map(|m| m.port()),
        ];
        for port in ports.into_iter().flatten() {
            if !exposed.contains(&port) {
                p.push(format!(
                    "the Dockerfile does not EXPOSE {port} ({}'s)",
                    node.name
                ));
            }
        }
    }
    if last("USER").is_none_or(|user| user == "root" || user == "0") {
        p.push("the image runs as root (no USER of its own in the Dockerfile)".into());
    }
    if !last("ENTRYPOINT").is_some_and(|e| e.contains("/sagashop\"")) {
        p.push("the image's ENTRYPOINT is not the sagashop binary".into());
    }
}

/// Every role somewhere (orchestrators share the partitions, so any number of them), the
/// api everywhere, ids unique.
fn roles_make_a_cluster(nodes: &[Node<'_>], p: &mut Vec<String>) {
    for role in Role::ALL {
        if !nodes.iter().any(|n| n.config.cluster.roles.has(role)) {
            p.push(format!("no node runs the {role} role"));
        }
    }
    for node in nodes {
        if !node.config.cluster.roles.has(Role::Api) {
            p.push(format!(
                "{}: behind Traefik every node serves the API, this one has no api role",
                node.name
            ));
        }
    }
    let mut ids: BTreeMap<u16, &str> = BTreeMap::new();
    for node in nodes {
        if let Some(other) = ids.insert(node.config.cluster.node_id, node.name) {
            p.push(format!(
                "node id {} is given to {other} and to {}",
                node.config.cluster.node_id, node.name
            ));
        }
    }
}

/// The same nodes, ids and roles as the local cluster, so the two deployments correspond.
fn nodes_are_those_of_cluster_sh(d: &Deployment, nodes: &[Node<'_>], p: &mut Vec<String>) {
    let ids: BTreeSet<u16> = nodes.iter().map(|n| n.config.cluster.node_id).collect();
    let local: BTreeSet<u16> = d.cluster_sh_roles.keys().copied().collect();
    if ids != local {
        p.push(format!(
            "node ids {ids:?} are not those of scripts/cluster.sh {local:?}"
        ));
    }
    for node in nodes {
        let id = node.config.cluster.node_id;
        let Some(local) = d.cluster_sh_roles.get(&id) else {
            continue;
        };
        let local: Roles = local.parse().expect("scripts/cluster.sh roles");
        if local != node.config.cluster.roles {
            p.push(format!(
                "{}: roles {} differ from node {id} of scripts/cluster.sh ({local})",
                node.name, node.config.cluster.roles
            ));
        }
    }
}

/// One secret, one admin token, one cluster name and one NATS for all nodes.
fn nodes_share_their_cluster_settings(nodes: &[Node<'_>], p: &mut Vec<String>) {
    for var in [
        "JWT_SECRET",
        "SAGASHOP_ADMIN_TOKEN",
        "SAGASHOP_CLUSTER_NAME",
        "NATS_URL",
    ] {
        let values: BTreeSet<Option<&str>> = nodes.iter().map(|n| n.env(var)).collect();
        if values.len() != 1 || values.contains(&None) {
            p.push(format!("the nodes do not all have one {var}"));
        }
    }
}

/// Prometheus mounts the config in the repository, which lists each node's metrics
/// listener and nothing else.
fn prometheus_scrapes_every_node(d: &Deployment, nodes: &[Node<'_>], p: &mut Vec<String>) {
    let mounted = d.compose.services.values().any(|s| {
        s.image
            .as_deref()
            .is_some_and(|i| i.starts_with("prom/prometheus"))
            && s.volumes
                .iter()
                .any(|v| v.starts_with(&format!("./{PROMETHEUS_CONFIG}:")))
    });
    if !mounted {
        p.push(format!("no Prometheus service mounts {PROMETHEUS_CONFIG}"));
    }
    let scraped: BTreeSet<String> = d
        .prometheus
        .scrape_configs
        .iter()
        .filter(|c| c.metrics_path == "/metrics")
        .flat_map(|c| c.static_configs.iter().flat_map(|s| s.targets.clone()))
        .collect();
    let expected: BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| Some(format!("{}:{}", n.name, n.metrics_listen()?.port())))
        .collect();
    for missing in expected.difference(&scraped) {
        p.push(format!("{PROMETHEUS_CONFIG} does not scrape {missing}"));
    }
    for stale in scraped.difference(&expected) {
        p.push(format!(
            "{PROMETHEUS_CONFIG} scrapes {stale}, which is no node's metrics listener"
        ));
    }
}

/// Six cluster-mode Redis nodes evicting volatile keys LRU, joined by a one-shot job that
/// waits for all of them.
fn redis_is_a_six_node_cluster(d: &Deployment, p: &mut Vec<String>) {
    let redis: Vec<&str> = d
        .compose
        .services
        .iter()
        .filter(|(_, s)| {
            words(s.command.as_ref())
                .iter()
                .any(|w| w == "--cluster-enabled")
        })
        .map(|(name, _)| name.as_str())
        .collect();
    if redis.len() != 6 {
        p.push(format!(
            "the Redis Cluster has {} nodes, not six: {redis:?}",
            redis.len()
        ));
    }
    for name in &redis {
        let flags = words(d.compose.services[*name].command.as_ref());
        let policy = flags
            .iter()
            .position(|f| f == "--maxmemory-policy")
            .and_then(|i| flags.get(i + 1));
        if policy.map(String::as_str) != Some("volatile-lru") {
            p.push(format!("{name}: maxmemory-policy is not volatile-lru"));
        }
    }
    let joins_them = d.compose.services.values().any(|s| {
        s.restart.as_deref() == Some("no")
            && redis.iter().all(|r| {
                s.depends_on
                    .get(*r)
                    .is_some_and(|dep| dep.condition == "service_healthy")
            })
    });
    if !joins_them {
        p.push("no one-shot job waits for every Redis node to create the cluster".into());
    }
    // Every node reads through the cluster, its seeds naming cluster nodes on their port.
    for (name, service) in d.compose.services.iter().filter(|(_, s)| s.build.is_some()) {
        let Some(seeds) = service.environment.get("SAGASHOP_REDIS_CLUSTER") else {
            p.push(format!("{name} does not use the Redis Cluster"));
            continue;
        };
        for seed in seeds.split(',') {
            let known = seed
                .split_once(':')
                .is_some_and(|(host, port)| redis.contains(&host) && port == "6379");
            if !known {
                p.push(format!("{name}: Redis seed {seed} is no cluster node"));
            }
        }
    }
}
