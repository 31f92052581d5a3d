//! Which saga-store partition a purchase belongs to. All of a customer's sagas share one
//! partition, so their step-log ids form one increasing sequence (what SSE resumes from).

use super::ids::CustomerId;

/// The hash's name as recorded in the store: a node that would place customers differently
/// refuses to open it.
pub const HASH: &str = "splitmix64";

/// Partitions of a new store unless configured otherwise.
pub const DEFAULT_COUNT: u32 = 32;

/// A saga-store partition number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

/// SplitMix64's finaliser: spreads ids whose low bits are all alike (a Sonyflake id's low
/// 16 bits are the machine id of the node that made it).
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The partition of a customer's sagas among `count`.
pub fn of_customer(CustomerId(id): CustomerId, count: u32) -> PartitionId {
    PartitionId((mix(id) % u64::from(count.max(1))) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customers_of_one_node_spread_over_every_partition() {
        // Ids as one node's Sonyflake makes them: time in the high bits, machine id 7 low.
        let mut seen = vec![0u32; 32];
        for t in 0..3200u64 {
            let id = (t << 24) | 7;
            seen[of_customer(CustomerId(id), 32).0 as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn the_mixer_is_the_published_splitmix64() {
        // First output of the reference SplitMix64 generator seeded with 0.
        assert_eq!(mix(0), 0xE220_A839_7B1D_CDAF);
    }
}
