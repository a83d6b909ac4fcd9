//! The intensive endpoint's CPU-bound workload.

/// `rounds` iterations of `c = (c * 31) mod 1_000_000`, starting from `n`.
///
/// `black_box` on the inputs keeps the compiler from folding the loop for constant
/// arguments; each round depends on the previous one, so the work cannot be skipped.
pub fn intensive_digest(n: u64, rounds: u32) -> u64 {
    let rounds = std::hint::black_box(rounds);
    let mut c = std::hint::black_box(n);
    for _ in 0..rounds {
        c = (c * 31) % 1_000_000;
    }
    std::hint::black_box(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_digest() {
        assert_eq!(intensive_digest(42, 10_000), 600_042);
    }

    #[test]
    fn matches_a_naive_reference() {
        for n in [0u64, 1, 7, 999_999, 1_000_000] {
            let mut c = n;
            for _ in 0..1234 {
                c = c * 31 % 1_000_000;
            }
            assert_eq!(intensive_digest(n, 1234), c);
        }
    }
}
