//! `GET /healthz` (the process answers) and `GET /readyz` (everything this node needs
//! answers: the databases of its roles, NATS, and a replica of each role it reaches over
//! NATS). Both are served on every node, whatever its roles. Redis is only a cache: when it
//! does not answer the node is `degraded` (slower, still correct), not unready.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use serde::Serialize;

use crate::actors::bridge;
use crate::cache::redis::Redis;
use crate::cluster::bus::Bus;
use crate::cluster::roles::{Role, Roles};
use crate::db::DbPool;

/// How long one readiness check may take before it counts as failed.
const CHECK_WITHIN: Duration = Duration::from_secs(2);

/// What this node's readiness depends on.
pub struct Probe {
    pub node_id: u16,
    pub roles: Roles,
    /// The databases this node's roles work on.
    pub databases: Vec<(&'static str, DbPool)>,
    /// The cluster bus (`None`: embedded mode).
    pub bus: Option<Bus>,
    /// Roles this node reaches on other nodes: each needs at least one live replica.
    pub remote: Vec<Role>,
    /// The shared cache level, when configured (down: degraded, not unready).
    pub redis: Option<Redis>,
}

/// `{"status":"ok"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Alive {
    status: &'static str,
}

/// One dependency and whether it answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `<service> database`, `nats`, or `<role> replicas`.
    name: String,
    ok: bool,
    /// A failed check the node serves without (the cache): it is slower, not unready.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    degraded: bool,
    /// Why it does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The readiness report, the same shape whether ready (200) or not (503): every check, the
/// names of those that failed in `missing`, and of those the node serves without in
/// `degraded`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok`, `degraded` (ready, a cache is down) or `not ready`.
    status: &'static str,
    node_id: u16,
    roles: Vec<&'static str>,
    checks: Vec<Check>,
    missing: Vec<String>,
    degraded: Vec<String>,
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "the process serves HTTP", body = Alive)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Alive { status: "ok" })
}

/// Readiness: 200 when every dependency of this node answers (or only Redis does not:
/// `degraded`), else 503 naming the missing.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "every dependency answers, or only the cache does not (`degraded`)", body = Readiness),
        (status = 503, description = "the same report, `missing` naming what does not answer", body = Readiness),
    ))]
pub async fn readyz(probe: web::Data<Probe>) -> HttpResponse {
    let report = probe.check().await;
    if report.missing.is_empty() {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::ServiceUnavailable().json(report)
    }
}

impl Probe {
    /// Runs every check at once and logs the failed ones.
    pub async fn check(&self) -> Readiness {
        let report = self.check_quietly().await;
        for failed in report.checks.iter().filter(|c| !c.ok) {
            let what = if failed.degraded {
                "degraded"
            } else {
                "not ready"
            };
            tracing::warn!(check = %failed.name, error = ?failed.error, "{what}");
        }
        report
    }

    /// Whether every check passes now, without logging (the dashboard asks every second).
    pub async fn is_ready(&self) -> bool {
        self.check_quietly().await.missing.is_empty()
    }

    /// Runs every check at once.
    async fn check_quietly(&self) -> Readiness {
        let databases = join_all(self.databases.iter().map(|(name, pool)| async move {
            let answered = tokio::time::timeout(CHECK_WITHIN, pool.ping()).await;
            let error = match answered {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer in time".to_owned()),
            };
            check(format!("{name} database"), error)
        }));
        let replicas = join_all(self.bus.iter().flat_map(|bus| {
            self.remote.iter().map(move |role| async move {
                let error = bridge::ping(bus, *role, CHECK_WITHIN).await.err();
                check(format!("{role} replicas"), error.map(|e| e.to_string()))
            })
        }));
        let redis = async {
            match &self.redis {
                Some(redis) => Some(redis_check(redis).await),
                None => None,
            }
        };
        let (mut checks, replicas, redis) = futures_util::join!(databases, replicas, redis);
        if let Some(bus) = &self.bus {
            let error = (!bus.is_connected()).then(|| "not connected".to_owned());
            checks.push(check("nats".to_owned(), error));
        }
        checks.extend(replicas);
        checks.extend(redis);
        report(self.node_id, self.roles, checks)
    }
}

