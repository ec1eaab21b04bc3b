//! The one gate every password sign-in passes, whatever the front end
//! (HTTP Basic, the sign-in page, an MQTT CONNECT): failures slow a guesser
//! down without locking out the people next to them, and the argon2 checks
//! of all front ends share one small bound, so a flood of guesses queues in
//! little memory instead of exhausting a Pi's.
//!
//! Failures are counted under three keys:
//!
//! - **address and user name** — [`PAIR_FAILURES`] failures within
//!   [`WINDOW_MS`] hold that name back *from that address*: refused
//!   unchecked, even with the right password (guessing must not pay), for
//!   [`BLOCK_MS`], doubling with each further block up to [`MAX_BLOCK_MS`].
//!   Others at the address (behind the same NAT or proxy) sign in as usual.
//! - **user name** — [`USER_FAILURES`] failures within [`WINDOW_MS`] from
//!   any addresses (a distributed guess) hold the name back everywhere,
//!   escalating the same way, except from addresses it signed in from
//!   before ([`KNOWN_FOR_MS`]).
//! - **address** — many failures from one address, whatever the names (a
//!   spray), are answered ever more slowly: [`FAILURE_DELAY_MS`], doubled
//!   every [`SPRAY_STEP`] failures within [`SPRAY_WINDOW_MS`], up to
//!   [`MAX_FAILURE_DELAY_MS`]. An address never has more than
//!   [`PENDING_PER_ADDRESS`] sign-ins in progress (being checked, or
//!   waiting out a failure's delay) and [`WAITING_PER_ADDRESS`] more waiting
//!   their turn, so a spray is held to a few guesses a minute. Credentials
//!   that verify are never refused for what others did from their address:
//!   at worst they wait their turn, or are asked to retry while the address
//!   has that many attempts waiting.
//!
//! Successes erase nothing (a guesser's own valid sign-in must not buy
//! fresh guesses). Argon2 checks run at most [`CONCURRENT_VERIFICATIONS`]
//! at once; at most [`MAX_WAITING`] attempts wait for one, each at most
//! [`QUEUE_TIMEOUT`], beyond which they are told the server is busy. Memory
//! is bounded: at most [`MAX_KEYS`] keys of each kind, the stalest evicted
//! first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Failures of one user name from one address within [`WINDOW_MS`] before
/// that name is held back from that address.
pub const PAIR_FAILURES: usize = 5;
/// Failures of one user name from all addresses within [`WINDOW_MS`] before
/// the name is held back everywhere but its known addresses.
pub const USER_FAILURES: usize = 20;
pub const WINDOW_MS: i64 = 60_000;
/// The first hold; each further one within [`STRIKES_FORGOTTEN_MS`] doubles.
pub const BLOCK_MS: i64 = 60_000;
pub const MAX_BLOCK_MS: i64 = 15 * 60_000;
/// A key with no hold for this long starts again at [`BLOCK_MS`].
pub const STRIKES_FORGOTTEN_MS: i64 = 60 * 60_000;
/// A successful sign-in makes its address known for its user name this long.
pub const KNOWN_FOR_MS: i64 = 30 * 86_400_000;
/// Every failed check is answered after this delay at least.
pub const FAILURE_DELAY_MS: u64 = 500;
/// Failures of one address within [`SPRAY_WINDOW_MS`] that double its delay.
pub const SPRAY_STEP: usize = 20;
pub const SPRAY_WINDOW_MS: i64 = 10 * 60_000;
pub const MAX_FAILURE_DELAY_MS: u64 = 30_000;
/// Sign-ins in progress from one address at once.
pub const PENDING_PER_ADDRESS: usize = 4;
/// Sign-ins from one address waiting for one of its [`PENDING_PER_ADDRESS`]
/// turns, at most; each waits at most [`QUEUE_TIMEOUT`].
pub const WAITING_PER_ADDRESS: usize = 32;
/// Argon2 verifications running at once: each takes ~19 MiB and a core, so
/// a flood of guesses must queue rather than exhaust a Pi's memory.
pub const CONCURRENT_VERIFICATIONS: usize = 2;
/// Attempts waiting for a verification at once, all addresses together.
pub const MAX_WAITING: usize = 64;
/// How long an attempt waits for a verification before it is told to retry.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_KEYS: usize = 10_000;
/// Failures remembered per address for the spray delay.
const MAX_SPRAY_TIMES: usize = 8 * SPRAY_STEP;

