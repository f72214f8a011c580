//! Nonce generation.
//!
//! A random 96-bit nonce per encryption, from ChaCha20 seeded by the operating
//! system's CSPRNG. A user-space generator is used because a `getrandom` system
//! call per row costs as much as AES-GCM itself on a short field.
//!
//! Fork safety: PostgreSQL forks every backend from the postmaster, and a
//! preloaded library's memory is inherited. Two backends must never continue the
//! same generator state (a repeated nonce under one key breaks GCM's
//! confidentiality and authenticity). So the state is tagged with the identity
//! of the process that seeded it, and every call passes the caller's current
//! process identity (the extension passes `MyProcPid`, set by PostgreSQL in each
//! child right after the fork); a mismatch discards the inherited state and
//! reseeds from the OS before any nonce is produced.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub const NONCE_LEN: usize = 12;

/// Nonces generated per refill: one ChaCha20 call fills 32 of them, so the
/// per-nonce cost is a 12-byte copy.
const BATCH: usize = 32;

pub struct NonceRng {
    state: Option<Seeded>,
}

#[derive(Clone)]
struct Seeded {
    /// The process that seeded the generator (and filled `buf`).
    owner: u32,
    rng: ChaCha20Rng,
    /// Nonces not yet handed out: `buf[pos..]`. Nonces are public (stored
    /// next to every ciphertext), so the buffer needs no wiping; what matters
    /// is that it is never shared across a fork, which the owner check ensures.
    buf: [u8; NONCE_LEN * BATCH],
    pos: usize,
}

impl Default for NonceRng {
    fn default() -> Self {
        Self::new()
    }
}

impl NonceRng {
    pub const fn new() -> Self {
        NonceRng { state: None }
    }

    /// A fresh nonce. `process_id` must identify the calling process (its PID).
    pub fn nonce(&mut self, process_id: u32) -> Result<[u8; NONCE_LEN]> {
        let s = match &mut self.state {
            Some(s) if s.owner == process_id => s,
            // Not seeded yet, or inherited across a fork: the generator
            // state and any buffered nonces are discarded.
            state => {
                let mut seed = Zeroizing::new([0u8; 32]);
                getrandom::fill(&mut seed[..]).map_err(|_| Error::Rng)?;
                let fresh = Seeded {
                    owner: process_id,
                    rng: ChaCha20Rng::from_seed(*seed),
                    buf: [0; NONCE_LEN * BATCH],
                    pos: NONCE_LEN * BATCH,
                };
                state.insert(fresh)
            }
        };
        if s.pos == s.buf.len() {
            s.rng.fill_bytes(&mut s.buf);
            s.pos = 0;
        }
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&s.buf[s.pos..s.pos + NONCE_LEN]);
        s.pos += NONCE_LEN;
        Ok(n)
    }

    /// Whether the generator was seeded by `process_id` (for tests).
    pub fn seeded_by(&self, process_id: u32) -> bool {
        matches!(&self.state, Some(s) if s.owner == process_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn nonces_do_not_repeat() {
        let mut rng = NonceRng::new();
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            assert!(seen.insert(rng.nonce(1).unwrap()));
        }
    }

    #[test]
    fn a_new_process_identity_reseeds() {
        // Simulates the fork: the child inherits a copy of the parent's state.
        let mut parent = NonceRng::new();
        parent.nonce(100).unwrap();
        let mut child_a = NonceRng { state: parent.state.clone() };
        let mut child_b = NonceRng { state: parent.state.clone() };
        let a: Vec<_> = (0..1000).map(|_| child_a.nonce(101).unwrap()).collect();
        let b: Vec<_> = (0..1000).map(|_| child_b.nonce(102).unwrap()).collect();
        let p: Vec<_> = (0..1000).map(|_| parent.nonce(100).unwrap()).collect();
        let all: HashSet<_> = a.iter().chain(&b).chain(&p).collect();
        assert_eq!(all.len(), 3000);
        assert!(child_a.seeded_by(101) && child_b.seeded_by(102));
    }

    #[test]
    fn same_identity_would_repeat_which_is_why_it_is_checked() {
        // Documents the hazard the identity check exists for.
        let mut parent = NonceRng::new();
        parent.nonce(100).unwrap();
        let mut a = NonceRng { state: parent.state.clone() };
        let mut b = NonceRng { state: parent.state.clone() };
        assert_eq!(a.nonce(100).unwrap(), b.nonce(100).unwrap());
    }
}