/// Whether Redis answers a PING (within its own call timeout).
async fn redis_check(redis: &Redis) -> Check {
    let pong: Result<String, _> = redis.query(&redis::cmd("PING")).await;
    let mut check = check("redis".to_owned(), pong.err().map(|e| e.to_string()));
    check.degraded = !check.ok;
    check
}

/// The report over `checks`: failed ones are `missing`, or `degraded` when the node serves
/// without them.
fn report(node_id: u16, roles: Roles, checks: Vec<Check>) -> Readiness {
    let failed = |degraded: bool| -> Vec<String> {
        checks
            .iter()
            .filter(|c| !c.ok && c.degraded == degraded)
            .map(|c| c.name.clone())
            .collect()
    };
    let (missing, degraded) = (failed(false), failed(true));
    Readiness {
        status: match (missing.is_empty(), degraded.is_empty()) {
            (false, _) => "not ready",
            (true, false) => "degraded",
            (true, true) => "ok",
        },
        node_id,
        roles: roles.iter().map(Role::name).collect(),
        checks,
        missing,
        degraded,
    }
}

fn check(name: String, error: Option<String>) -> Check {
    Check {
        name,
        ok: error.is_none(),
        degraded: false,
        error,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::redis::RedisTarget;

    fn probe(redis: Option<Redis>) -> Probe {
        Probe {
            node_id: 3,
            roles: "all".parse().unwrap(),
            databases: Vec::new(),
            bus: None,
            remote: Vec::new(),
            redis,
        }
    }

    #[tokio::test]
    async fn a_down_redis_makes_the_node_degraded_not_unready() {
        // Port 1 on loopback: nothing listens.
        let down = Redis::open(
            RedisTarget::Single("redis://127.0.0.1:1".into()),
            Duration::from_millis(200),
        )
        .unwrap();
        let probe = probe(Some(down));
        let report = probe.check().await;
        assert_eq!(report.status, "degraded");
        assert!(report.missing.is_empty(), "{report:?}");
        assert_eq!(report.degraded, ["redis"]);
        let json = serde_json::to_value(&report).unwrap();
        let redis = &json["checks"][0];
        assert_eq!(redis["name"], "redis");
        assert_eq!(redis["ok"], false);
        assert_eq!(redis["degraded"], true);
        assert!(probe.is_ready().await, "degraded is still ready");
        let answer = readyz(web::Data::new(probe)).await;
        assert_eq!(answer.status(), actix_web::http::StatusCode::OK);
    }

    #[test]
    fn a_missing_dependency_outranks_a_degraded_one() {
        let mut redis = check("redis".into(), Some("down".into()));
        redis.degraded = true;
        let db = check("product database".into(), Some("gone".into()));
        let report = report(1, "all".parse().unwrap(), vec![db, redis]);
        assert_eq!(report.status, "not ready");
        assert_eq!(report.missing, ["product database"]);
        assert_eq!(report.degraded, ["redis"]);
        let ok = report_of_ok();
        assert_eq!(ok.status, "ok");
        assert!(ok.degraded.is_empty());
    }

    fn report_of_ok() -> Readiness {
        report(1, "all".parse().unwrap(), vec![check("redis".into(), None)])
    }

    #[tokio::test]
    async fn a_live_redis_passes_the_check() {
        let Some(target) = crate::cache::test_support::target() else {
            return;
        };
        let redis = Redis::open(target, Duration::from_secs(2)).unwrap();
        let report = probe(Some(redis)).check().await;
        assert_eq!(report.status, "ok", "{report:?}");
    }
}