/// Why an attempt was not checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Too many failures for this name (from this address, or from
    /// everywhere): retry after this many seconds.
    Blocked { retry_after_secs: u64 },
    /// Too many sign-ins in progress (from this address, or waiting for a
    /// verification): retry after this many seconds.
    Busy { retry_after_secs: u64 },
}

impl Held {
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Held::Blocked { retry_after_secs } | Held::Busy { retry_after_secs } => {
                retry_after_secs
            }
        }
    }
}

/// Failures of one key and the holds they caused.
#[derive(Default)]
struct Entry {
    /// Times of the failures since the last hold, at most the threshold.
    failures: VecDeque<i64>,
    blocked_until: i64,
    /// Holds so far; each doubles the next.
    strikes: u32,
    last_ms: i64,
}

impl Entry {
    /// Counts a failure; a hold once `threshold` fall within the window.
    fn fail(&mut self, threshold: usize, now_ms: i64) {
        if self.strikes > 0 && now_ms - self.last_ms > STRIKES_FORGOTTEN_MS {
            self.strikes = 0;
        }
        self.last_ms = now_ms;
        while self
            .failures
            .front()
            .is_some_and(|&t| t <= now_ms - WINDOW_MS)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now_ms);
        if self.failures.len() >= threshold {
            let hold = (BLOCK_MS << self.strikes.min(16)).min(MAX_BLOCK_MS);
            self.blocked_until = now_ms + hold;
            self.strikes += 1;
            self.failures.clear();
        }
    }

    /// Evicted by this, stalest first: a hold outlives the failures.
    fn relevant_until(&self) -> i64 {
        self.last_ms.max(self.blocked_until)
    }

    fn wait_ms(&self, now_ms: i64) -> i64 {
        self.blocked_until - now_ms
    }
}

#[derive(Default)]
struct State {
    /// `(address, name)`.
    pairs: HashMap<(Option<IpAddr>, String), Entry>,
    users: HashMap<String, Entry>,
    /// Failure times per address, for the spray delay.
    addresses: HashMap<Option<IpAddr>, VecDeque<i64>>,
    /// `(address, name)` that signed in, and when last.
    known: HashMap<(Option<IpAddr>, String), i64>,
    /// API-token failures per address.
    tokens: HashMap<Option<IpAddr>, Entry>,
    /// Sign-ins in progress or waiting, per address.
    pending: HashMap<Option<IpAddr>, AddressTurns>,
}

/// One address's turns at signing in.
struct AddressTurns {
    turns: Arc<tokio::sync::Semaphore>,
    /// Attempts holding or waiting for one.
    attempts: usize,
}

/// Removes the stalest keys (by `last`) until `map` has room for one more.
/// (Linear in the keys, and only when full.)
fn make_room<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    last: impl Fn(&V) -> i64,
) {
    while map.len() >= MAX_KEYS {
        let stalest = map
            .iter()
            .min_by_key(|(_, v)| last(v))
            .map(|(k, _)| k.clone());
        match stalest {
            Some(k) => map.remove(&k),
            None => break,
        };
    }
}

fn secs(ms: i64) -> u64 {
    (ms.max(1) as u64).div_ceil(1000)
}

/// Names that cannot be users are counted under one key, so that they
/// cannot fill the limiter.
fn name_key(name: &str, plausible: bool) -> String {
    if plausible {
        name.to_string()
    } else {
        String::new()
    }
}

pub struct LoginLimiter {
    state: Mutex<State>,
    verifications: tokio::sync::Semaphore,
    waiting: AtomicUsize,
}

