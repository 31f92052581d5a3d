//! Partition leases in a cluster (MySQL saga store): orchestrators claim unowned or expired
//! partitions, renew what they hold, and give partitions back, all on the database's clock
//! (`NOW(3)`), never a node's, so nodes whose clocks differ still agree on who holds what.
//!
//! A claim bumps the partition's epoch in the same UPDATE that takes it: every commit is
//! fenced on the epoch, so a node that lost a partition cannot write to it even before it
//! notices. Leases only decide when a partition may change hands; epochs keep it safe.
//!
//! Every statement that touches several partition rows locks them in ascending order
//! (`ORDER BY partition_id`), as the commit's fence does, so InnoDB cannot deadlock.
//! The leases run on a connection of their own, not queued behind the writer's commits.

use std::collections::BTreeMap;

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};

use super::DbError;
use super::ids::{from_column, to_column};
use crate::domain::partition::PartitionId;
use crate::secrets::DatabaseUrl;

/// The database's clock in milliseconds, as SQL.
const NOW_MS: &str = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)";

/// A partition this node just claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimed {
    pub partition: PartitionId,
    /// The epoch the claim moved it to (every commit of this node is fenced on it).
    pub epoch: u64,
    /// The partition's next event id at the claim: the newest committed one is below it.
    pub next_seq: i64,
}

/// What a renewal found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Renewed {
    /// Partitions this node held and no longer does (another node claimed them).
    pub lost: Vec<PartitionId>,
}

#[derive(QueryableByName)]
struct OwnedRow {
    #[diesel(sql_type = Integer)]
    partition_id: i32,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = BigInt)]
    next_seq: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One orchestrator's leases: its own connection to the saga store, its node id and the
/// lease length.
pub struct PartitionLeases {
    url: DatabaseUrl,
    conn: Option<AsyncMysqlConnection>,
    node: i32,
    lease_ms: i64,
}

impl PartitionLeases {
    /// Leases of `node` on the saga store at `url`, each lasting `lease_ms` past its renewal
    /// (the connection is made on first use, and again after it fails).
    pub fn new(url: DatabaseUrl, node: u16, lease_ms: u64) -> Self {
        Self {
            url,
            conn: None,
            node: i32::from(node),
            lease_ms: lease_ms.min(i64::MAX as u64) as i64,
        }
    }

