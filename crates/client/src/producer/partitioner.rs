//! Partition choice as the Java client makes it: an explicit partition wins, a keyed record goes
//! to `toPositive(murmur2(key)) % partitions`, a keyless record to the topic's sticky partition.

/// Kafka's `Utils.murmur2`: MurmurHash2 with seed `0x9747b28c`, as a signed 32-bit result.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    // Java hashes `int length`: keys are far below 2 GiB.
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit (not `abs`, which overflows on `i32::MIN`).
pub fn to_positive(v: i32) -> i32 {
    v & 0x7fff_ffff
}

/// The partition of a keyed record: `toPositive(murmur2(key)) % partitions`, over every
/// partition of the topic (available or not), exactly as the Java client's default partitioner.
/// `partitions` must be positive.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    to_positive(murmur2(key)) % partitions.max(1)
}

/// A small xorshift generator for choosing sticky partitions (no need for cryptographic
/// randomness, and no dependency).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x2545_f491_4f6c_dd1d);
        Rng(t | 1)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        if n == 0 { 0 } else { (x % n as u64) as usize }
    }
}

/// Chooses a new sticky partition: random among `available` (partitions with a leader), or
/// among all `count` partitions when none is available; different from `previous` when there
/// is a choice.
pub(crate) fn next_sticky(
    rng: &mut Rng,
    count: i32,
    available: &[i32],
    previous: Option<i32>,
) -> i32 {
    let all: Vec<i32>;
    let pool: &[i32] = if available.is_empty() {
        all = (0..count.max(1)).collect();
        &all
    } else {
        available
    };
    if pool.len() == 1 {
        return pool[0];
    }
    loop {
        let p = pool[rng.below(pool.len())];
        if Some(p) != previous {
            return p;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Java client's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_javas_vectors() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (k, want) in cases {
            assert_eq!(murmur2(k), *want, "{:?}", String::from_utf8_lossy(k));
        }
    }

    /// The same keys through `toPositive(murmur2) % n`, cross-checked with the Python port in
    /// tests/e2e/e2e_util.py (`kafka_partition_for`).
    #[test]
    fn partitions_for_keys() {
        assert_eq!(to_positive(-973_932_308), 1_173_551_340);
        assert_eq!(partition_for_key(b"21", 3), 1_173_551_340 % 3);
        assert_eq!(
            partition_for_key(b"foobar", 7),
            to_positive(-790_332_482) % 7
        );
        assert_eq!(partition_for_key(b"abc", 10), 479_470_107 % 10);
        assert_eq!(partition_for_key(b"", 4), to_positive(murmur2(b"")) % 4);
        assert_eq!(to_positive(i32::MIN), 0);
        for p in 1..20 {
            for k in [&b"key-001"[..], b"x", b"\xff\xfe\x00"] {
                assert!((0..p).contains(&partition_for_key(k, p)));
            }
        }
    }

    #[test]
    fn sticky_moves_to_another_available_partition() {
        let mut rng = Rng::seeded();
        for _ in 0..100 {
            let p = next_sticky(&mut rng, 4, &[1, 3], Some(1));
            assert_eq!(p, 3);
        }
        assert_eq!(next_sticky(&mut rng, 1, &[], Some(0)), 0);
        let p = next_sticky(&mut rng, 3, &[], Some(2));
        assert!(p == 0 || p == 1);
    }
}
