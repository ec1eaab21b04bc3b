//! Failed sign-ins slow an attacker down: after [`MAX_FAILURES`] failures
//! within [`WINDOW_MS`] for one key (a client address or a user name), that
//! key is refused until the oldest of them leaves the window. Memory is
//! bounded: the map never holds more than [`MAX_KEYS`] keys.

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
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        for key in keys {
            let times = map.entry(key.clone()).or_default();
            times.push_back(now_ms);
            if times.len() > MAX_FAILURES {
                times.pop_front();
            }
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut map = self.failures.lock();
        for key in keys {
            map.remove(key);
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
        l.succeeded(&keys);
        assert!(l.check(&keys, 5000).is_ok());
    }
}
