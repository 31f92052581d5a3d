//! `GET /healthz` (the process answers) and `GET /readyz` (everything this node needs
//! answers: the databases of its roles, NATS, and a replica of each role it reaches over
//! NATS). Both are served on every node, whatever its roles.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use futures_util::future::join_all;
use serde::Serialize;

use crate::actors::bridge;
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
    /// Why it does not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The readiness report, the same shape whether ready (200) or not (503): every check, and
/// the names of those that failed in `missing`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` or `not ready`.
    status: &'static str,
    node_id: u16,
    roles: Vec<&'static str>,
    checks: Vec<Check>,
    missing: Vec<String>,
}

/// Liveness: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    responses((status = 200, description = "the process serves HTTP", body = Alive)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Alive { status: "ok" })
}

/// Readiness: 200 when every dependency of this node answers, else 503 naming the missing.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    responses(
        (status = 200, description = "every dependency answers", body = Readiness),
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
            tracing::warn!(check = %failed.name, error = ?failed.error, "not ready");
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
        let (mut checks, replicas) = futures_util::join!(databases, replicas);
        if let Some(bus) = &self.bus {
            let error = (!bus.is_connected()).then(|| "not connected".to_owned());
            checks.push(check("nats".to_owned(), error));
        }
        checks.extend(replicas);
        let missing: Vec<String> = checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.name.clone())
            .collect();
        Readiness {
            status: if missing.is_empty() {
                "ok"
            } else {
                "not ready"
            },
            node_id: self.node_id,
            roles: self.roles.iter().map(Role::name).collect(),
            checks,
            missing,
        }
    }
}

fn check(name: String, error: Option<String>) -> Check {
    Check {
        name,
        ok: error.is_none(),
        error,
    }
}
