//! The U and V key halves and K = U xor V. Every half received is kept
//! (up to a bound, oldest dropped first) until a pair combines into a K
//! whose HMAC over the agent id matches the tenant's `auth_tag`. Halves
//! and K are zeroized on drop and never printed.

use std::collections::VecDeque;

use zeroize::Zeroizing;

use crate::crypto;

/// U halves kept at most (each may carry a payload, so kept few).
pub const MAX_U_HALVES: usize = 4;
/// V halves kept at most.
pub const MAX_V_HALVES: usize = 8;
/// Length of an `auth_tag`: an HMAC-SHA-384.
pub const AUTH_TAG_LEN: usize = 48;

/// A U half from the tenant, with what belongs to it.
pub struct UHalf {
    /// U.
    pub key: Zeroizing<Vec<u8>>,
    /// HMAC-SHA-384(K, agent id) the tenant computed.
    pub auth_tag: [u8; AUTH_TAG_LEN],
    /// The encrypted payload (raw bytes, after base64), if any.
    pub payload: Option<Vec<u8>>,
}

/// A K that matched its `auth_tag`, with the payload sent alongside U.
#[derive(Clone)]
pub struct DerivedKey {
    /// K.
    pub key: Zeroizing<Vec<u8>>,
    /// The encrypted payload, if any.
    pub payload: Option<Vec<u8>>,
}

impl std::fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DerivedKey")
            .field("key", &"<secret>")
            .finish_non_exhaustive()
    }
}

/// The halves received so far and the current K.
pub struct KeyHalves {
    agent_id: String,
    us: VecDeque<UHalf>,
    vs: VecDeque<Zeroizing<Vec<u8>>>,
    current: Option<DerivedKey>,
}

impl KeyHalves {
    /// No halves yet, for `agent_id` (the HMAC message).
    pub fn new(agent_id: &str) -> Self {
        Self {
            agent_id: agent_id.into(),
            us: VecDeque::new(),
            vs: VecDeque::new(),
            current: None,
        }
    }

    /// Adds a U; returns a newly derived K if this U completes a pair.
    pub fn add_u(&mut self, u: UHalf) -> Option<DerivedKey> {
        if self.us.len() == MAX_U_HALVES {
            tracing::warn!("dropping the oldest of {MAX_U_HALVES} unmatched U key halves");
            self.us.pop_front();
        }
        self.us.push_back(u);
        self.combine()
    }

    /// Adds a V; returns a newly derived K if this V completes a pair.
    pub fn add_v(&mut self, v: Zeroizing<Vec<u8>>) -> Option<DerivedKey> {
        if self.vs.len() == MAX_V_HALVES {
            tracing::warn!("dropping the oldest of {MAX_V_HALVES} unmatched V key halves");
            self.vs.pop_front();
        }
        self.vs.push_back(v);
        self.combine()
    }

    /// The current K, once derived.
    pub fn key(&self) -> Option<&[u8]> {
        self.current.as_ref().map(|d| d.key.as_slice())
    }

    /// Halves held now: `(U count, V count)`.
    pub fn pending(&self) -> (usize, usize) {
        (self.us.len(), self.vs.len())
    }

    /// Tries every pair, newest first. The same K again (the verifier
    /// re-sends V) is not news.
    fn combine(&mut self) -> Option<DerivedKey> {
        for u in self.us.iter().rev() {
            for v in self.vs.iter().rev() {
                if u.key.len() != v.len() {
                    continue;
                }
                let k = Zeroizing::new(
                    u.key
                        .iter()
                        .zip(v.iter())
                        .map(|(a, b)| a ^ b)
                        .collect::<Vec<u8>>(),
                );
                let Ok(tag) = crypto::hmac_sha384_hex(&k, self.agent_id.as_bytes()) else {
                    continue;
                };
                let Ok(tag) = hex::decode(tag) else { continue };
                if !crypto::constant_time_eq(&tag, &u.auth_tag) {
                    continue;
                }
                if self
                    .key()
                    .is_some_and(|current| crypto::constant_time_eq(current, &k))
                {
                    return None;
                }
                let derived = DerivedKey {
                    key: k,
                    payload: u.payload.clone(),
                };
                self.current = Some(derived.clone());
                return Some(derived);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
    /// PROTOCOL.md §16.2: U = 0x00..0x1f, V = 32 × 0xff, and the auth_tag of K.
    const TAG: &str = "0b90fb78fc4e781c962c6e54a61cf07f0a680c8022ee741f78362e8d3cc7616984811c836cd999995f0b5b029bc481bf";

    fn u(key: Vec<u8>, tag: &str) -> UHalf {
        let mut auth_tag = [0u8; AUTH_TAG_LEN];
        auth_tag.copy_from_slice(&hex::decode(tag).expect("hex"));
        UHalf {
            key: Zeroizing::new(key),
            auth_tag,
            payload: Some(b"p".to_vec()),
        }
    }

    fn k() -> Vec<u8> {
        hex::decode("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0efeeedecebeae9e8e7e6e5e4e3e2e1e0")
            .expect("hex")
    }

    #[test]
    fn u_then_v_derives_the_known_k() {
        let mut halves = KeyHalves::new(ID);
        assert!(halves.add_u(u((0..32).collect(), TAG)).is_none());
        let derived = halves
            .add_v(Zeroizing::new(vec![0xff; 32]))
            .expect("derived");
        assert_eq!(derived.key.as_slice(), k().as_slice());
        assert_eq!(derived.payload.as_deref(), Some(&b"p"[..]));
        assert_eq!(halves.key(), Some(k().as_slice()));
        assert!(
            halves.add_v(Zeroizing::new(vec![0xff; 32])).is_none(),
            "V again: same K, no news"
        );
    }

    #[test]
    fn v_then_u_and_wrong_halves_among_them() {
        let mut halves = KeyHalves::new(ID);
        assert!(halves.add_v(Zeroizing::new(vec![0xee; 32])).is_none());
        assert!(halves.add_v(Zeroizing::new(vec![0xff; 32])).is_none());
        assert!(
            halves.add_v(Zeroizing::new(vec![0xff; 16])).is_none(),
            "length mismatch is skipped"
        );
        assert!(halves.add_u(u(vec![1; 32], TAG)).is_none(), "wrong U: no K");
        assert!(halves.add_u(u((0..32).collect(), TAG)).is_some());
    }

    #[test]
    fn the_queues_are_bounded() {
        let mut halves = KeyHalves::new(ID);
        for i in 0..100u8 {
            halves.add_v(Zeroizing::new(vec![i; 32]));
            halves.add_u(u(vec![i; 32], TAG));
        }
        assert_eq!(halves.pending(), (MAX_U_HALVES, MAX_V_HALVES));
        assert!(halves.key().is_none());
        // The right pair still works after the flood.
        halves.add_u(u((0..32).collect(), TAG));
        assert!(halves.add_v(Zeroizing::new(vec![0xff; 32])).is_some());
    }

    #[test]
    fn a_tag_for_another_agent_never_matches() {
        let mut halves = KeyHalves::new("another-agent");
        halves.add_u(u((0..32).collect(), TAG));
        assert!(halves.add_v(Zeroizing::new(vec![0xff; 32])).is_none());
    }
}
