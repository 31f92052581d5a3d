//! The compose deployment (docker-compose.yml, deploy/, the image's healthcheck). No Docker
//! engine runs here, so the files are checked statically against what the binary reads and
//! what a cluster needs (`compose/checks.rs`); each kind of mistake is shown to be caught;
//! and `sagashop healthcheck`, the image's probe, runs against a real node.

mod checks;
mod model;

use std::process::Output;

use tokio::process::Command;

use crate::support::{TestApp, free_port};
use model::{Deployment, Healthcheck};

#[test]
fn the_compose_deployment_is_whole() {
    let problems = checks::problems(&Deployment::load());
    assert!(
        problems.is_empty(),
        "docker-compose.yml and deploy/:\n  {}",
        problems.join("\n  ")
    );
}

/// Sets (or with `None` removes) one variable of a service's environment.
fn env(d: &mut Deployment, service: &str, var: &str, value: Option<&str>) {
    let env = &mut d.compose.services.get_mut(service).unwrap().environment;
    match value {
        Some(value) => env.insert(var.into(), value.into()),
        None => env.remove(var),
    };
}

/// A change to the deployment and a piece of what the checks must then report.
type Mistake = (&'static str, fn(&mut Deployment), &'static str);

#[test]
fn each_kind_of_mistake_in_the_deployment_is_reported() {
    let mistakes: Vec<Mistake> = vec![
        (
            "no orchestrator",
            |d| {
                env(d, "node1", "SAGASHOP_ROLES", Some("api,account,product"));
                env(d, "node2", "SAGASHOP_ROLES", Some("api,order,payment"));
                env(
                    d,
                    "node3",
                    "SAGASHOP_ROLES",
                    Some("api,product,order,payment"),
                );
            },
            "no node runs the orchestrator role",
        ),
        (
            "a misspelt role",
            |d| env(d, "node2", "SAGASHOP_ROLES", Some("api,ordr,payment")),
            "unknown role `ordr`",
        ),
        (
            "roles unlike scripts/cluster.sh",
            |d| env(d, "node3", "SAGASHOP_ROLES", Some("api,product,order")),
            "differ from node 3 of scripts/cluster.sh",
        ),
        (
            "a node without the api behind Traefik",
            |d| env(d, "node2", "SAGASHOP_ROLES", Some("order,payment")),
            "no api role",
        ),
        (
            "two nodes with one id",
            |d| env(d, "node3", "SAGASHOP_NODE_ID", Some("2")),
            "node id 2 is given to node2 and to node3",
        ),
        (
            "a variable the binary does not read",
            |d| env(d, "node2", "SAGASHOP_REDIS_CLUSTERS", Some("redis-1:6379")),
            "SAGASHOP_REDIS_CLUSTERS is no setting",
        ),
        (
            "a node without the Redis Cluster",
            |d| env(d, "node3", "SAGASHOP_REDIS_CLUSTER", None),
            "node3 does not use the Redis Cluster",
        ),
        (
            "a Redis seed that is no Redis node",
            |d| {
                env(
                    d,
                    "node1",
                    "SAGASHOP_REDIS_CLUSTER",
                    Some("redis-1:6379,redis-9:6379"),
                )
            },
            "node1: Redis seed redis-9:6379 is no cluster node",
        ),
        (
            "a role's database URL missing",
            |d| env(d, "node2", "ORDER_DATABASE_URL", None),
            "no ORDER_DATABASE_URL",
        ),
        (
            "a database the init script does not create",
            |d| d.mysql_init = d.mysql_init.replace("`sagashop_payment`", "`payments`"),
            "does not create and grant sagashop_payment",
        ),
        (
            "secrets that differ between nodes",
            |d| env(d, "node3", "JWT_SECRET", Some("another")),
            "one JWT_SECRET",
        ),
        (
            "the API on loopback only",
            |d| env(d, "node1", "SAGASHOP_LISTEN", Some("127.0.0.1:8000")),
            "not reachable from other containers",
        ),
        (
            "a node Prometheus does not scrape",
            |d| {
                for config in &mut d.prometheus.scrape_configs {
                    for s in &mut config.static_configs {
                        s.targets.retain(|t| t != "node3:8080");
                    }
                }
            },
            "does not scrape node3:8080",
        ),
        (
            "Traefik sending to another port",
            |d| {
                let labels = &mut d.compose.services.get_mut("node1").unwrap().labels;
                for (key, value) in labels.iter_mut() {
                    if key.ends_with(".loadbalancer.server.port") {
                        *value = "9000".into();
                    }
                }
            },
            "Traefik sends to port Some(\"9000\")",
        ),
        (
            "Traefik cutting result streams after a minute",
            |d| {
                let traefik = d.compose.services.get_mut("traefik").unwrap();
                let flags = model::words(traefik.command.as_ref());
                let kept: Vec<_> = flags
                    .into_iter()
                    .filter(|f| !f.contains("readTimeout"))
                    .collect();
                traefik.command = Some(serde_yaml_ng::to_value(kept).unwrap());
            },
            "would end result streams",
        ),
        (
            "a dependency on a service that does not exist",
            |d| {
                let node = d.compose.services.get_mut("node1").unwrap();
                let nats = node.depends_on.remove("nats").unwrap();
                node.depends_on.insert("natz".into(), nats);
            },
            "node1 depends on natz, which is no service",
        ),
        (
            "waiting for health that is never checked",
            |d| d.compose.services.get_mut("mysql").unwrap().healthcheck = None,
            "but mysql has no healthcheck",
        ),
        (
            "a node healthcheck that asks something else",
            |d| {
                d.compose.services.get_mut("node2").unwrap().healthcheck = Some(Healthcheck {
                    test: vec!["CMD".into(), "curl".into(), "-f".into()],
                })
            },
            "its healthcheck is not `sagashop healthcheck`",
        ),
        (
            "one host port published twice",
            |d| {
                let prometheus = d.compose.services.get_mut("prometheus").unwrap();
                prometheus.ports = vec!["127.0.0.1:8000:9090".into()];
            },
            "host port 8000 is published by",
        ),
        (
            "a service with nothing to run",
            |d| d.compose.services.get_mut("jaeger").unwrap().image = None,
            "jaeger: neither an image nor a build",
        ),
        (
            "a Redis node less",
            |d| {
                d.compose.services.remove("redis-6");
            },
            "has 5 nodes, not six",
        ),
        (
            "an image running as root",
            |d| d.dockerfile = d.dockerfile.replace("USER nonroot", "USER root"),
            "the image runs as root",
        ),
        (
            "a metrics port the image does not expose",
            |d| env(d, "node2", "SAGASHOP_METRICS_LISTEN", Some("0.0.0.0:9100")),
            "does not EXPOSE 9100",
        ),
        (
            "NATS without JetStream",
            |d| {
                d.compose.services.get_mut("nats").unwrap().command = None;
            },
            "without JetStream",
        ),
    ];
    let whole = Deployment::load();
    for (what, break_it, expected) in mistakes {
        let mut broken = whole.clone();
        break_it(&mut broken);
        let problems = checks::problems(&broken);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "{what}: expected a problem containing {expected:?}, got {problems:#?}"
        );
    }
}

