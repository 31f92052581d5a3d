//! The flows of `cache_redis` on a Redis Cluster of the test's own (six nodes: three
//! masters, a replica each): invalidation across sagashop nodes, Bloom filters lost and
//! rebuilt, and one database read for 200 concurrent cold reads. Every key of one record
//! (value, version, lock) and every filter lives in one hash slot, so the scripts run there.

use crate::cache_redis::{
    Nodes, STAMPEDE_FLAGS, an_update_on_one_node_is_read_on_the_other_at_once,
    lost_bloom_filters_cost_no_existing_record_a_404,
    two_hundred_cold_reads_make_one_database_read,
};
use crate::support::nodes::Bench;
use crate::support::redis::{Redis, RedisCluster};

/// The bench and a Redis Cluster of test `name`, or `None` when it is skipped.
async fn setup(name: &str) -> Option<(Bench, Redis)> {
    let bench = Bench::new(name).await?;
    let redis = RedisCluster::start(name)?;
    Some((bench, Redis::Cluster(redis)))
}

#[actix_rt::test]
async fn cache_cluster_an_update_on_one_node_is_read_on_the_other_at_once() {
    let Some((bench, redis)) = setup("cache_cl_invalidate").await else {
        return;
    };
    let nodes = Nodes::start(&bench, &redis.flags(), 2, &[]).await;
    an_update_on_one_node_is_read_on_the_other_at_once(&nodes).await;
}

#[actix_rt::test]
async fn cache_cluster_lost_bloom_filters_cost_no_existing_record_a_404() {
    let Some((bench, redis)) = setup("cache_cl_bloom_loss").await else {
        return;
    };
    let nodes = Nodes::start(&bench, &redis.flags(), 2, &[]).await;
    lost_bloom_filters_cost_no_existing_record_a_404(&nodes, &redis).await;
}

#[actix_rt::test]
async fn cache_cluster_two_hundred_cold_reads_make_one_database_read() {
    let Some((bench, redis)) = setup("cache_cl_stampede").await else {
        return;
    };
    // A slow Redis call is a miss that goes to the database (counted): with the default
    // 100 ms, a burst of 200 on a debug build under parallel tests exceeds it now and then.
    // The timeout's own behaviour is `cache_reads_stay_right_while_redis_is_down...`.
    let nodes = Nodes::start(&bench, &redis.flags(), 2, &STAMPEDE_FLAGS).await;
    two_hundred_cold_reads_make_one_database_read(&nodes).await;
}
