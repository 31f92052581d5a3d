//! The saga store: one row per saga (its purchase, state, version and retry budget), the
//! append-only step log that is the truth the state is replayed from, and the partitions that
//! number the log and fence every write with their owner's epoch.
//!
//! Rows are decoded here, once, into domain types; a saga whose row or log does not decode or
//! replay comes back quarantined, with the reason.

use std::collections::BTreeMap;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::ids::{from_column, saturating, storable, to_column};
use super::reusable::Reusable;
use super::schema::{partitions, saga_events, sagas, store_meta};
use super::{DbError, DbPool};
use crate::backend_queries;
use crate::clock::Clock;
use crate::domain::ids::{CustomerId, PurchaseId, first_id_at};
use crate::domain::partition::{self, PartitionId};
use crate::domain::purchase::{Currency, Purchase, PurchaseResult, Step, StepEvent, StepStatus};
use crate::domain::saga::{Retry, Saga, SagaState, replay};
use crate::domain::trace::TraceContext;

/// A saga as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = sagas)]
struct SagaRow {
    purchase_id: PurchaseId,
    partition_id: i32,
    customer_id: CustomerId,
    items: String,
    currency_code: String,
    amount: i64,
    state: String,
    finished: bool,
    version: i64,
    attempts: i32,
    retry_since: i64,
    quarantine: Option<String>,
    retry_requested: bool,
    created_at: i64,
    updated_at: i64,
    log_pruned: bool,
    trace_context: Option<String>,
}

/// One step-log entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = saga_events)]
struct EventRow {
    partition_id: i32,
    event_id: i64,
    purchase_id: PurchaseId,
    saga_seq: i32,
    customer_id: CustomerId,
    step: String,
    status: String,
    created_at: i64,
}

/// Appends step-log entries, in as few statements as the backend allows.
trait EventLog {
    async fn append(&mut self, rows: &[EventRow]) -> Result<(), DbError>;
}

/// Most entries in one multi-row INSERT (a batch's worth; bigger batches take several).
const APPEND_CHUNK: usize = 256;

impl EventLog for diesel_async::AsyncMysqlConnection {
    /// Multi-row INSERTs: one round trip for a whole group commit's entries.
    async fn append(&mut self, rows: &[EventRow]) -> Result<(), DbError> {
        for chunk in rows.chunks(APPEND_CHUNK) {
            diesel::insert_into(saga_events::table)
                .values(chunk)
                .execute(self)
                .await?;
        }
        Ok(())
    }
}

impl EventLog for super::pool::SqliteConn {
    /// One reused statement per entry: SQLite runs in-process, and diesel-async's SQLite
    /// wrapper has no multi-row INSERT.
    async fn append(&mut self, rows: &[EventRow]) -> Result<(), DbError> {
        for row in rows {
            Reusable(diesel::insert_into(saga_events::table).values(row))
                .execute(self)
                .await?;
        }
        Ok(())
    }
}

/// Inserts saga rows, in as few statements as the backend allows.
trait SagaRows {
    /// Saga rows moving on in one batch from which one UPDATE writes them all (`None`:
    /// never).
    const TOGETHER_FROM: Option<usize>;

    async fn insert_rows(&mut self, rows: &[SagaRow]) -> Result<(), DbError>;
}

impl SagaRows for diesel_async::AsyncMysqlConnection {
    /// Below it, one statement each costs fewer round trips than the UPDATE and its savepoint.
    const TOGETHER_FROM: Option<usize> = Some(8);

    /// Multi-row INSERTs: the purchases an api node accepted together cost one round trip.
    async fn insert_rows(&mut self, rows: &[SagaRow]) -> Result<(), DbError> {
        for chunk in rows.chunks(APPEND_CHUNK) {
            diesel::insert_into(sagas::table)
                .values(chunk)
                .execute(self)
                .await?;
        }
        Ok(())
    }
}

impl SagaRows for super::pool::SqliteConn {
    /// Never: in-process, a prepared single-row UPDATE per saga costs no round trip, while
    /// the UPDATE of a whole batch has a new shape (its row count) to parse and plan each
    /// time; that parsing was a fifth of the writer's CPU.
    const TOGETHER_FROM: Option<usize> = None;

    /// One reused statement per row, in one transaction.
    async fn insert_rows(&mut self, rows: &[SagaRow]) -> Result<(), DbError> {
        self.transaction::<_, DbError, _>(async |c| {
            for row in rows {
                Reusable(diesel::insert_into(sagas::table).values(row))
                    .execute(c)
                    .await?;
            }
            Ok(())
        })
        .await
    }
}

/// One partition's row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = partitions)]
struct PartitionRow {
    partition_id: i32,
    owner_node: i32,
    epoch: i64,
    lease_expires_at: i64,
    next_seq: i64,
    pruned_up_to: i64,
}

/// A saga transition to commit: the saga's new position and the log entries it appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaWrite {
    /// The purchase; a new saga's row is built from it.
    pub purchase: std::sync::Arc<Purchase>,
    pub partition: PartitionId,
    /// The version the saga is at before this transition (0: a new saga).
    pub from_version: u64,
    /// The saga's row is stored at `from_version`, so the write moves it on with a versioned
    /// UPDATE. False only for a new saga whose first write inserts its row (embedded mode's
    /// accept); an api node in a cluster stores the row first, at version 0.
    pub stored: bool,
    /// How many log entries the saga has before this transition.
    pub log_len: u32,
    pub saga: Saga,
    pub events: Vec<StepEvent>,
    /// The span that made the transition: a new saga stores it as the trace its spans
    /// continue; the commit's span links to it and its results are delivered in it.
    pub trace: TraceContext,
}

