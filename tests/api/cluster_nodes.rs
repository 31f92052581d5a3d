//! Nodes with roles over a NATS server of the test's own and the test's MariaDB databases:
//! the bridge between them (malformed and foreign-version requests, a replica dying
//! mid-command, NATS restarting under load) and the topologies a node refuses at start.

use std::process::Command;
use std::time::Duration;

use async_nats::Client;
use sagashop::actors::ServiceError;
use sagashop::actors::messages::Person;
use sagashop::cluster::wire::{self, BridgeError};
use sagashop::config::ServiceDb;

use crate::support::mariadb::Databases;
use crate::support::nodes::{Bench, wait_until};
use crate::support::{Api, DEADLINE};

impl Bench {
    async fn client(&self) -> Client {
        async_nats::connect(self.nats.url()).await.unwrap()
    }

    async fn ask(&self, client: &Client, subject: &str, payload: Vec<u8>) -> Vec<u8> {
        let subject = format!("{}.{subject}", self.name);
        let reply = client.request(subject, payload.into()).await.unwrap();
        reply.payload.to_vec()
    }
}

#[actix_rt::test]
async fn malformed_and_foreign_requests_are_answered_with_errors_and_the_node_serves_on() {
    let Some(bench) = Bench::new("bridge_poison").await else {
        return;
    };
    let node = bench.node(1, "all", &[]).start().await;
    let nats = bench.client().await;

    let garbage = bench
        .ask(&nats, "svc.payment.step", b"\x00 not json".to_vec())
        .await;
    assert!(matches!(
        wire::decode_answer::<()>(&garbage),
        Err(BridgeError::Undecodable(_))
    ));
    let newer = br#"{"v":99,"body":{"customer_id":1,"field_of_the_future":true}}"#.to_vec();
    let newer = bench.ask(&nats, "svc.account.get_person", newer).await;
    assert_eq!(
        wire::decode_answer::<()>(&newer),
        Err(BridgeError::Version(99))
    );
    let unknown = bench
        .ask(&nats, "svc.order.refund", wire::encode(&()))
        .await;
    assert_eq!(
        wire::decode_answer::<()>(&unknown),
        Err(BridgeError::UnknownKind("refund".into()))
    );

    // A well-formed request is still served, with the service's own answer.
    let lookup = wire::encode(&serde_json::json!({"customer_id": 12345}));
    let answer = bench.ask(&nats, "svc.account.get_person", lookup).await;
    let person: Result<Person, ServiceError> = wire::decode_answer(&answer).unwrap();
    assert_eq!(person, Err(ServiceError::CustomerNotFound));
    let api = Api::over(vec![node.url.clone()]);
    let c = api.sign_up().await;
    assert_eq!(
        api.get("/api/account/info/person", Some(&c.access))
            .await
            .status,
        200
    );
    let log = node.log();
    assert!(log.contains("refused a request"), "{log}");
}