/// `sagashop healthcheck` with the given arguments and `SAGASHOP_LISTEN`.
async fn healthcheck(args: &[&str], listen: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sagashop"))
        .arg("healthcheck")
        .args(args)
        .env("SAGASHOP_LISTEN", listen)
        .kill_on_drop(true)
        .output()
        .await
        .expect("sagashop healthcheck runs")
}

#[actix_rt::test]
async fn the_image_healthcheck_passes_on_a_ready_node_and_fails_otherwise() {
    let app = TestApp::spawn().await;
    let port = app.url.rsplit(':').next().unwrap().to_owned();
    // As in the container: SAGASHOP_LISTEN on every interface, asked on loopback.
    let ready = healthcheck(&[], &format!("0.0.0.0:{port}")).await;
    let stdout = String::from_utf8_lossy(&ready.stdout);
    assert!(ready.status.success(), "{ready:?}");
    assert!(stdout.contains("/readyz: 200"), "{stdout}");

    let missing = healthcheck(&["--path", "/no-such-page"], &format!("0.0.0.0:{port}")).await;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(stderr.contains("404"), "{stderr}");

    let nobody = healthcheck(&[], &format!("127.0.0.1:{}", free_port())).await;
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert_eq!(nobody.status.code(), Some(1), "{nobody:?}");
    assert!(
        stderr.contains("no answer from http://127.0.0.1:"),
        "{stderr}"
    );
}