/// What became of one write of a group commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; its log entries got these ids.
    Committed(Vec<PurchaseResult>),
    /// The saga was already at the target version: an earlier attempt of this very write
    /// committed, and only its acknowledgement was lost.
    AlreadyApplied,
    /// The saga is at another version: this writer's view of it is stale.
    Conflict,
    /// This node no longer owns the saga's partition.
    LostPartition,
    /// This write alone failed (the rest of its batch committed without it).
    Failed(String),
}

/// A partition this node writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The epoch it holds the partition at (every commit is fenced on it).
    pub epoch: u64,
    /// The partition's next event id, as this node last committed it: while the fencing
    /// UPDATE succeeds no one else has moved it, so the commit need not read it back.
    /// `None` after a commit whose outcome is unknown: the next commit reads it.
    pub next_seq: Option<i64>,
}

/// One partition's share of a commit.
#[derive(Debug, Clone, Copy)]
struct Group {
    partition: PartitionId,
    /// Entries the commit appends to the partition's log.
    wanted: i64,
    held: Held,
}

/// The partitions this node writes for.
pub type Ownership = BTreeMap<PartitionId, Held>;

/// A step-log entry with what the customer sees of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedStep {
    pub event: StepEvent,
    /// Unix seconds of its commit.
    pub timestamp: i64,
}

/// A saga read back from the store, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSaga {
    pub purchase: Purchase,
    pub partition: PartitionId,
    pub version: u64,
    /// Entries in its log (decodable or not).
    pub log_len: u32,
    /// Its log, as far as the entries decode.
    pub steps: Vec<LoggedStep>,
    /// Where it stands, or why it is quarantined (its log does not replay, a field does not
    /// decode, or it was quarantined earlier and not released).
    pub status: Result<Saga, String>,
    /// The trace its spans continue (none when it was accepted without trace export).
    pub trace: TraceContext,
}

/// A quarantined saga, for `sagashop sagas quarantined`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub purchase_id: PurchaseId,
    pub customer_id: CustomerId,
    pub reason: String,
    pub updated_at_ms: i64,
}

fn decode(row: SagaRow, log: &[EventRow]) -> StoredSaga {
    let mut problems = Vec::new();
    let items = serde_json::from_str(&row.items).unwrap_or_else(|e| {
        problems.push(format!("items do not decode: {e}"));
        Vec::new()
    });
    let currency = Currency::parse(&row.currency_code).unwrap_or_else(|| {
        problems.push(format!("unknown currency {:?}", row.currency_code));
        Currency::Nt
    });
    let mut steps = Vec::with_capacity(log.len());
    for e in log {
        match (Step::parse(&e.step), StepStatus::parse(&e.status)) {
            (Some(step), Some(status)) => steps.push(LoggedStep {
                event: StepEvent { step, status },
                timestamp: e.created_at / 1000,
            }),
            _ => problems.push(format!(
                "log entry {} ({} {}) does not decode",
                e.saga_seq, e.step, e.status
            )),
        }
    }
    let status = if let Some(reason) = row.quarantine.clone() {
        Err(reason)
    } else if !problems.is_empty() {
        Err(problems.join("; "))
    } else if row.log_pruned {
        // A finished saga past its retention: its log is gone, its row tells how it ended.
        SagaState::parse(&row.state)
            .filter(|state| state.is_terminal())
            .map(Saga::at)
            .ok_or_else(|| format!("pruned saga in state {:?}", row.state))
    } else {
        let entries: Vec<StepEvent> = steps.iter().map(|s| s.event).collect();
        match replay(&entries) {
            Ok(state) => {
                // The row keeps the retry budget spent in the state the log replays to.
                let retry = if SagaState::parse(&row.state) == Some(state) {
                    Retry {
                        attempts: row.attempts.max(0) as u32,
                        since_ms: row.retry_since,
                    }
                } else {
                    Retry::default()
                };
                Ok(Saga { state, retry })
            }
            Err(e) => Err(e.to_string()),
        }
    };
    StoredSaga {
        purchase: Purchase {
            purchase_id: row.purchase_id,
            customer_id: row.customer_id,
            items,
            currency,
            amount: row.amount,
        },
        partition: PartitionId(row.partition_id.max(0) as u32),
        version: from_column(row.version).unwrap_or(0),
        log_len: log.len() as u32,
        steps,
        status,
        trace: TraceContext::from_column(row.trace_context.as_deref()),
    }
}

fn new_row(w: &SagaWrite, version: i64, now: i64) -> SagaRow {
    let p = &w.purchase;
    SagaRow {
        purchase_id: p.purchase_id,
        partition_id: w.partition.0 as i32,
        customer_id: p.customer_id,
        items: serde_json::to_string(&p.items).expect("items serialize"),
        currency_code: p.currency.code().to_owned(),
        amount: p.amount,
        state: w.saga.state.to_string(),
        finished: w.saga.state.is_terminal(),
        version,
        attempts: w.saga.retry.attempts as i32,
        retry_since: w.saga.retry.since_ms,
        quarantine: None,
        retry_requested: false,
        created_at: now,
        updated_at: now,
        log_pruned: false,
        trace_context: w.trace.to_column(),
    }
}

/// The row of a saga accepted but not started: Pending, version 0, no log entries yet.
fn pending_row(
    purchase: &Purchase,
    partition: PartitionId,
    trace: &TraceContext,
    now: i64,
) -> SagaRow {
    SagaRow {
        purchase_id: purchase.purchase_id,
        partition_id: partition.0 as i32,
        customer_id: purchase.customer_id,
        items: serde_json::to_string(&purchase.items).expect("items serialize"),
        currency_code: purchase.currency.code().to_owned(),
        amount: purchase.amount,
        state: SagaState::Pending.to_string(),
        finished: false,
        version: 0,
        attempts: 0,
        retry_since: 0,
        quarantine: None,
        retry_requested: false,
        created_at: now,
        updated_at: now,
        log_pruned: false,
        trace_context: trace.to_column(),
    }
}

