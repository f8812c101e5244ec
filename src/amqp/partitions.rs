//! Result partitions (docs/scaling.md, "Result partitions"): each job's results are routed to one
//! of [`RESULT_PARTITIONS`] queues, chosen from the job id, and each partition is consumed by
//! every replica with RabbitMQ's single active consumer, so one replica at a time handles a
//! job's results and RabbitMQ hands the partition to another replica when that one goes.
//!
//! RabbitMQ makes the first consumer of a queue the active one, so the first replica to start
//! would own every partition. Each replica therefore watches which partitions it gets
//! deliveries from, and gives up those beyond its fair share (cancels its consumer and consumes
//! again, at the back of the line), so the next replica in line takes them.

use std::collections::BTreeSet;

/// How many result partitions there are. Fixed: every replica must route a job's results to the
/// same queue and consume every partition, so it is part of the protocol, not a setting.
pub const RESULT_PARTITIONS: u16 = 16;

/// The partition of `job_id`: the 32-bit FNV-1a hash of its bytes, modulo [`RESULT_PARTITIONS`].
pub fn partition_of(job_id: &str) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in job_id.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // The remainder is below RESULT_PARTITIONS, which fits in u16.
    (hash % u32::from(RESULT_PARTITIONS)) as u16
}

/// The most partitions one of `replicas` replicas should be active on: `partitions` spread
/// evenly, rounded up.
pub fn fair_share(partitions: u16, replicas: u32) -> usize {
    let replicas = replicas.max(1) as usize;
    usize::from(partitions).div_ceil(replicas)
}

/// Which of the partitions this replica is `active` on it should give up, when there are
/// `replicas` consumers per partition: the highest-numbered ones beyond its fair share.
pub fn to_release(active: &BTreeSet<u16>, replicas: u32) -> Vec<u16> {
    let share = fair_share(RESULT_PARTITIONS, replicas);
    active
        .iter()
        .rev()
        .take(active.len().saturating_sub(share))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_always_lands_in_the_same_partition_and_ids_spread_over_all() {
        assert_eq!(
            partition_of("UVpxMTeqgMijLlbmNI8A_A"),
            partition_of("UVpxMTeqgMijLlbmNI8A_A")
        );
        // The FNV-1a test vectors: "" is the offset basis, "a" is 0xe40c292c.
        assert_eq!(partition_of(""), (0x811c_9dc5u32 % 16) as u16);
        assert_eq!(partition_of("a"), (0xe40c_292cu32 % 16) as u16);
        let mut counts = [0u32; RESULT_PARTITIONS as usize];
        for n in 0..16_000 {
            counts[usize::from(partition_of(&format!("job-{n}")))] += 1;
        }
        let (least, most) = (counts.iter().min(), counts.iter().max());
        assert!(least >= Some(&800) && most <= Some(&1200), "{counts:?}");
    }

    #[test]
    fn a_replica_keeps_its_fair_share_and_releases_the_rest() {
        let all: BTreeSet<u16> = (0..RESULT_PARTITIONS).collect();
        assert!(to_release(&all, 1).is_empty());
        assert_eq!(to_release(&all, 2), vec![15, 14, 13, 12, 11, 10, 9, 8]);
        // 16 over 3 replicas: at most 6 each.
        assert_eq!(to_release(&all, 3).len(), 10);
        let few: BTreeSet<u16> = [1, 4, 9].into();
        assert!(to_release(&few, 3).is_empty());
        assert_eq!(to_release(&few, 16), vec![9, 4]);
        // No consumer counted (a probe that raced a reconnect) is read as one.
        assert!(to_release(&all, 0).is_empty());
    }
}
