//! A saga whose stored log does not replay is set aside (quarantined): the node starts and
//! runs every other saga, `GET /api/purchase/{id}` shows `QUARANTINED`, `sagashop sagas
//! quarantined` lists it with the reason, and `sagashop sagas retry ID` runs it again once
//! the log is repaired.

use std::path::Path;

use diesel::{Connection, RunQueryDsl};
use sagashop::actors::faults::Fault;
use sagashop::domain::purchase::Step;

use crate::support::*;

/// Rewrites the status of one step-log entry in the embedded saga store, as a disk or an
/// operator could.
fn set_logged_status(data: &Path, purchase_id: u64, saga_seq: u32, status: &str) {
    let path = data.join("saga.db");
    let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    // Wait for a lock the app may still hold (it checkpoints its WAL on close).
    diesel::sql_query("PRAGMA busy_timeout = 10000")
        .execute(&mut conn)
        .unwrap();
    let changed = diesel::sql_query(format!(
        "UPDATE saga_events SET status = '{status}' \
         WHERE purchase_id = {purchase_id} AND saga_seq = {saga_seq}"
    ))
    .execute(&mut conn)
    .unwrap();
    assert_eq!(changed, 1, "the entry exists");
}

/// Runs `sagashop <args> --data-dir <data>` off the actix thread; its success and stdout.
async fn sagashop(data: &Path, args: &[&str]) -> (bool, String) {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--data-dir".into(), data.to_str().unwrap().into()]);
    let output = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sagashop"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("sagashop runs")
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[actix_rt::test]
async fn a_saga_whose_log_does_not_replay_is_quarantined_and_released_after_repair() {
    let data = tempfile::tempdir().unwrap();
    let first = TestApp::spawn_in(data.path(), |_| {}).await;
    let c = first.sign_up().await;
    let product = first.create_product("quarantine", 10, 10).await;
    first.faults.hold_step(Step::CreatePayment, true);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(first.purchase_ok(&c.access, &[(product, 1)]).await);
    }
    // Every saga waits at its payment, its log five entries long.
    first
        .wait_fired(Fault::StepHeld(Step::CreatePayment), 3)
        .await;
    drop(first);
    let bad = ids[1];
    set_logged_status(data.path(), bad, 2, "STATUS_GARBLED");

    let second = TestApp::spawn_in(data.path(), |_| {}).await;
    for &id in [ids[0], ids[2]].iter() {
        let view = second.wait_finished(&c.access, id).await;
        assert_eq!(view["status"], "SUCCEEDED");
    }
    let view = second.purchase_view(&c.access, bad).await;
    assert_eq!(view["status"], "QUARANTINED", "{view}");
    assert_eq!(view["amount"], 10);
    assert_eq!(
        view["steps"].as_array().unwrap().len(),
        4,
        "the garbled entry is left out"
    );
    // Its reserved unit stays reserved while it is set aside.
    assert_eq!(second.inventory(product).await, 7);

    let (ok, listed) = sagashop(data.path(), &["sagas", "quarantined"]).await;
    assert!(ok, "{listed}");
    assert!(listed.contains(&bad.to_string()), "{listed}");
    assert!(listed.contains("STATUS_GARBLED"), "{listed}");
    assert!(!listed.contains(&ids[0].to_string()), "{listed}");
    let (ok, refused) = sagashop(data.path(), &["sagas", "retry", &ids[0].to_string()]).await;
    assert!(
        !ok,
        "a saga that is not quarantined cannot be retried: {refused}"
    );
    assert!(refused.contains("not quarantined"), "{refused}");

    // Repaired and released: the running node picks it up and finishes it.
    set_logged_status(data.path(), bad, 2, "STATUS_SUCCESS");
    let (ok, released) = sagashop(data.path(), &["sagas", "retry", &bad.to_string()]).await;
    assert!(ok, "{released}");
    let view = second.wait_finished(&c.access, bad).await;
    assert_eq!(view["status"], "SUCCEEDED", "{view}");
    assert_eq!(view_steps(&view).len(), 6);
    assert_eq!(second.inventory(product).await, 7);
    let (ok, listed) = sagashop(data.path(), &["sagas", "quarantined"]).await;
    assert!(ok && listed.contains("no quarantined sagas"), "{listed}");
}