/// Settings a store is created with; a node whose settings differ must not open it.
const META_COUNT: &str = "partition_count";
const META_HASH: &str = "partition_hash";

backend_queries! {
    /// One transaction: per partition (ascending), fence and number, write the rows, append
    /// the log entries of the rows that were written.
    async fn commit(conn: &mut Conn, owner: i32, owned: &Ownership, writes: &[SagaWrite], now: i64) -> Result<(Vec<WriteOutcome>, Vec<(PartitionId, i64)>), DbError> {
        /// Writes one saga's row (insert or versioned update); `Ok(None)` when it was applied.
        async fn write_row(c: &mut Conn, w: &SagaWrite, now: i64) -> Result<Option<WriteOutcome>, DbError> {
            let id = w.purchase.purchase_id;
            let from = to_column(w.from_version)?;
            let written = if !w.stored && w.from_version == 0 {
                match Reusable(diesel::insert_into(sagas::table).values(new_row(w, from + 1, now))).execute(c).await {
                    Ok(n) => n,
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => 0,
                    Err(e) => return Err(e.into()),
                }
            } else {
                Reusable(diesel::update(sagas::table.find(id).filter(sagas::version.eq(from)))
                    .set((
                        sagas::state.eq(w.saga.state.to_string()),
                        sagas::finished.eq(w.saga.state.is_terminal()),
                        sagas::version.eq(from + 1),
                        sagas::attempts.eq(w.saga.retry.attempts as i32),
                        sagas::retry_since.eq(w.saga.retry.since_ms),
                        sagas::updated_at.eq(now),
                    )))
                    .execute(c)
                    .await?
            };
            if written == 1 {
                return Ok(None);
            }
            // Applied already when the saga is exactly where this write takes it: same version,
            // same state. Any other position means another writer's view won.
            let found: Option<(i64, String)> = sagas::table
                .find(id)
                .select((sagas::version, sagas::state))
                .first(c)
                .await
                .optional()?;
            Ok(Some(if found == Some((from + 1, w.saga.state.to_string())) {
                WriteOutcome::AlreadyApplied
            } else {
                WriteOutcome::Conflict
            }))
        }

        /// Moves many saga rows one version on in one UPDATE, each only from the version its
        /// write expects. True when every row moved; otherwise the caller rolls it back and
        /// writes them one by one, to tell each write's outcome.
        async fn update_together(c: &mut Conn, ws: &[&SagaWrite], now: i64) -> Result<bool, DbError> {
            let cases = " WHEN ? THEN ?".repeat(ws.len());
            let sql = format!(
                "UPDATE sagas SET state = CASE purchase_id{cases} END, \
                 finished = CASE purchase_id{cases} END, \
                 attempts = CASE purchase_id{cases} END, \
                 retry_since = CASE purchase_id{cases} END, \
                 version = version + 1, updated_at = ? WHERE {}",
                vec!["(purchase_id = ? AND version = ?)"; ws.len()].join(" OR ")
            );
            let mut query = diesel::sql_query(sql).into_boxed();
            for w in ws {
                query = query.bind::<BigInt, _>(w.purchase.purchase_id).bind::<Text, _>(w.saga.state.to_string());
            }
            for w in ws {
                query = query.bind::<BigInt, _>(w.purchase.purchase_id).bind::<Bool, _>(w.saga.state.is_terminal());
            }
            for w in ws {
                query = query.bind::<BigInt, _>(w.purchase.purchase_id).bind::<Integer, _>(w.saga.retry.attempts as i32);
            }
            for w in ws {
                query = query.bind::<BigInt, _>(w.purchase.purchase_id).bind::<BigInt, _>(w.saga.retry.since_ms);
            }
            query = query.bind::<BigInt, _>(now);
            for w in ws {
                query = query.bind::<BigInt, _>(w.purchase.purchase_id).bind::<BigInt, _>(to_column(w.from_version)?);
            }
            Ok(query.execute(c).await? == ws.len())
        }

        /// Fences and numbers a batch's partitions in one UPDATE (rows locked in key order):
        /// each partition's `next_seq` moves by its entries, where this node still holds it at
        /// its epoch. Answers how many partitions it still holds.
        async fn fence(conn: &mut Conn, owner: i32, groups: &[Group]) -> Result<usize, DbError> {
            if groups.is_empty() {
                return Ok(0);
            }
            let mut sql = String::from("UPDATE partitions SET next_seq = next_seq + CASE partition_id");
            sql.push_str(&" WHEN ? THEN ?".repeat(groups.len()));
            sql.push_str(" END WHERE owner_node = ? AND (");
            sql.push_str(&vec!["(partition_id = ? AND epoch = ?)"; groups.len()].join(" OR "));
            sql.push(')');
            let mut query = diesel::sql_query(sql).into_boxed();
            for g in groups {
                query = query.bind::<Integer, _>(g.partition.0 as i32).bind::<BigInt, _>(g.wanted);
            }
            query = query.bind::<Integer, _>(owner);
            for g in groups {
                query = query.bind::<Integer, _>(g.partition.0 as i32).bind::<BigInt, _>(to_column(g.held.epoch)?);
            }
            Ok(Reusable(query).execute(conn).await?)
        }

        /// After a fence that did not take every partition: those this node still holds (the
        /// fence moved them; their new end when the cached sequence is known).
        async fn still_held(conn: &mut Conn, owner: i32, groups: &[Group]) -> Result<BTreeMap<PartitionId, Option<i64>>, DbError> {
            let ids: Vec<i32> = groups.iter().map(|g| g.partition.0 as i32).collect();
            let rows: Vec<(i32, i32, i64)> = partitions::table
                .filter(partitions::partition_id.eq_any(&ids))
                .select((partitions::partition_id, partitions::owner_node, partitions::epoch))
                .load(conn)
                .await?;
            let mut held = BTreeMap::new();
            for g in groups {
                let epoch = to_column(g.held.epoch)?;
                if rows.contains(&(g.partition.0 as i32, owner, epoch)) {
                    held.insert(g.partition, g.held.next_seq.map(|n| n + g.wanted));
                }
            }
            Ok(held)
        }

        conn.transaction::<_, DbError, _>(async |c| {
            let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; writes.len()];
            let mut by_partition: BTreeMap<PartitionId, Vec<usize>> = BTreeMap::new();
            for (i, w) in writes.iter().enumerate() {
                by_partition.entry(w.partition).or_default().push(i);
            }
            let mut rows = Vec::new();
            let mut next_seqs = Vec::new();
            // Fence and number every owned partition of the batch in one statement.
            let groups: Vec<Group> = by_partition
                .iter()
                .filter_map(|(p, members)| {
                    let held = *owned.get(p)?;
                    let wanted = members.iter().map(|&i| writes[i].events.len() as i64).sum();
                    Some(Group { partition: *p, wanted, held })
                })
                .collect();
            let fenced = fence(c, owner, &groups).await?;
            let fenced: BTreeMap<PartitionId, Option<i64>> = if fenced == groups.len() {
                groups.iter().map(|g| (g.partition, g.held.next_seq.map(|n| n + g.wanted))).collect()
            } else {
                still_held(c, owner, &groups).await?
            };
            let unknown: Vec<i32> = fenced
                .iter()
                .filter(|(_, end)| end.is_none())
                .map(|(p, _)| p.0 as i32)
                .collect();
            let read: BTreeMap<i32, i64> = if unknown.is_empty() {
                BTreeMap::new()
            } else {
                partitions::table
                    .filter(partitions::partition_id.eq_any(&unknown))
                    .select((partitions::partition_id, partitions::next_seq))
                    .load::<(i32, i64)>(c)
                    .await?
                    .into_iter()
                    .collect()
            };
            // Saga rows moving on from a stored version: one UPDATE for many, inside a
            // savepoint, when a batch has enough of them to pay for it.
            let movers: Vec<usize> = (0..writes.len())
                .filter(|&i| (writes[i].stored || writes[i].from_version > 0) && fenced.contains_key(&writes[i].partition))
                .collect();
            let mut moved = vec![false; writes.len()];
            if <Conn as SagaRows>::TOGETHER_FROM.is_some_and(|from| movers.len() >= from) {
                let ws: Vec<&SagaWrite> = movers.iter().map(|&i| &writes[i]).collect();
                let together = c
                    .transaction::<_, DbError, _>(async |s| {
                        if update_together(s, &ws, now).await? {
                            Ok(())
                        } else {
                            Err(DbError::Rejected("a row was not at its version".into()))
                        }
                    })
                    .await;
                if together.is_ok() {
                    for &i in &movers {
                        moved[i] = true;
                    }
                }
            }
            for (partition, members) in by_partition {
                let wanted: i64 = members.iter().map(|&i| writes[i].events.len() as i64).sum();
                let end = match fenced.get(&partition) {
                    Some(Some(end)) => *end,
                    Some(None) => read[&(partition.0 as i32)],
                    None => {
                        for i in members {
                            outcomes[i] = Some(WriteOutcome::LostPartition);
                        }
                        continue;
                    }
                };
                let start = end - wanted;
                let mut seq = start;
                for i in members {
                    let w = &writes[i];
                    let written = if moved[i] { None } else { write_row(c, w, now).await? };
                    if let Some(outcome) = written {
                        outcomes[i] = Some(outcome);
                        continue;
                    }
                    let mut results = Vec::with_capacity(w.events.len());
                    for (n, event) in w.events.iter().enumerate() {
                        rows.push(EventRow {
                            partition_id: partition.0 as i32,
                            event_id: seq,
                            purchase_id: w.purchase.purchase_id,
                            saga_seq: (w.log_len as usize + n + 1) as i32,
                            customer_id: w.purchase.customer_id,
                            step: event.step.as_str().to_owned(),
                            status: event.status.as_str().to_owned(),
                            created_at: now,
                        });
                        results.push(PurchaseResult {
                            event_id: from_column(seq)?,
                            purchase_id: w.purchase.purchase_id,
                            customer_id: w.purchase.customer_id,
                            event: *event,
                            timestamp: now / 1000,
                        });
                        seq += 1;
                    }
                    outcomes[i] = Some(WriteOutcome::Committed(results));
                }
                if seq != end {
                    // Some writes were not applied: give their ids back.
                    Reusable(diesel::update(partitions::table.find(partition.0 as i32))
                        .set(partitions::next_seq.eq(seq)))
                        .execute(c)
                        .await?;
                }
                next_seqs.push((partition, seq));
            }
            c.append(&rows).await?;
            let outcomes = outcomes.into_iter().map(|o| o.expect("every write decided")).collect();
            Ok((outcomes, next_seqs))
        })
        .await
    }

    async fn rows_of(conn: &mut Conn, ids: &[PurchaseId]) -> Result<Vec<SagaRow>, DbError> {
        Ok(sagas::table
            .filter(sagas::purchase_id.eq_any(ids))
            .order(sagas::purchase_id)
            .select(SagaRow::as_select())
            .load(conn)
            .await?)
    }

    async fn logs_of(conn: &mut Conn, ids: &[PurchaseId]) -> Result<Vec<EventRow>, DbError> {
        Ok(saga_events::table
            .filter(saga_events::purchase_id.eq_any(ids))
            .order((saga_events::purchase_id, saga_events::saga_seq))
            .select(EventRow::as_select())
            .load(conn)
            .await?)
    }

    async fn unfinished_ids(conn: &mut Conn, after: PurchaseId, limit: i64) -> Result<Vec<PurchaseId>, DbError> {
        // `log_pruned = false` holds for every unfinished saga (only finished ones are
        // pruned); saying so lets the database walk `sagas_prunable` in id order from
        // `after`, where it would otherwise sort every unfinished saga for each page (a
        // restart with a million in flight took 200 s to load them).
        Ok(sagas::table
            .filter(sagas::finished.eq(false))
            .filter(sagas::log_pruned.eq(false))
            .filter(sagas::purchase_id.gt(after))
            .filter(sagas::quarantine.is_null())
            .order(sagas::purchase_id)
            .limit(limit)
            .select(sagas::purchase_id)
            .load(conn)
            .await?)
    }

    async fn unfinished_ids_in(conn: &mut Conn, partitions: Vec<i32>, after: PurchaseId, limit: i64) -> Result<Vec<PurchaseId>, DbError> {
        // In id order through `sagas_prunable`, as `unfinished_ids`.
        Ok(sagas::table
            .filter(sagas::finished.eq(false))
            .filter(sagas::log_pruned.eq(false))
            .filter(sagas::partition_id.eq_any(partitions))
            .filter(sagas::purchase_id.gt(after))
            .filter(sagas::quarantine.is_null())
            .order(sagas::purchase_id)
            .limit(limit)
            .select(sagas::purchase_id)
            .load(conn)
            .await?)
    }

    async fn insert_pending(conn: &mut Conn, rows: Vec<SagaRow>) -> Result<(), DbError> {
        conn.insert_rows(&rows).await
    }

    /// Served by `sagas_unfinished` (finished, partition_id, purchase_id): an index on the
    /// version would be rewritten by every transition, and the unfinished sagas of a node's
    /// partitions are few.
    async fn pending_ids(conn: &mut Conn, partitions: &[i32], limit: i64) -> Result<Vec<PurchaseId>, DbError> {
        Ok(sagas::table
            .filter(sagas::finished.eq(false))
            .filter(sagas::partition_id.eq_any(partitions))
            .filter(sagas::version.eq(0))
            .filter(sagas::quarantine.is_null())
            .order(sagas::purchase_id)
            .limit(limit)
            .select(sagas::purchase_id)
            .load(conn)
            .await?)
    }

    async fn released_ids(conn: &mut Conn) -> Result<Vec<PurchaseId>, DbError> {
        Ok(sagas::table
            .filter(sagas::retry_requested.eq(true))
            .select(sagas::purchase_id)
            .load(conn)
            .await?)
    }

    async fn customer_events_after(conn: &mut Conn, partition: i32, customer_id: CustomerId, after: i64, limit: i64) -> Result<Vec<EventRow>, DbError> {
        // Through the log's key: the partition's entries after `after`, the customer's kept.
        Ok(saga_events::table
            .filter(saga_events::partition_id.eq(partition))
            .filter(saga_events::customer_id.eq(customer_id))
            .filter(saga_events::event_id.gt(after))
            .order(saga_events::event_id)
            .limit(limit)
            .select(EventRow::as_select())
            .load(conn)
            .await?)
    }

    async fn partition_events(conn: &mut Conn, partition: i32, after: i64, upto: i64, limit: i64) -> Result<Vec<EventRow>, DbError> {
        Ok(saga_events::table
            .filter(saga_events::partition_id.eq(partition))
            .filter(saga_events::event_id.gt(after))
            .filter(saga_events::event_id.le(upto))
            .order(saga_events::event_id)
            .limit(limit)
            .select(EventRow::as_select())
            .load(conn)
            .await?)
    }

    async fn partition_tops(conn: &mut Conn, ids: Vec<i32>) -> Result<Vec<(i32, i64)>, DbError> {
        Ok(partitions::table
            .filter(partitions::partition_id.eq_any(ids))
            .order(partitions::partition_id)
            .select((partitions::partition_id, partitions::next_seq))
            .load(conn)
            .await?)
    }

    async fn set_quarantine(conn: &mut Conn, id: PurchaseId, reason: Option<String>, retry_requested: bool, now: i64) -> Result<usize, DbError> {
        Ok(Reusable(diesel::update(sagas::table.find(id))
            .set((
                sagas::quarantine.eq(reason),
                sagas::retry_requested.eq(retry_requested),
                sagas::updated_at.eq(now),
            )))
            .execute(conn)
            .await?)
    }

    async fn release(conn: &mut Conn, id: PurchaseId, now: i64) -> Result<usize, DbError> {
        Ok(Reusable(diesel::update(sagas::table.find(id).filter(sagas::quarantine.is_not_null()))
            .set((
                sagas::quarantine.eq(None::<String>),
                sagas::retry_requested.eq(true),
                sagas::updated_at.eq(now),
            )))
            .execute(conn)
            .await?)
    }

    async fn prune(conn: &mut Conn, partitions: Vec<i32>, cutoff: i64, limit: i64) -> Result<usize, DbError> {
        conn.transaction::<_, DbError, _>(async |c| {
            let ids: Vec<PurchaseId> = sagas::table
                .filter(sagas::finished.eq(true))
                .filter(sagas::partition_id.eq_any(&partitions))
                .filter(sagas::log_pruned.eq(false))
                .filter(sagas::purchase_id.lt(PurchaseId(first_id_at(cutoff))))
                .filter(sagas::updated_at.lt(cutoff))
                .order(sagas::purchase_id)
                .limit(limit)
                .select(sagas::purchase_id)
                .load(c)
                .await?;
            if ids.is_empty() {
                return Ok(0);
            }
            let mut tops: Vec<(i32, Option<i64>)> = saga_events::table
                .filter(saga_events::purchase_id.eq_any(&ids))
                .group_by(saga_events::partition_id)
                .select((saga_events::partition_id, diesel::dsl::max(saga_events::event_id)))
                .load(c)
                .await?;
            tops.sort();
            diesel::delete(saga_events::table.filter(saga_events::purchase_id.eq_any(&ids)))
                .execute(c)
                .await?;
            diesel::update(sagas::table.filter(sagas::purchase_id.eq_any(&ids)))
                .set(sagas::log_pruned.eq(true))
                .execute(c)
                .await?;
            for (partition, top) in tops {
                let Some(top) = top else { continue };
                Reusable(diesel::update(
                    partitions::table
                        .find(partition)
                        .filter(partitions::pruned_up_to.lt(top)),
                )
                .set(partitions::pruned_up_to.eq(top)))
                .execute(c)
                .await?;
            }
            Ok(ids.len())
        })
        .await
    }

    async fn pruned_up_to(conn: &mut Conn, partition: i32) -> Result<Option<i64>, DbError> {
        Ok(partitions::table
            .find(partition)
            .select(partitions::pruned_up_to)
            .first(conn)
            .await
            .optional()?)
    }

    async fn quarantined(conn: &mut Conn) -> Result<Vec<(PurchaseId, CustomerId, Option<String>, i64)>, DbError> {
        Ok(sagas::table
            .filter(sagas::quarantine.is_not_null())
            .order(sagas::purchase_id)
            .select((sagas::purchase_id, sagas::customer_id, sagas::quarantine, sagas::updated_at))
            .load(conn)
            .await?)
    }

    /// Creates the partitions of a new store, or checks an existing store's settings; assigns
    /// rows carried over from the single-sequence store.
    async fn prepare(conn: &mut Conn, count: u32) -> Result<(), DbError> {
        conn.transaction::<_, DbError, _>(async |c| {
            let meta: Vec<(String, String)> = store_meta::table
                .select((store_meta::name, store_meta::value))
                .load(c)
                .await?;
            let setting = |name: &str| meta.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            match (setting(META_COUNT), setting(META_HASH)) {
                (None, None) => {
                    let old_max: Option<i64> = saga_events::table
                        .select(diesel::dsl::max(saga_events::event_id))
                        .first(c)
                        .await?;
                    for (name, value) in [(META_COUNT, count.to_string()), (META_HASH, partition::HASH.to_owned())] {
                        Reusable(diesel::insert_into(store_meta::table)
                            .values((store_meta::name.eq(name), store_meta::value.eq(value))))
                            .execute(c)
                            .await?;
                    }
                    for p in 0..count as i32 {
                        let row = PartitionRow {
                            partition_id: p,
                            owner_node: 0,
                            epoch: 0,
                            lease_expires_at: 0,
                            next_seq: old_max.unwrap_or(0) + 1,
                            pruned_up_to: 0,
                        };
                        Reusable(diesel::insert_into(partitions::table).values(row)).execute(c).await?;
                    }
                }
                (Some(stored), Some(hash)) if stored == count.to_string() && hash == partition::HASH => {}
                (stored, hash) => {
                    return Err(DbError::Setup(format!(
                        "the saga store has {} partitions placed by {}, this node is set to {count} placed by {}; \
                         a store's partitioning is fixed when it is created",
                        stored.as_deref().unwrap_or("?"),
                        hash.as_deref().unwrap_or("?"),
                        partition::HASH,
                    )));
                }
            }
            // Rows from before partitions: place each customer's sagas and log entries.
            let customers: Vec<CustomerId> = sagas::table
                .filter(sagas::partition_id.lt(0))
                .select(sagas::customer_id)
                .distinct()
                .load(c)
                .await?;
            for customer in customers {
                let p = partition::of_customer(customer, count).0 as i32;
                Reusable(diesel::update(sagas::table.filter(sagas::customer_id.eq(customer)))
                    .set(sagas::partition_id.eq(p)))
                    .execute(c)
                    .await?;
                Reusable(diesel::update(saga_events::table.filter(saga_events::customer_id.eq(customer)))
                    .set(saga_events::partition_id.eq(p)))
                    .execute(c)
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Prepares the store ([`prepare`]) and takes every partition for `owner`.
    async fn own_all(conn: &mut Conn, count: u32, owner: i32) -> Result<Vec<(i32, i64, i64)>, DbError> {
        prepare(conn, count).await?;
        conn.transaction::<_, DbError, _>(async |c| {
            Reusable(diesel::update(partitions::table)
                .set((
                    partitions::owner_node.eq(owner),
                    partitions::epoch.eq(partitions::epoch + 1),
                    partitions::lease_expires_at.eq(i64::MAX),
                )))
                .execute(c)
                .await?;
            Ok(partitions::table
                .order(partitions::partition_id)
                .select((partitions::partition_id, partitions::epoch, partitions::next_seq))
                .load(c)
                .await?)
        })
        .await
    }
}

/// Repository of the saga database.
#[derive(Clone)]
pub struct Sagas {
    pool: DbPool,
    clock: Clock,
}

/// What the customer sees of log entries; entries that do not decode are skipped (their
/// saga is quarantined anyway).
fn results_of(rows: Vec<EventRow>) -> Vec<PurchaseResult> {
    rows.into_iter()
        .filter_map(|e| {
            let event = StepEvent {
                step: Step::parse(&e.step)?,
                status: StepStatus::parse(&e.status)?,
            };
            Some(PurchaseResult {
                event_id: from_column(e.event_id).ok()?,
                purchase_id: e.purchase_id,
                customer_id: e.customer_id,
                event,
                timestamp: e.created_at / 1000,
            })
        })
        .collect()
}

fn group_logs(rows: Vec<SagaRow>, logs: Vec<EventRow>) -> Vec<StoredSaga> {
    rows.into_iter()
        .map(|row| {
            let start = logs.partition_point(|e| e.purchase_id < row.purchase_id);
            let end = logs.partition_point(|e| e.purchase_id <= row.purchase_id);
            decode(row, &logs[start..end])
        })
        .collect()
}

impl Sagas {
    /// Repository over an opened saga database, stamping rows with `clock`'s time.
    pub fn new(pool: DbPool, clock: Clock) -> Self {
        Self { pool, clock }
    }

    /// Prepares the store's `count` partitions (creating them, or checking an existing
    /// store's settings) and takes every one of them for `node`: the embedded case, where one
    /// node owns the whole store. Answers what the node now owns.
    pub async fn own_all(&self, count: u32, node: u16) -> Result<Ownership, DbError> {
        let owned = own_all(&self.pool, count, i32::from(node)).await?;
        owned
            .into_iter()
            .map(|(p, epoch, next_seq)| {
                let held = Held {
                    epoch: from_column(epoch)?,
                    next_seq: Some(next_seq),
                };
                Ok((PartitionId(p as u32), held))
            })
            .collect()
    }

    /// Prepares the store's `count` partitions (creating them, or checking an existing
    /// store's settings) without taking any: in a cluster, orchestrators lease them.
    /// Orchestrators starting together race to create the partitions: the losers' inserts
    /// fail (duplicate or deadlock) and they check the winner's settings instead.
    pub async fn prepare(&self, count: u32) -> Result<(), DbError> {
        let mut tries = 0;
        loop {
            match prepare(&self.pool, count).await {
                Err(DbError::Duplicate | DbError::Query(_)) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * tries)).await;
                }
                done => return done,
            }
        }
    }

    /// Commits the transitions of many sagas in one transaction. Each write gets its own
    /// outcome; an `Err` means the transaction as a whole failed (nothing was written).
    pub async fn commit(
        &self,
        node: u16,
        owned: &mut Ownership,
        writes: &[SagaWrite],
    ) -> Result<Vec<WriteOutcome>, DbError> {
        let now = self.clock.now_ms();
        match commit(&self.pool, i32::from(node), owned, writes, now).await {
            Ok((outcomes, next_seqs)) => {
                for (partition, next) in next_seqs {
                    if let Some(held) = owned.get_mut(&partition) {
                        held.next_seq = Some(next);
                    }
                }
                Ok(outcomes)
            }
            Err(e) => {
                // The transaction may have committed with only its answer lost: read each
                // partition's sequence again rather than trust the cached one.
                for w in writes {
                    if let Some(held) = owned.get_mut(&w.partition) {
                        held.next_seq = None;
                    }
                }
                Err(e)
            }
        }
    }

    /// Several sagas with their logs, in id order (missing ids are left out).
    pub async fn load(&self, ids: &[PurchaseId]) -> Result<Vec<StoredSaga>, DbError> {
        let ids: Vec<PurchaseId> = ids.iter().copied().filter(|&id| storable(id)).collect();
        let rows = rows_of(&self.pool, &ids).await?;
        let logs = logs_of(&self.pool, &ids).await?;
        Ok(group_logs(rows, logs))
    }

    /// One saga with its log.
    pub async fn by_id(&self, purchase_id: PurchaseId) -> Result<Option<StoredSaga>, DbError> {
        Ok(self.load(&[purchase_id]).await?.pop())
    }

    /// A page of unfinished, unquarantined sagas with ids above `after`, in id order.
    pub async fn unfinished(
        &self,
        after: PurchaseId,
        limit: u64,
    ) -> Result<Vec<StoredSaga>, DbError> {
        let ids = unfinished_ids(&self.pool, after, saturating(limit)).await?;
        self.load(&ids).await
    }

    /// A page of unfinished, unquarantined sagas of `partitions` with ids above `after`, in
    /// id order: what an orchestrator resumes when it gains those partitions.
    pub async fn unfinished_in(
        &self,
        partitions: &[PartitionId],
        after: PurchaseId,
        limit: u64,
    ) -> Result<Vec<StoredSaga>, DbError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let partitions = partitions.iter().map(|p| p.0 as i32).collect();
        let ids = unfinished_ids_in(&self.pool, partitions, after, saturating(limit)).await?;
        self.load(&ids).await
    }

    /// Stores a purchase's saga accepted but not started (Pending, version 0, no log
    /// entries), with the trace its spans continue: an api node in a cluster accepts this way,
    /// whether or not its partition has an owner now; the owner starts it (its first
    /// transition moves the row from version 0). The only write to the store that is not
    /// fenced: it appends nothing and numbers nothing.
    pub async fn insert_pending(
        &self,
        purchase: &Purchase,
        partition: PartitionId,
        trace: &TraceContext,
    ) -> Result<(), DbError> {
        self.insert_pending_many(&[(purchase, partition, trace)])
            .await
    }

    /// [`Sagas::insert_pending`] for many purchases in one transaction (one statement on
    /// MySQL): an api node under load stores what it accepted together.
    pub async fn insert_pending_many(
        &self,
        accepted: &[(&Purchase, PartitionId, &TraceContext)],
    ) -> Result<(), DbError> {
        if accepted.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let rows = accepted
            .iter()
            .map(|(purchase, partition, trace)| pending_row(purchase, *partition, trace, now))
            .collect();
        insert_pending(&self.pool, rows).await
    }

    /// Sagas of `partitions` accepted but not started yet (version 0, not quarantined), in
    /// id order, at most `limit`: what an owner sweeps for, in case a start notice was lost.
    pub async fn pending_in(
        &self,
        partitions: &[PartitionId],
        limit: u64,
    ) -> Result<Vec<PurchaseId>, DbError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let partitions: Vec<i32> = partitions.iter().map(|p| p.0 as i32).collect();
        pending_ids(&self.pool, &partitions, saturating(limit)).await
    }

    /// Sagas released from quarantine by `sagashop sagas retry`, not yet picked up.
    pub async fn released(&self) -> Result<Vec<PurchaseId>, DbError> {
        released_ids(&self.pool).await
    }

    /// A customer's step-log entries after an event id, in id order (SSE resume), from the
    /// customer's partition: a read over the partition's entries after `after` (no index by
    /// customer), so its cost follows how far back the client resumes. Entries that do not
    /// decode are skipped: the saga they belong to is quarantined anyway.
    pub async fn customer_events_after(
        &self,
        partition: PartitionId,
        customer_id: CustomerId,
        after: u64,
        limit: u64,
    ) -> Result<Vec<PurchaseResult>, DbError> {
        let rows = customer_events_after(
            &self.pool,
            partition.0 as i32,
            customer_id,
            saturating(after),
            saturating(limit),
        )
        .await?;
        Ok(results_of(rows))
    }

    /// A partition's step-log entries with ids in `(after, upto]`, in id order, at most
    /// `limit` (the result hub fills a gap with them). Ids of a partition are contiguous and
    /// follow commit order, so a short answer is the whole range: what it lacks was pruned
    /// (or does not decode, and its saga is quarantined).
    pub async fn partition_events(
        &self,
        partition: PartitionId,
        after: u64,
        upto: u64,
        limit: u64,
    ) -> Result<Vec<PurchaseResult>, DbError> {
        let rows = partition_events(
            &self.pool,
            partition.0 as i32,
            saturating(after),
            saturating(upto),
            saturating(limit),
        )
        .await?;
        Ok(results_of(rows))
    }

    /// The newest event id committed in each of `partitions` (0 when none), in partition
    /// order: where a new result stream starts, and how far a gap fill must read.
    pub async fn partition_tops(
        &self,
        partitions: &[PartitionId],
    ) -> Result<Vec<(PartitionId, u64)>, DbError> {
        let ids = partitions.iter().map(|p| p.0 as i32).collect();
        Ok(partition_tops(&self.pool, ids)
            .await?
            .into_iter()
            .map(|(p, next)| (PartitionId(p.max(0) as u32), (next - 1).max(0) as u64))
            .collect())
    }

    /// Sets a saga aside: it is not run until released; the reason is kept for operators.
    pub async fn quarantine(&self, purchase_id: PurchaseId, reason: &str) -> Result<(), DbError> {
        let now = self.clock.now_ms();
        let reason = Some(reason.chars().take(2000).collect::<String>());
        set_quarantine(&self.pool, purchase_id, reason, false, now).await?;
        Ok(())
    }

    /// Releases a quarantined saga so that its node runs it again; false when there is no
    /// such saga.
    pub async fn request_retry(&self, purchase_id: PurchaseId) -> Result<bool, DbError> {
        if !storable(purchase_id) {
            return Ok(false);
        }
        let now = self.clock.now_ms();
        let n = release(&self.pool, purchase_id, now).await?;
        Ok(n == 1)
    }

    /// Marks a released saga as picked up.
    pub async fn picked_up(&self, purchase_id: PurchaseId) -> Result<(), DbError> {
        let now = self.clock.now_ms();
        set_quarantine(&self.pool, purchase_id, None, false, now).await?;
        Ok(())
    }

    /// Prunes the step logs of sagas of `partitions` (those this node holds: in a cluster
    /// each orchestrator prunes its own) that finished before `cutoff_ms`, at most `limit`
    /// sagas in one transaction; answers how many it pruned (fewer than `limit`: done).
    pub async fn prune(
        &self,
        partitions: &[PartitionId],
        cutoff_ms: i64,
        limit: u64,
    ) -> Result<usize, DbError> {
        if partitions.is_empty() {
            return Ok(0);
        }
        let partitions = partitions.iter().map(|p| p.0 as i32).collect();
        prune(&self.pool, partitions, cutoff_ms, limit.min(10_000) as i64).await
    }

    /// The newest event id pruned from a partition (0 when none was).
    pub async fn pruned_up_to(&self, partition: PartitionId) -> Result<u64, DbError> {
        let top = pruned_up_to(&self.pool, partition.0 as i32).await?;
        Ok(top.unwrap_or(0).max(0) as u64)
    }

    /// Every quarantined saga, in id order.
    pub async fn quarantined(&self) -> Result<Vec<Quarantined>, DbError> {
        Ok(quarantined(&self.pool)
            .await?
            .into_iter()
            .map(|(id, customer, reason, at)| Quarantined {
                purchase_id: id,
                customer_id: customer,
                reason: reason.unwrap_or_default(),
                updated_at_ms: at,
            })
            .collect())
    }
}
