//! The SagaSupervisor: accepts purchases (bounded: past the cap it answers `Busy`), starts a
//! saga actor per purchase, restarts any that dies before finishing, resumes unfinished sagas
//! from the store on start, and keeps this node's lease on them fresh.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::messages::{AcceptPurchase, GetPurchase, PurchaseView, StepView};
use super::saga::{SagaActor, SagaDeps, SagaFinished};
use super::store::{PendingWrite, SagaStore};
use super::{ServiceError, ServiceResult};
use crate::db::sagas::{EventRow, SagaRow};
use crate::domain::purchase::{Currency, Purchase, StepEvent, StepStatus};
use crate::domain::saga::{SagaEvent, SagaState, next, replay};

/// How often dead saga actors are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Unfinished sagas loaded per query on resume.
const RESUME_PAGE: u64 = 1000;

/// Node identity and limits of the supervisor.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorSettings {
    pub node_id: u16,
    pub max_in_flight: usize,
    pub lease: Duration,
}

/// Supervises every saga of this node.
pub struct SagaSupervisor {
    deps: SagaDeps,
    settings: SupervisorSettings,
    running: HashMap<u64, Addr<SagaActor>>,
    /// Accepted purchases whose saga row is being written (they count against the cap).
    accepting: usize,
    /// Sagas found on start, to be started once the supervisor runs.
    resumed: Vec<(Purchase, SagaState)>,
}

impl SagaSupervisor {
    /// Supervisor that will start `resumed` (from [`load_unfinished`]) when it starts.
    pub fn new(
        deps: SagaDeps,
        settings: SupervisorSettings,
        resumed: Vec<(Purchase, SagaState)>,
    ) -> Self {
        Self {
            deps,
            settings,
            running: HashMap::new(),
            accepting: 0,
            resumed,
        }
    }

    fn launch(&mut self, purchase: Purchase, state: SagaState, ctx: &mut Context<Self>) {
        let id = purchase.purchase_id;
        let actor = SagaActor::new(
            Arc::new(purchase),
            state,
            self.deps.clone(),
            ctx.address().recipient(),
        );
        self.running.insert(id, actor.start());
    }

    /// Restarts sagas whose actor died (panicked or stopped) before reaching a terminal state.
    fn sweep(&mut self, ctx: &mut Context<Self>) {
        let dead: Vec<u64> = self
            .running
            .iter()
            .filter(|(_, addr)| !addr.connected())
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.running.remove(&id);
            tracing::warn!(
                purchase_id = id,
                "saga actor died; restarting from the store"
            );
            self.reload(id, ctx);
        }
    }

    fn reload(&mut self, id: u64, ctx: &mut Context<Self>) {
        let store = self.deps.store.clone();
        self.accepting += 1;
        ctx.spawn(
            async move { load_one(&store, id).await }
                .into_actor(self)
                .map(move |loaded, act, ctx| {
                    act.accepting -= 1;
                    match loaded {
                        Ok(Some((purchase, state))) if !state.is_terminal() => {
                            act.launch(purchase, state, ctx)
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(purchase_id = id, error = %e, "cannot reload saga; retrying");
                            ctx.run_later(SWEEP_EVERY, move |act, ctx| act.reload(id, ctx));
                        }
                    }
                }),
        );
    }

    fn renew_lease(&mut self) {
        let until = crate::clock::now_ms() + self.settings.lease.as_millis() as i64;
        self.deps.store.renew_leases(self.settings.node_id, until);
    }
}

impl Actor for SagaSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(usize::MAX >> 4);
        for (purchase, state) in std::mem::take(&mut self.resumed) {
            self.launch(purchase, state, ctx);
        }
        ctx.run_interval(SWEEP_EVERY, |act, ctx| act.sweep(ctx));
        ctx.run_interval(self.settings.lease / 3, |act, _| act.renew_lease());
    }
}

impl Handler<AcceptPurchase> for SagaSupervisor {
    type Result = ResponseActFuture<Self, ServiceResult<()>>;

    /// Stores the saga together with its first transition (one group-committed write, whose
    /// results the store publishes), then starts the saga actor on the first command.
    fn handle(&mut self, msg: AcceptPurchase, _: &mut Context<Self>) -> Self::Result {
        if self.running.len() + self.accepting >= self.settings.max_in_flight {
            return Box::pin(fut::ready(Err(ServiceError::Busy)));
        }
        let start = next(SagaState::Pending, SagaEvent::Start).expect("a new saga can start");
        let write = PendingWrite {
            purchase_id: msg.purchase.purchase_id,
            customer_id: msg.purchase.customer_id,
            state: start.state,
            attempts: 0,
            events: start.emitted(),
            new_saga: Some(SagaStore::new_row(
                &msg.purchase,
                start.state,
                self.settings.node_id,
                self.settings.lease.as_millis() as i64,
            )),
        };
        self.accepting += 1;
        let store = self.deps.store.clone();
        Box::pin(
            async move { store.commit(write).await }
                .into_actor(self)
                .map(move |committed, act, ctx| {
                    act.accepting -= 1;
                    committed?;
                    act.launch(msg.purchase, start.state, ctx);
                    Ok(())
                }),
        )
    }
}

