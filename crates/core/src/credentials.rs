//! Credentials already used, so that none acts twice anywhere in the group.
//!
//! A controller remembers the credentials it has seen, but that memory is
//! its own and dies with it: a request replayed to another controller, or
//! to the same one after a restart, used to be acted on again (a replayed
//! root submission made a duplicate job after a failover). A change made
//! with a credential therefore carries its nonce into the log, and the
//! state refuses a second command with the same one: every replica
//! refuses it, and the set is in every snapshot, so a restart or a new
//! leader still knows it.

use crate::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};

/// How long past its expiry a nonce is still remembered: room for clocks
/// of the controllers to disagree (a controller whose clock lags still
/// takes the credential as unexpired for that long).
pub const CLOCK_SKEW_MS: Time = 60_000;

/// The nonces of credentials used in committed commands, until they
/// expire (plus [`CLOCK_SKEW_MS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsedCredentials {
    /// (expires, uid, nonce), soonest first: what to forget next.
    by_expiry: BTreeSet<(Time, u32, u64)>,
    seen: HashSet<(u32, u64)>,
}

impl UsedCredentials {
    /// Records the credential `(uid, nonce)`; false if it was used already.
    pub fn use_once(&mut self, uid: u32, nonce: u64, expires: Time, now: Time) -> bool {
        self.forget_expired(now);
        if !self.seen.insert((uid, nonce)) {
            return false;
        }
        self.by_expiry.insert((expires, uid, nonce));
        true
    }

    fn forget_expired(&mut self, now: Time) {
        while let Some(&(expires, uid, nonce)) = self.by_expiry.first() {
            if expires.saturating_add(CLOCK_SKEW_MS) >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&(uid, nonce));
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// As a snapshot keeps them.
    pub fn to_list(&self) -> Vec<UsedCredential> {
        self.by_expiry.iter().map(|&(expires, uid, nonce)| UsedCredential { expires, uid, nonce }).collect()
    }

    pub fn from_list(list: Vec<UsedCredential>) -> UsedCredentials {
        let mut u = UsedCredentials::default();
        for c in list {
            if u.seen.insert((c.uid, c.nonce)) {
                u.by_expiry.insert((c.expires, c.uid, c.nonce));
            }
        }
        u
    }
}

/// One remembered credential, in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsedCredential {
    pub expires: Time,
    pub uid: u32,
    pub nonce: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_good_once_until_long_after_it_expires() {
        let mut u = UsedCredentials::default();
        assert!(u.use_once(5, 42, 1_000, 0));
        assert!(!u.use_once(5, 42, 1_000, 500), "a replay");
        assert!(u.use_once(6, 42, 1_000, 500), "another uid's nonce is another credential");
        assert!(!u.use_once(5, 42, 1_000, 1_000 + CLOCK_SKEW_MS), "still remembered within the skew");
        assert!(u.use_once(7, 1, 90_000, 1_001 + CLOCK_SKEW_MS));
        assert_eq!(u.len(), 1, "the expired ones are forgotten");
        let back = UsedCredentials::from_list(u.to_list());
        assert_eq!(back, u);
    }
}