impl Default for LoginLimiter {
    fn default() -> LoginLimiter {
        LoginLimiter {
            state: Mutex::default(),
            verifications: tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// An attempt from an address, counted until dropped; it takes one of the
/// address's turns with [`Pending::turn`].
pub(crate) struct Pending<'a> {
    limiter: &'a LoginLimiter,
    address: Option<IpAddr>,
    turns: Arc<tokio::sync::Semaphore>,
}

impl Pending<'_> {
    /// One of the address's [`PENDING_PER_ADDRESS`] turns, waited for at
    /// most [`QUEUE_TIMEOUT`].
    pub(crate) async fn turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Held> {
        match tokio::time::timeout(QUEUE_TIMEOUT, self.turns.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Held::Busy {
                retry_after_secs: QUEUE_TIMEOUT.as_secs().max(1),
            }),
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        let mut state = self.limiter.state.lock();
        if let Some(a) = state.pending.get_mut(&self.address) {
            a.attempts -= 1;
            if a.attempts == 0 {
                state.pending.remove(&self.address);
            }
        }
    }
}

/// A turn at verifying, held while argon2 runs.
pub(crate) type Turn<'a> = tokio::sync::SemaphorePermit<'a>;

impl LoginLimiter {
    /// Whether an attempt for `name` from `address` is held back by earlier
    /// failures (not checked at all then).
    pub fn check(
        &self,
        address: Option<IpAddr>,
        name: &str,
        plausible: bool,
        now_ms: i64,
    ) -> Result<(), Held> {
        let name = name_key(name, plausible);
        let state = self.state.lock();
        let pair = (address, name);
        let mut wait = state.pairs.get(&pair).map_or(0, |e| e.wait_ms(now_ms));
        let known = state
            .known
            .get(&pair)
            .is_some_and(|&t| now_ms - t < KNOWN_FOR_MS);
        if !known {
            if let Some(e) = state.users.get(&pair.1) {
                wait = wait.max(e.wait_ms(now_ms));
            }
        }
        if wait > 0 {
            Err(Held::Blocked {
                retry_after_secs: secs(wait),
            })
        } else {
            Ok(())
        }
    }

    /// Counts an attempt from `address`, unless it has
    /// [`PENDING_PER_ADDRESS`] + [`WAITING_PER_ADDRESS`] already.
    pub(crate) fn enter(&self, address: Option<IpAddr>) -> Result<Pending<'_>, Held> {
        let mut state = self.state.lock();
        let a = state
            .pending
            .entry(address)
            .or_insert_with(|| AddressTurns {
                turns: Arc::new(tokio::sync::Semaphore::new(PENDING_PER_ADDRESS)),
                attempts: 0,
            });
        if a.attempts >= PENDING_PER_ADDRESS + WAITING_PER_ADDRESS {
            return Err(Held::Busy {
                retry_after_secs: 1,
            });
        }
        a.attempts += 1;
        Ok(Pending {
            limiter: self,
            address,
            turns: a.turns.clone(),
        })
    }

