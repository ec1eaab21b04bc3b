//! Failed sign-ins slow an attacker down: after [`MAX_FAILURES`] failures
//! within [`WINDOW_MS`] for one key (a client address or a user name), that
//! key is refused until the oldest of them leaves the window. Successes
//! erase nothing (a guesser's own valid sign-in must not reset their
//! count). Parallel bursts are held by the HTTP layer, which checks again
//! when a verification's turn comes. Memory is bounded: at most
//! [`MAX_KEYS`] keys, the stalest evicted first.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;

pub const MAX_FAILURES: usize = 5;
pub const WINDOW_MS: i64 = 60_000;
const MAX_KEYS: usize = 10_000;

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<i64>>>,
}

impl LoginLimiter {
    /// `Err(seconds)` to wait when any of `keys` is blocked.
    pub fn check(&self, keys: &[String], now_ms: i64) -> Result<(), u64> {
        let mut map = self.failures.lock();
        let mut wait_ms = 0i64;
        for key in keys {
            if let Some(times) = map.get_mut(key) {
                while times.front().is_some_and(|&t| t <= now_ms - WINDOW_MS) {
                    times.pop_front();
                }
                if times.len() >= MAX_FAILURES {
                    wait_ms = wait_ms.max(times[0] + WINDOW_MS - now_ms);
                }
            }
        }
        if wait_ms > 0 {
            Err((wait_ms as u64).div_ceil(1000))
        } else {
            Ok(())
        }
    }

    pub fn failed(&self, keys: &[String], now_ms: i64) {
        let mut map = self.failures.lock();
        if map.len() >= MAX_KEYS {
            map.retain(|_, times| times.back().is_some_and(|&t| t > now_ms - WINDOW_MS));
        }
        while map.len() >= MAX_KEYS {
            // Evict the key whose last failure is oldest; clearing all
            // would lift every block at once.
            let stalest = map
                .iter()
                .min_by_key(|(_, times)| times.back().copied().unwrap_or(i64::MIN))
                .map(|(k, _)| k.clone());
            match stalest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        for key in keys {
            let times = map.entry(key.clone()).or_default();
            times.push_back(now_ms);
            if times.len() > MAX_FAILURES {
                times.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_five_failures_until_the_window_passes() {
        let l = LoginLimiter::default();
        let keys = vec!["ip:1".to_string()];
        for i in 0..MAX_FAILURES as i64 {
            assert!(l.check(&keys, i * 1000).is_ok());
            l.failed(&keys, i * 1000);
        }
        assert_eq!(l.check(&keys, 5000), Err(55));
        assert!(l.check(&["ip:2".to_string()], 5000).is_ok());
        assert!(l.check(&keys, WINDOW_MS + 1).is_ok());
    }

    #[test]
    fn a_full_map_evicts_the_stalest_key_not_every_block() {
        let l = LoginLimiter::default();
        let blocked = vec!["ip:attacker".to_string()];
        for i in 0..MAX_FAILURES as i64 {
            l.failed(&blocked, 1000 + i);
        }
        for i in 0..MAX_KEYS as i64 {
            l.failed(&[format!("ip:{i}")], i % 1000);
        }
        assert!(l.check(&blocked, 2000).is_err());
        assert!(l.failures.lock().len() <= MAX_KEYS);
    }
}