impl Handler<SagaFinished> for SagaSupervisor {
    type Result = ();

    fn handle(&mut self, msg: SagaFinished, _: &mut Context<Self>) {
        self.running.remove(&msg.purchase_id);
    }
}

impl Handler<GetPurchase> for SagaSupervisor {
    type Result = ResponseFuture<ServiceResult<PurchaseView>>;

    fn handle(&mut self, msg: GetPurchase, _: &mut Context<Self>) -> Self::Result {
        let store = self.deps.store.clone();
        Box::pin(async move {
            let (row, log) = match load_row(&store, msg.purchase_id).await? {
                Some((row, log)) if row.customer_id as u64 == msg.customer_id => (row, log),
                _ => return Err(ServiceError::PurchaseNotFound),
            };
            let purchase = purchase_of(&row)?;
            let state = state_of(&log)?;
            Ok(PurchaseView {
                purchase_id: purchase.purchase_id,
                status: state.public_status().to_owned(),
                amount: purchase.amount,
                currency_code: purchase.currency.code().to_owned(),
                purchase_items: purchase.items,
                steps: log
                    .iter()
                    .map(|e| StepView {
                        step: e.step.clone(),
                        status: e.status.clone(),
                        timestamp: e.created_at / 1000,
                    })
                    .collect(),
            })
        })
    }
}

fn corrupt(what: &str, id: i64) -> ServiceError {
    ServiceError::Internal(format!("saga {id}: corrupt {what}"))
}

fn purchase_of(row: &SagaRow) -> ServiceResult<Purchase> {
    Ok(Purchase {
        purchase_id: row.purchase_id as u64,
        customer_id: row.customer_id as u64,
        items: serde_json::from_str(&row.items).map_err(|_| corrupt("items", row.purchase_id))?,
        currency: Currency::parse(&row.currency_code)
            .ok_or_else(|| corrupt("currency", row.purchase_id))?,
        amount: row.amount,
    })
}

/// Replays a saga's step log: the log, not the cached state column, is the truth.
fn state_of(log: &[EventRow]) -> ServiceResult<SagaState> {
    let entries = log
        .iter()
        .map(|e| {
            let step = crate::domain::purchase::Step::parse(&e.step);
            let status = StepStatus::parse(&e.status);
            step.zip(status)
                .map(|(step, status)| StepEvent { step, status })
                .ok_or_else(|| corrupt("step log", e.purchase_id))
        })
        .collect::<ServiceResult<Vec<_>>>()?;
    replay(entries).map_err(|e| ServiceError::Internal(e.to_string()))
}

async fn load_row(store: &SagaStore, id: u64) -> ServiceResult<Option<(SagaRow, Vec<EventRow>)>> {
    let Some(row) = store.repo().by_id(id).await? else {
        return Ok(None);
    };
    let log = store.repo().log_of(id).await?;
    Ok(Some((row, log)))
}

async fn load_one(store: &SagaStore, id: u64) -> ServiceResult<Option<(Purchase, SagaState)>> {
    match load_row(store, id).await? {
        Some((row, log)) => Ok(Some((purchase_of(&row)?, state_of(&log)?))),
        None => Ok(None),
    }
}

/// Every unfinished saga in the store with the state its log replays to.
pub async fn load_unfinished(store: &SagaStore) -> ServiceResult<Vec<(Purchase, SagaState)>> {
    let mut found = Vec::new();
    let mut after = 0u64;
    loop {
        let page = store.repo().unfinished(after, RESUME_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.purchase_id as u64;
        let ids: Vec<u64> = page.iter().map(|r| r.purchase_id as u64).collect();
        let logs = store.repo().logs_of(&ids).await?;
        for row in &page {
            let start = logs.partition_point(|e| e.purchase_id < row.purchase_id);
            let end = logs.partition_point(|e| e.purchase_id <= row.purchase_id);
            let state = state_of(&logs[start..end])?;
            if !state.is_terminal() {
                found.push((purchase_of(row)?, state));
            }
        }
    }
    Ok(found)
}