#[actix_rt::test]
async fn a_replica_that_dies_mid_command_is_replaced_and_the_payment_happens_once() {
    let Some(bench) = Bench::new("bridge_replica").await else {
        return;
    };
    let main = bench
        .node(1, "api,orchestrator,account,product,order", &[])
        .spawn();
    // The only payment replica holds every command it gets: the saga waits at the payment.
    let mut stuck = bench.node(2, "payment", &["--hold-payments"]).start().await;
    main.wait_ready().await;
    let api = Api::over(vec![main.url.clone()]);
    let c = api.sign_up().await;
    let p = api.create_product("lamp", 30, 5).await;
    let id = api.purchase_ok(&c.access, &[(p, 2)]).await;
    wait_until("the saga to reach the payment", DEADLINE, || async {
        let view = api.purchase_view(&c.access, id).await;
        view["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["step"] == "CREATE_PAYMENT"))
    })
    .await;
    wait_until("the held replica to get the command", DEADLINE, || async {
        stuck.log().contains("command held by a fault switch")
    })
    .await;

    // A second replica joins, the first dies holding the command: the retry reaches the
    // second, and the purchase succeeds with one payment.
    let _spare = bench.node(3, "payment", &[]).start().await;
    stuck.kill();
    let done = api
        .wait_status(&c.access, id, "SUCCEEDED", Duration::from_secs(30))
        .await;
    assert_eq!(done["status"], "SUCCEEDED");
    let payment = api
        .get(&format!("/api/payment/{id}"), Some(&c.access))
        .await;
    assert_eq!(payment.status, 200);
    assert_eq!(payment.json()["amount"], 60);
    assert_eq!(api.inventory(p).await, 3);
    let rows = bench.databases.count(ServiceDb::Payment, "payments").await;
    assert_eq!(rows, 1, "exactly one payment row");
}

#[actix_rt::test]
async fn sagas_in_flight_finish_after_nats_restarts() {
    let Some(mut bench) = Bench::new("bridge_restart").await else {
        return;
    };
    let main = bench
        .node(1, "api,orchestrator,account,product,order", &[])
        .spawn();
    let payments = bench.node(2, "payment", &["--hold-payments"]).start().await;
    main.wait_ready().await;
    let api = Api::over(vec![main.url.clone()]);
    let c = api.sign_up().await;
    let p = api.create_product("kettle", 10, 100).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(api.purchase_ok(&c.access, &[(p, 1)]).await);
    }
    wait_until("every saga to wait at the payment", DEADLINE, || async {
        let mut all = true;
        for id in &ids {
            let view = api.purchase_view(&c.access, *id).await;
            all &= view["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["step"] == "CREATE_PAYMENT"));
        }
        all
    })
    .await;

    bench.nats.stop();
    payments.signal("USR1");
    bench.nats.resume().await;

    for id in &ids {
        let done = api
            .wait_status(&c.access, *id, "SUCCEEDED", Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
    }
    assert_eq!(api.inventory(p).await, 92);
    assert_eq!(
        bench.databases.count(ServiceDb::Payment, "payments").await,
        8
    );
    assert_eq!(bench.databases.count(ServiceDb::Order, "orders").await, 8);
}

#[actix_rt::test]
async fn a_second_node_with_the_same_id_is_refused() {
    let Some(bench) = Bench::new("bridge_refusals").await else {
        return;
    };
    let _first = bench.node(1, "all", &[]).start().await;

    let (status, log) = bench.node(1, "order", &[]).refused().await;
    assert!(!status.success());
    assert!(log.contains("node id 1 is in use"), "{log}");
}

/// Runs the binary with `args` and answers its exit status and stderr.
fn run(args: &[&str]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sagashop"))
        .env("SAGASHOP_METRICS_LISTEN", "off")
        .arg("serve")
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(args)
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn topologies_that_cannot_work_are_refused_with_what_to_change() {
    let (status, err) = run(&["--roles", "api,order"]);
    assert!(!status.success());
    assert!(err.contains("needs --nats-url"), "{err}");

    // A cluster node on SQLite is refused before it reaches for NATS at all.
    let (status, err) = run(&["--roles", "order", "--nats-url", "nats://127.0.0.1:1"]);
    assert!(!status.success());
    assert!(err.contains("needs the order database on MySQL"), "{err}");
    assert!(err.contains("--order-database-url"), "{err}");
}

#[actix_rt::test]
async fn nodes_migrating_one_database_at_once_take_turns() {
    let Some(databases) = Databases::create("migrate_race").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let racers: Vec<std::process::Child> = (0..4)
        .map(|_| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagashop"));
            cmd.arg("migrate")
                .args(["--data-dir", dir.path().to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
            for db in ServiceDb::ALL {
                cmd.arg(format!("--{}-database-url", db.name()))
                    .arg(databases.url(db));
            }
            cmd.spawn().unwrap()
        })
        .collect();
    for racer in racers {
        let out = racer.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a migration failed: {err}");
    }
    assert_eq!(databases.count(ServiceDb::Product, "products").await, 0);
}