    async fn conn(&mut self) -> Result<&mut AsyncMysqlConnection, DbError> {
        if self.conn.is_none() {
            let conn = AsyncMysqlConnection::establish(self.url.expose())
                .await
                .map_err(|e| DbError::Unavailable(self.url.scrub(&e.to_string())))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    /// Runs `query` on the lease connection; a failure drops the connection so that the next
    /// call makes a new one.
    async fn execute(
        &mut self,
        query: diesel::query_builder::BoxedSqlQuery<
            '_,
            diesel::mysql::Mysql,
            diesel::query_builder::SqlQuery,
        >,
    ) -> Result<usize, DbError> {
        let done = query.execute(self.conn().await?).await;
        if done.is_err() {
            self.conn = None;
        }
        Ok(done?)
    }

    async fn owned_rows(&mut self) -> Result<Vec<OwnedRow>, DbError> {
        let query = diesel::sql_query(
            "SELECT partition_id, epoch, next_seq FROM partitions \
             WHERE owner_node = ? ORDER BY partition_id",
        )
        .bind::<Integer, _>(self.node);
        let rows = query.load::<OwnedRow>(self.conn().await?).await;
        if rows.is_err() {
            self.conn = None;
        }
        Ok(rows?)
    }

    /// Renews this node's mark among the live orchestrators and answers how many are live
    /// (itself included): the fair share is `ceil(P / live)`.
    pub async fn heartbeat(&mut self) -> Result<u32, DbError> {
        let sql = format!(
            "INSERT INTO orchestrators (node_id, expires_at) VALUES (?, {NOW_MS} + ?) \
             ON DUPLICATE KEY UPDATE expires_at = VALUES(expires_at)"
        );
        let upsert = diesel::sql_query(sql)
            .into_boxed()
            .bind::<Integer, _>(self.node)
            .bind::<BigInt, _>(self.lease_ms);
        self.execute(upsert).await?;
        let sql = format!("SELECT COUNT(*) AS n FROM orchestrators WHERE expires_at > {NOW_MS}");
        let live = diesel::sql_query(sql)
            .get_result::<Count>(self.conn().await?)
            .await;
        if live.is_err() {
            self.conn = None;
        }
        Ok(live?.n.clamp(1, i64::from(u32::MAX)) as u32)
    }

    /// Extends the lease of every partition in `held` (partition -> epoch) that this node
    /// still holds at that epoch; the others were claimed by another node.
    pub async fn renew(&mut self, held: &BTreeMap<PartitionId, u64>) -> Result<Renewed, DbError> {
        if held.is_empty() {
            return Ok(Renewed::default());
        }
        let sql = format!(
            "UPDATE partitions SET lease_expires_at = {NOW_MS} + ? WHERE owner_node = ? AND ({}) \
             ORDER BY partition_id",
            vec!["(partition_id = ? AND epoch = ?)"; held.len()].join(" OR ")
        );
        let mut query = diesel::sql_query(sql)
            .into_boxed()
            .bind::<BigInt, _>(self.lease_ms)
            .bind::<Integer, _>(self.node);
        for (p, epoch) in held {
            query = query
                .bind::<Integer, _>(p.0 as i32)
                .bind::<BigInt, _>(to_column(*epoch)?);
        }
        let renewed = self.execute(query).await?;
        if renewed == held.len() {
            return Ok(Renewed::default());
        }
        // Some were claimed: the ones no longer ours at our epoch are lost.
        let still: BTreeMap<PartitionId, i64> = self
            .owned_rows()
            .await?
            .into_iter()
            .map(|r| (PartitionId(r.partition_id as u32), r.epoch))
            .collect();
        let mut lost = Vec::new();
        for (p, epoch) in held {
            if still.get(p).copied() != Some(to_column(*epoch)?) {
                lost.push(*p);
            }
        }
        Ok(Renewed { lost })
    }

    /// Claims at most `want` partitions that are unowned, whose lease expired, or that this
    /// node id held in an earlier life (not in `held`), lowest ids first; each claim bumps
    /// the partition's epoch. Answers what it got.
    pub async fn claim(
        &mut self,
        held: &BTreeMap<PartitionId, u64>,
        want: usize,
    ) -> Result<Vec<Claimed>, DbError> {
        if want == 0 {
            return Ok(Vec::new());
        }
        let not_held = if held.is_empty() {
            String::new()
        } else {
            format!(
                " AND partition_id NOT IN ({})",
                vec!["?"; held.len()].join(", ")
            )
        };
        let sql = format!(
            "UPDATE partitions SET owner_node = ?, epoch = epoch + 1, \
             lease_expires_at = {NOW_MS} + ? \
             WHERE (owner_node = 0 OR owner_node = ? OR lease_expires_at < {NOW_MS}){not_held} \
             ORDER BY partition_id LIMIT ?"
        );
        let mut query = diesel::sql_query(sql)
            .into_boxed()
            .bind::<Integer, _>(self.node)
            .bind::<BigInt, _>(self.lease_ms)
            .bind::<Integer, _>(self.node);
        for p in held.keys() {
            query = query.bind::<Integer, _>(p.0 as i32);
        }
        query = query.bind::<BigInt, _>(want.min(i64::MAX as usize) as i64);
        if self.execute(query).await? == 0 {
            return Ok(Vec::new());
        }
        self.owned_rows()
            .await?
            .into_iter()
            .filter(|r| !held.contains_key(&PartitionId(r.partition_id as u32)))
            .map(|r| {
                Ok(Claimed {
                    partition: PartitionId(r.partition_id as u32),
                    epoch: from_column(r.epoch)?,
                    next_seq: r.next_seq,
                })
            })
            .collect()
    }

    /// Gives back `partitions` (partition -> epoch) that this node still holds at those
    /// epochs: unowned with an expired lease, another node claims them at once. Answers how
    /// many it gave back.
    pub async fn release(
        &mut self,
        partitions: &BTreeMap<PartitionId, u64>,
    ) -> Result<usize, DbError> {
        if partitions.is_empty() {
            return Ok(0);
        }
        let sql = format!(
            "UPDATE partitions SET owner_node = 0, lease_expires_at = 0 WHERE owner_node = ? \
             AND ({}) ORDER BY partition_id",
            vec!["(partition_id = ? AND epoch = ?)"; partitions.len()].join(" OR ")
        );
        let mut query = diesel::sql_query(sql)
            .into_boxed()
            .bind::<Integer, _>(self.node);
        for (p, epoch) in partitions {
            query = query
                .bind::<Integer, _>(p.0 as i32)
                .bind::<BigInt, _>(to_column(*epoch)?);
        }
        self.execute(query).await
    }

    /// Leaves: gives back every partition this node holds and drops its mark among the live
    /// orchestrators, so the others share its partitions out at once (graceful shutdown).
    /// Answers how many partitions it gave back.
    pub async fn leave(&mut self, held: &BTreeMap<PartitionId, u64>) -> Result<usize, DbError> {
        let released = self.release(held).await?;
        let gone = diesel::sql_query("DELETE FROM orchestrators WHERE node_id = ?")
            .into_boxed()
            .bind::<Integer, _>(self.node);
        self.execute(gone).await?;
        Ok(released)
    }
}

/// The fair share of `partitions` among `live` orchestrators: `ceil(P / live)`.
pub fn fair_share(partitions: u32, live: u32) -> usize {
    partitions.div_ceil(live.max(1)) as usize
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn the_fair_share_rounds_up_so_that_the_shares_cover_every_partition() {
        assert_eq!(fair_share(32, 1), 32);
        assert_eq!(fair_share(32, 2), 16);
        assert_eq!(fair_share(32, 3), 11);
        assert_eq!(fair_share(32, 0), 32);
        assert!(fair_share(32, 3) * 3 >= 32);
    }
}