    /// A turn at verifying, waiting at most [`QUEUE_TIMEOUT`] behind at
    /// most [`MAX_WAITING`] others.
    pub(crate) async fn verification(&self) -> Result<Turn<'_>, Held> {
        if let Ok(permit) = self.verifications.try_acquire() {
            return Ok(permit);
        }
        let busy = Held::Busy {
            retry_after_secs: QUEUE_TIMEOUT.as_secs().max(1),
        };
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(busy);
        }
        let permit = tokio::time::timeout(QUEUE_TIMEOUT, self.verifications.acquire()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(busy),
        }
    }

    /// Counts a failed check; how long to wait before answering it.
    pub fn failed(
        &self,
        address: Option<IpAddr>,
        name: &str,
        plausible: bool,
        now_ms: i64,
    ) -> Duration {
        let name = name_key(name, plausible);
        let mut state = self.state.lock();
        let pair = (address, name);
        if !state.pairs.contains_key(&pair) {
            make_room(&mut state.pairs, Entry::relevant_until);
        }
        state
            .pairs
            .entry(pair.clone())
            .or_default()
            .fail(PAIR_FAILURES, now_ms);
        if !state.users.contains_key(&pair.1) {
            make_room(&mut state.users, Entry::relevant_until);
        }
        state
            .users
            .entry(pair.1)
            .or_default()
            .fail(USER_FAILURES, now_ms);
        if !state.addresses.contains_key(&address) {
            make_room(&mut state.addresses, |t| {
                t.back().copied().unwrap_or(i64::MIN)
            });
        }
        let times = state.addresses.entry(address).or_default();
        while times
            .front()
            .is_some_and(|&t| t <= now_ms - SPRAY_WINDOW_MS)
        {
            times.pop_front();
        }
        times.push_back(now_ms);
        if times.len() > MAX_SPRAY_TIMES {
            times.pop_front();
        }
        failure_delay(times.len())
    }

    /// Remembers that `name` signed in from `address`.
    pub fn succeeded(&self, address: Option<IpAddr>, name: &str, now_ms: i64) {
        let mut state = self.state.lock();
        let pair = (address, name.to_string());
        if !state.known.contains_key(&pair) {
            if state.known.len() >= MAX_KEYS {
                state.known.retain(|_, t| now_ms - *t < KNOWN_FOR_MS);
            }
            make_room(&mut state.known, |t| *t);
        }
        state.known.insert(pair, now_ms);
    }

    /// Counts an API token that matched none; `Some(seconds)` once the
    /// address has failed [`PAIR_FAILURES`] times within [`WINDOW_MS`]: the
    /// answer says to wait. (A token that matches is never held back: it is
    /// checked first, and a guess at 256 random bits cannot succeed.)
    pub fn token_failed(&self, address: Option<IpAddr>, now_ms: i64) -> Option<u64> {
        let mut state = self.state.lock();
        if !state.tokens.contains_key(&address) {
            make_room(&mut state.tokens, Entry::relevant_until);
        }
        let entry = state.tokens.entry(address).or_default();
        let wait = entry.wait_ms(now_ms);
        if wait > 0 {
            return Some(secs(wait));
        }
        entry.fail(PAIR_FAILURES, now_ms);
        let wait = entry.wait_ms(now_ms);
        (wait > 0).then(|| secs(wait))
    }
}

