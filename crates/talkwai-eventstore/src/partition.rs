//! Partitions of the log: how tenants are split between the instances of a service.
//!
//! A subject belongs to partition `fnv1a32(scope token) mod P`, where the scope token is the
//! third token of the subject (`talkwai.evt.<tenant|platform>.…`, and likewise
//! `talkwai.cmd.<tenant|platform>.…`). One tenant's aggregates, guards and commands therefore
//! always share a partition. FNV-1a over the token is what nats-server's `{{partition(P,1)}}`
//! subject transform computes, so a server-side split (a sourced stream per partition, a
//! subject mapping per partition) gives the same numbers.

/// One partition of a layout of `count` partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    /// The partition number, `0..count`.
    pub index: u32,
    /// How many partitions the layout has (at least 1).
    pub count: u32,
}

impl Slot {
    /// The only partition of an unpartitioned layout.
    pub const WHOLE: Self = Self { index: 0, count: 1 };

    /// The partition of `subject` in a layout of `count` partitions.
    pub fn of(subject: &str, count: u32) -> Self {
        Self {
            index: partition_of(subject, count),
            count: count.max(1),
        }
    }

    /// Whether `subject` belongs to this partition.
    pub fn owns(self, subject: &str) -> bool {
        partition_of(subject, self.count) == self.index
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// 32-bit FNV-1a, the hash nats-server's `partition` subject-transform function uses.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The partition of a subject in a layout of `count` partitions: FNV-1a of its scope token
/// (the third token: `<tenant>` or `platform`) modulo `count`. Subjects without a scope token
/// fall in partition 0.
pub fn partition_of(subject: &str, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    subject
        .split('.')
        .nth(2)
        .map_or(0, |token| fnv1a32(token.as_bytes()) % count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn a_subject_falls_in_its_scope_tokens_partition() {
        let tenant = "0190bc1e-5a3b-7d4e-8f21-3c6a9b0d1e01";
        let task = format!("talkwai.evt.{tenant}.task.0190bc1e-0000-7000-8000-000000000001");
        let member = format!("talkwai.evt.{tenant}.member.0190bc1e-0000-7000-8000-000000000002");
        let guard = format!("talkwai.evt.{tenant}.guard.email.abc");
        for count in 1..=16 {
            let p = partition_of(&task, count);
            assert!(p < count);
            assert_eq!(partition_of(&member, count), p, "one tenant, one partition");
            assert_eq!(partition_of(&guard, count), p);
        }
        assert_eq!(partition_of(&task, 1), 0);
        assert_eq!(
            partition_of(&format!("talkwai.cmd.{tenant}.task.create"), 16),
            partition_of(&task, 16)
        );
        assert_eq!(Slot::of(&task, 16).index, partition_of(&task, 16));
        assert_eq!(Slot::of(&task, 0), Slot::WHOLE);
        assert_eq!(partition_of("talkwai", 6), 0);
        assert_eq!(
            partition_of("talkwai.evt.platform.user.x", 6),
            fnv1a32(b"platform") % 6
        );
    }

    #[test]
    fn tenants_spread_over_the_partitions() {
        let mut seen = [0u32; 6];
        for i in 0..600u32 {
            let subject = format!("talkwai.evt.{:08x}-0000-4000-8000-000000000000.task.x", i);
            seen[partition_of(&subject, 6) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "skewed: {seen:?}");
    }
}
