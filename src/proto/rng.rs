//! A tiny, fast, non-cryptographic PRNG (wyrand) owned by each shard: frame masks, handshake
//! keys and jitter. RFC 6455 wants masks unpredictable to intermediaries, not secret keys, and
//! a per-frame syscall or CSPRNG call would dominate the send path.

/// A wyrand generator (64 bits of state): one per shard, never shared, not cryptographic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (callers mix in time, shard index and address-space entropy).
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x2d35_8dcc_aa6c_78a5)
    }

    /// A generator seeded from the clock, the thread and ASLR.
    pub fn from_entropy(salt: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let stack = &salt as *const u64 as u64;
        Self::new(t ^ stack.rotate_left(32) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.0) * u128::from(self.0 ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A fresh 4-byte frame mask.
    pub fn mask(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }

    /// 16 random bytes (a `Sec-WebSocket-Key` nonce).
    pub fn bytes16(&mut self) -> [u8; 16] {
        let a = self.next_u64().to_ne_bytes();
        let b = self.next_u64().to_ne_bytes();
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&a);
        out[8..].copy_from_slice(&b);
        out
    }

    /// Uniform value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_vary_and_below_stays_in_range() {
        let mut r = Rng::new(1);
        let masks: std::collections::HashSet<[u8; 4]> = (0..1000).map(|_| r.mask()).collect();
        assert!(masks.len() > 990);
        let mut hits = [0u32; 10];
        for _ in 0..10_000 {
            hits[r.below(10) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| (800..1200).contains(&h)), "{hits:?}");
    }
}