/// The delay before a failure is answered, for an address with `failures`
/// within [`SPRAY_WINDOW_MS`].
fn failure_delay(failures: usize) -> Duration {
    let doublings = (failures / SPRAY_STEP).min(16) as u32;
    Duration::from_millis((FAILURE_DELAY_MS << doublings).min(MAX_FAILURE_DELAY_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn a_pair_is_held_after_five_failures_and_others_at_the_address_are_not() {
        let l = LoginLimiter::default();
        for i in 0..PAIR_FAILURES as i64 {
            assert!(l.check(ip(1), "admin", true, i * 1000).is_ok());
            l.failed(ip(1), "admin", true, i * 1000);
        }
        // Held for a minute from the fifth failure.
        assert_eq!(
            l.check(ip(1), "admin", true, 5000),
            Err(Held::Blocked {
                retry_after_secs: 59
            })
        );
        // The neighbour behind the same address, and the same name from
        // elsewhere, are not held back.
        assert!(l.check(ip(1), "vera", true, 5000).is_ok());
        assert!(l.check(ip(2), "admin", true, 5000).is_ok());
        assert!(l.check(ip(1), "admin", true, 4000 + BLOCK_MS + 1).is_ok());
    }

    #[test]
    fn holds_double_with_each_strike_up_to_the_limit() {
        let l = LoginLimiter::default();
        let mut now = 0;
        let mut holds = Vec::new();
        for _ in 0..6 {
            for _ in 0..PAIR_FAILURES {
                l.failed(ip(1), "admin", true, now);
            }
            let Err(held) = l.check(ip(1), "admin", true, now) else {
                panic!("not held");
            };
            holds.push(held.retry_after_secs());
            now += held.retry_after_secs() as i64 * 1000;
        }
        assert_eq!(holds, vec![60, 120, 240, 480, 900, 900]);
        // A quiet hour forgives.
        now += STRIKES_FORGOTTEN_MS + 1;
        for _ in 0..PAIR_FAILURES {
            l.failed(ip(1), "admin", true, now);
        }
        assert_eq!(
            l.check(ip(1), "admin", true, now).unwrap_err(),
            Held::Blocked {
                retry_after_secs: 60
            }
        );
    }

    #[test]
    fn a_distributed_guess_holds_the_name_except_where_it_signed_in_before() {
        let l = LoginLimiter::default();
        l.succeeded(ip(200), "admin", 0);
        for i in 0..USER_FAILURES {
            l.failed(ip(i as u8), "admin", true, 1000);
        }
        assert!(l.check(ip(100), "admin", true, 2000).is_err());
        assert!(l.check(ip(200), "admin", true, 2000).is_ok());
        assert!(l.check(ip(100), "vera", true, 2000).is_ok());
    }

    #[test]
    fn a_spray_is_answered_ever_more_slowly() {
        let l = LoginLimiter::default();
        let delays: Vec<u64> = (0..5 * SPRAY_STEP)
            .map(|i| l.failed(ip(1), &format!("user{i}"), true, 1000).as_millis() as u64)
            .collect();
        assert_eq!(delays[0], FAILURE_DELAY_MS);
        assert_eq!(delays[SPRAY_STEP], 2 * FAILURE_DELAY_MS);
        assert_eq!(delays[4 * SPRAY_STEP], 16 * FAILURE_DELAY_MS);
        assert_eq!(
            failure_delay(MAX_SPRAY_TIMES).as_millis() as u64,
            MAX_FAILURE_DELAY_MS
        );
        // Yet no name is held back from there but by its own failures.
        assert!(l.check(ip(1), "someone-else", true, 1000).is_ok());
    }

    #[tokio::test]
    async fn an_address_has_a_few_attempts_in_progress_and_waiting_at_most() {
        let l = LoginLimiter::default();
        let attempts: Vec<_> = (0..PENDING_PER_ADDRESS + WAITING_PER_ADDRESS)
            .map(|_| l.enter(ip(1)).unwrap())
            .collect();
        assert!(matches!(l.enter(ip(1)), Err(Held::Busy { .. })));
        assert!(l.enter(ip(2)).is_ok());
        let mut turns = Vec::new();
        for a in &attempts[..PENDING_PER_ADDRESS] {
            turns.push(a.turn().await.unwrap());
        }
        // The next waits until a turn is given back.
        {
            let waiting = attempts[PENDING_PER_ADDRESS].turn();
            tokio::pin!(waiting);
            assert!(futures_poll_once(waiting.as_mut()).await.is_none());
            turns.pop();
            assert!(waiting.await.is_ok());
        }
        drop(turns);
        drop(attempts);
        assert!(l.state.lock().pending.is_empty());
    }

    /// The output of `f` if it is ready at once.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .ok()
    }

    #[test]
    fn implausible_names_share_one_key() {
        let l = LoginLimiter::default();
        for i in 0..PAIR_FAILURES {
            l.failed(ip(1), &"x".repeat(1000 + i), false, 0);
        }
        assert!(l.check(ip(1), "y y", false, 1).is_err());
        assert_eq!(l.state.lock().pairs.len(), 1);
    }

    #[test]
    fn a_full_map_evicts_the_stalest_key_not_every_block() {
        let l = LoginLimiter::default();
        for i in 0..PAIR_FAILURES as i64 {
            l.failed(ip(1), "attacker", true, 1000 + i);
        }
        for i in 0..MAX_KEYS as i64 {
            l.failed(ip(2), &format!("n{i}"), true, 2000 + i % 1000);
        }
        assert!(l.check(ip(1), "attacker", true, 3000).is_err());
        assert!(l.state.lock().pairs.len() <= MAX_KEYS);
        assert!(l.state.lock().users.len() <= MAX_KEYS);
    }

    #[test]
    fn token_failures_ask_to_wait_after_five() {
        let l = LoginLimiter::default();
        for i in 0..PAIR_FAILURES as i64 - 1 {
            assert_eq!(l.token_failed(ip(1), i), None);
        }
        assert_eq!(l.token_failed(ip(1), 10), Some(60));
        assert_eq!(l.token_failed(ip(2), 10), None);
    }
}
