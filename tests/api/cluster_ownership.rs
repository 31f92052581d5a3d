//! Partition ownership among several orchestrators, on a cluster of the test's own with
//! short leases: the partitions are shared out fairly, a node stopped gracefully gives its
//! partitions back at once, one killed loses them when its leases run out, a node that comes
//! back gets its share again, and a saga whose owner went away finishes on its new owner.

use std::collections::BTreeMap;
use std::time::Duration;

use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use sagashop::config::ServiceDb;
use sagashop::domain::ids::CustomerId;
use sagashop::domain::partition::{self, DEFAULT_COUNT};

use crate::support::mariadb::Databases;
use crate::support::nodes::{Bench, Node, NodeSpec, wait_until};
use crate::support::scrape::scrape;
use crate::support::{Api, Customer, DEADLINE, free_port};

/// Every orchestrator's roles (payments run on a node of their own, held on demand).
const ORCHESTRATOR: &str = "api,orchestrator,account,product,order";

impl Bench {
    /// Node `node_id` with the tests' short lease.
    fn leased(&self, node_id: u16, roles: &'static str, extra: &[&str]) -> NodeSpec<'_> {
        let mut spec = self.node(node_id, roles, extra);
        spec.extra
            .extend(["--lease-seconds".to_owned(), "3".to_owned()]);
        spec
    }

    /// Partitions per owner node (owner 0: nobody), as the saga store has them now.
    async fn owners(&self) -> BTreeMap<i32, i64> {
        #[derive(diesel::QueryableByName)]
        struct Owned {
            #[diesel(sql_type = Integer)]
            owner_node: i32,
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let url = self.databases.url(ServiceDb::Saga);
        let Ok(mut conn) = AsyncMysqlConnection::establish(&url).await else {
            return BTreeMap::new();
        };
        let rows: Vec<Owned> = diesel::sql_query(
            "SELECT owner_node, COUNT(*) AS n FROM partitions GROUP BY owner_node",
        )
        .load(&mut conn)
        .await
        .unwrap_or_default();
        rows.into_iter().map(|r| (r.owner_node, r.n)).collect()
    }

    /// The node that owns `customer`'s partition now (0: none).
    async fn owner_of(&self, customer: &Customer) -> i32 {
        #[derive(diesel::QueryableByName)]
        struct Owner {
            #[diesel(sql_type = Integer)]
            owner_node: i32,
        }
        let p = partition::of_customer(CustomerId(customer.id), DEFAULT_COUNT);
        let url = self.databases.url(ServiceDb::Saga);
        let mut conn = AsyncMysqlConnection::establish(&url).await.unwrap();
        let row: Owner =
            diesel::sql_query("SELECT owner_node FROM partitions WHERE partition_id = ?")
                .bind::<Integer, _>(p.0 as i32)
                .get_result(&mut conn)
                .await
                .unwrap();
        row.owner_node
    }

    /// Waits until each of `nodes` reports on its metrics listener (`metrics[n - 1]`) the
    /// partitions the store says it owns.
    async fn wait_gauges_agree(&self, nodes: &[i32], metrics: &[u16]) {
        wait_until(
            "the partitions_owned gauges to agree with the store",
            DEADLINE,
            || async {
                let owners = self.owners().await;
                let mut agree = true;
                for n in nodes {
                    let m = scrape(&metrics_url(metrics, *n)).await;
                    let gauge = m.sum("sagashop_partitions_owned", &[]) as i64;
                    agree &= owners.get(n).copied().unwrap_or(0) == gauge;
                }
                agree
            },
        )
        .await;
    }

    /// Waits until exactly `nodes` own the partitions, each its fair share (P / n, +-1).
    async fn wait_balanced(&self, nodes: &[i32]) {
        let total = i64::from(DEFAULT_COUNT);
        let share = total / nodes.len() as i64;
        let balanced = crate::support::eventually(Duration::from_secs(60), || async {
            let owners = self.owners().await;
            let mine: i64 = nodes
                .iter()
                .map(|n| owners.get(n).copied().unwrap_or(0))
                .sum();
            let fair = nodes.iter().all(|n| {
                let owned = owners.get(n).copied().unwrap_or(0);
                (share..=share + 1).contains(&owned)
            });
            (mine == total && fair).then_some(())
        })
        .await;
        let last = self.owners().await;
        assert!(balanced.is_some(), "not balanced over {nodes:?}: {last:?}");
    }
}

fn metrics_url(metrics: &[u16], node: i32) -> String {
    format!("http://127.0.0.1:{}/metrics", metrics[node as usize - 1])
}

/// How many partitions `node` counted changing hands as `kind`.
async fn handovers(metrics: &[u16], node: i32, kind: &str) -> f64 {
    scrape(&metrics_url(metrics, node))
        .await
        .sum("sagashop_partition_handovers_total", &[("kind", kind)])
}

/// Starts a purchase of `customer` on the node that owns its partition, held at the payment;
/// answers the purchase id and that node.
async fn purchase_held(bench: &Bench, api: &Api, customer: &Customer, product: u64) -> (u64, i32) {
    let owner = bench.owner_of(customer).await;
    let id = api
        .node(owner as usize)
        .purchase_ok(&customer.access, &[(product, 1)])
        .await;
    wait_until("the saga to reach the payment", DEADLINE, || async {
        let view = api.purchase_view(&customer.access, id).await;
        view["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["step"] == "CREATE_PAYMENT"))
    })
    .await;
    (id, owner)
}

#[actix_rt::test]
async fn three_orchestrators_share_the_partitions_and_take_over_from_one_that_stops() {
    let Some(bench) = Bench::new("ownership").await else {
        return;
    };
    let metrics = [free_port(), free_port(), free_port()];
    let listen: Vec<String> = metrics.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let specs = [
        bench.leased(1, ORCHESTRATOR, &["--metrics-listen", &listen[0]]),
        bench.leased(2, ORCHESTRATOR, &["--metrics-listen", &listen[1]]),
        bench.leased(3, ORCHESTRATOR, &["--metrics-listen", &listen[2]]),
    ];
    let mut nodes: Vec<Option<Node>> = Vec::new();
    for spec in &specs {
        nodes.push(Some(spec.spawn()));
    }
    let payments = bench
        .leased(4, "payment", &["--hold-payments"])
        .start()
        .await;
    for node in nodes.iter().flatten() {
        node.wait_ready().await;
    }
    bench.wait_balanced(&[1, 2, 3]).await;
    bench.wait_gauges_agree(&[1, 2, 3], &metrics).await;
    let urls: Vec<String> = nodes.iter().flatten().map(|n| n.url.clone()).collect();
    let api = Api::over(urls.clone());
    let product = api.create_product("lamp", 30, 100).await;

    // SIGTERM: the node gives its partitions back as it stops, before any lease runs out.
    let first = api.sign_up().await;
    let (first_id, stopped) = purchase_held(&bench, &api, &first, product).await;
    let mut node = nodes[stopped as usize - 1].take().unwrap();
    node.signal("TERM");
    node.exited().await;
    let log = node.log();
    let owners = bench.owners().await;
    assert_eq!(owners.get(&stopped), None, "{owners:?}\n{log}");
    assert!(log.contains("partitions given back at shutdown"), "{log}");
    drop(node);
    let others: Vec<i32> = (1..=3).filter(|n| *n != stopped).collect();
    bench.wait_balanced(&others).await;

    // It comes back and gets its share again.
    let back = specs[stopped as usize - 1].start().await;
    let mut urls = urls;
    urls[stopped as usize - 1] = back.url.clone();
    nodes[stopped as usize - 1] = Some(back);
    let api = Api::over(urls);
    bench.wait_balanced(&[1, 2, 3]).await;
    bench.wait_gauges_agree(&[1, 2, 3], &metrics).await;
    // The others gave it back its share.
    let mut given_back = 0.0;
    for n in (1..=3).filter(|n| *n != stopped) {
        given_back += handovers(&metrics, n, "released").await;
    }
    assert!(given_back >= 10.0, "{given_back}");

    // SIGKILL: its partitions are claimed once their leases run out; its saga finishes.
    let second = api.sign_up().await;
    let (second_id, killed) = purchase_held(&bench, &api, &second, product).await;
    nodes[killed as usize - 1].take().unwrap().kill();
    let others: Vec<i32> = (1..=3).filter(|n| *n != killed).collect();
    bench.wait_balanced(&others).await;
    bench.wait_gauges_agree(&others, &metrics).await;
    let mut claimed = 0.0;
    for n in &others {
        claimed += handovers(&metrics, *n, "claimed").await;
        assert_eq!(
            handovers(&metrics, *n, "lost").await,
            0.0,
            "node {n} lost none"
        );
    }
    assert!(claimed >= 32.0, "{claimed}");
    payments.signal("USR1");
    let survivor = api.node(others[0] as usize);
    for (customer, id) in [(&first, first_id), (&second, second_id)] {
        let done = survivor
            .wait_status(&customer.access, id, "SUCCEEDED", Duration::from_secs(60))
            .await;
        assert_eq!(done["status"], "SUCCEEDED", "{done}");
    }
    assert_eq!(survivor.inventory(product).await, 98);
    assert_eq!(
        bench.databases.count(ServiceDb::Payment, "payments").await,
        2
    );
}

/// The lease queries themselves, on the test's MariaDB: a claim takes unowned, expired or
/// this node id's forgotten partitions and bumps their epochs; live leases of another node
/// are not taken; a renewal finds the partitions another node claimed; a partition given
/// back is claimed by another at once.
#[actix_rt::test]
async fn leases_are_claimed_renewed_and_given_back_on_the_database_clock() {
    use sagashop::clock::Clock;
    use sagashop::config::Config;
    use sagashop::db::partitions::PartitionLeases;
    use sagashop::db::sagas::Sagas;
    use sagashop::domain::partition::PartitionId;

    let Some(databases) = Databases::create("leases").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::embedded(dir.path());
    databases.configure(&mut config.databases);
    let pools = sagashop::app::open_databases(&config.databases, &[ServiceDb::Saga])
        .await
        .unwrap();
    Sagas::new(pools[0].1.clone(), Clock::system())
        .prepare(8)
        .await
        .unwrap();
    let url = || databases.url(ServiceDb::Saga).into();
    let held = |claimed: &[sagashop::db::partitions::Claimed]| -> BTreeMap<PartitionId, u64> {
        claimed.iter().map(|c| (c.partition, c.epoch)).collect()
    };
    let ids = |claimed: &[sagashop::db::partitions::Claimed]| -> Vec<u32> {
        claimed.iter().map(|c| c.partition.0).collect()
    };
    let none = BTreeMap::new();

    let mut one = PartitionLeases::new(url(), 1, 60_000);
    let mut two = PartitionLeases::new(url(), 2, 60_000);
    assert_eq!(one.heartbeat().await.unwrap(), 1);
    assert_eq!(two.heartbeat().await.unwrap(), 2);

    let first = one.claim(&none, 5).await.unwrap();
    assert_eq!(ids(&first), [0, 1, 2, 3, 4]);
    assert!(
        first.iter().all(|c| c.epoch == 1 && c.next_seq == 1),
        "{first:?}"
    );
    let mut held_one = held(&first);
    // Node 1's live leases are not taken: node 2 gets only the rest.
    let second = two.claim(&none, 8).await.unwrap();
    assert_eq!(ids(&second), [5, 6, 7]);
    let mut held_two = held(&second);
    assert_eq!(two.claim(&held_two, 8).await.unwrap(), []);
    assert_eq!(one.renew(&held_one).await.unwrap().lost, []);

    // Node 1 gives two partitions back; node 2 claims them at once, at a higher epoch, and
    // a renewal of node 1 that still counts them finds them lost.
    let given: BTreeMap<PartitionId, u64> = held_one
        .range(PartitionId(3)..)
        .map(|(p, e)| (*p, *e))
        .collect();
    assert_eq!(one.release(&given).await.unwrap(), 2);
    let taken = two.claim(&held_two, 8).await.unwrap();
    assert_eq!(ids(&taken), [3, 4]);
    assert!(taken.iter().all(|c| c.epoch == 2), "{taken:?}");
    held_two.extend(held(&taken));
    assert_eq!(
        one.renew(&held_one).await.unwrap().lost,
        [PartitionId(3), PartitionId(4)]
    );
    held_one.retain(|p, _| p.0 < 3);
    // A stale release (old epoch) gives nothing back.
    assert_eq!(one.release(&given).await.unwrap(), 0);

    // A lease that runs out is claimed by another node.
    let mut brief = PartitionLeases::new(url(), 3, 1);
    assert_eq!(one.release(&held_one).await.unwrap(), 3);
    let short = brief.claim(&none, 8).await.unwrap();
    assert_eq!(ids(&short), [0, 1, 2]);
    let waited_until = std::time::Instant::now() + DEADLINE;
    let after_expiry = loop {
        let found = two.claim(&held_two, 1).await.unwrap();
        if !found.is_empty() {
            break found;
        }
        assert!(
            std::time::Instant::now() < waited_until,
            "the short lease never ran out"
        );
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(ids(&after_expiry), [0]);
    assert_eq!(after_expiry[0].epoch, short[0].epoch + 1);
    held_two.extend(held(&after_expiry));

    // Node 2 restarted (same id, nothing held yet) takes its own partitions back at once.
    let mut again = PartitionLeases::new(url(), 2, 60_000);
    let back = again.claim(&none, 8).await.unwrap();
    assert_eq!(ids(&back), [0, 1, 2, 3, 4, 5, 6, 7]);
    for c in &back {
        if let Some(before) = held_two.get(&c.partition) {
            assert_eq!(c.epoch, before + 1, "{c:?}");
        }
    }
    // Leaving gives everything back and drops the node from the live orchestrators.
    assert_eq!(again.leave(&held(&back)).await.unwrap(), 8);
    assert_eq!(one.heartbeat().await.unwrap(), 1);
    assert_eq!(brief.claim(&none, 8).await.unwrap().len(), 8);
}

/// The store writer's ownership changes apply in order with its writes (embedded store): a
/// write queued before a drop is committed, one after it is refused and counted as fenced,
/// a gain lets it write again, and releasing everything answers what it held.
#[actix_rt::test]
async fn the_store_writer_changes_ownership_in_order_with_its_writes() {
    use std::sync::Arc;

    use sagashop::actors::store::SagaStore;
    use sagashop::clock::Clock;
    use sagashop::config::Config;
    use sagashop::db::sagas::{SagaWrite, Sagas, WriteOutcome};
    use sagashop::domain::ids::{ProductId, PurchaseId};
    use sagashop::domain::purchase::{
        Currency, Purchase, PurchaseItem, Step, StepEvent, StepStatus,
    };
    use sagashop::domain::saga::{Saga, SagaState};
    use sagashop::telemetry::metrics::{Metrics, NodeLabels};

    let dir = tempfile::tempdir().unwrap();
    let config = Config::embedded(dir.path());
    let pools = sagashop::app::open_databases(&config.databases, &[ServiceDb::Saga])
        .await
        .unwrap();
    let repo = Sagas::new(pools[0].1.clone(), Clock::system());
    let metrics = Metrics::new(&NodeLabels {
        node_id: 1,
        roles: "all".into(),
    })
    .unwrap();
    let store = SagaStore::start(repo, 1, 4, &actix_rt::Arbiter::current(), &metrics)
        .await
        .unwrap();
    let purchase = Arc::new(Purchase {
        purchase_id: PurchaseId(1001),
        customer_id: CustomerId(7),
        items: vec![PurchaseItem {
            product_id: ProductId(1),
            amount: 1,
        }],
        currency: Currency::Nt,
        amount: 100,
    });
    let p = store.partition_of(CustomerId(7));
    let epoch = store.epoch_of(p).unwrap();
    let step = |status| StepEvent {
        step: Step::UpdateProductInventory,
        status,
    };
    let write = |from_version: u64, status| SagaWrite {
        purchase: purchase.clone(),
        partition: p,
        from_version,
        stored: from_version > 0,
        log_len: from_version as u32,
        saga: Saga::at(SagaState::Executing(Step::UpdateProductInventory)),
        events: vec![step(status)],
        trace: Default::default(),
    };
    let committed = |outcome: &WriteOutcome| matches!(outcome, WriteOutcome::Committed(_));

    let first = store.commit(write(0, StepStatus::Execute)).await.unwrap();
    assert!(committed(&first), "{first:?}");
    // Queued before the drop: committed; the drop answers after it.
    let (queued, dropped) = futures_util::future::join(
        store.commit(write(1, StepStatus::Execute)),
        store.drop_partitions(vec![p]),
    )
    .await;
    assert!(committed(&queued.unwrap()));
    dropped.unwrap();
    assert_eq!(store.epoch_of(p), None);
    assert_eq!(store.held().len(), 3);
    let refused = store.commit(write(2, StepStatus::Execute)).await.unwrap();
    assert_eq!(refused, WriteOutcome::LostPartition);
    assert_eq!(metrics.writes_fenced().get(), 1);

    // Gained again (at the epoch the store still has): it writes, reading the sequence anew.
    store.gain(vec![(p, epoch)]).await.unwrap();
    assert_eq!(store.epoch_of(p), Some(epoch));
    let again = store.commit(write(2, StepStatus::Execute)).await.unwrap();
    let WriteOutcome::Committed(results) = again else {
        panic!("{again:?}")
    };
    assert_eq!(results[0].event_id, 3, "numbering continues");

    let released = store.release_all().await.unwrap();
    assert_eq!(released.len(), 4);
    assert!(released.iter().all(|(_, e)| *e == epoch));
    assert!(store.held().is_empty());
}
