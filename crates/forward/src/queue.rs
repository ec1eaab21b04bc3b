//! One target's durable queue: a sled tree `forward.<name>` whose keys are
//! a growing sequence number (u64, big-endian) and whose values are one item
//! each, prefixed with the time it was queued (i64 ms, big-endian).
//!
//! Items are appended in batches (one sled batch per hand-over from the
//! writer thread); the sender reads from the front without removing, and
//! removes what it sent only once the target acknowledged it ([`Queue::commit`]),
//! so a crash or a restart resends at most the batch in flight. The cap counts
//! key and value bytes; when it is reached `drop_oldest` deletes from the
//! front and `reject_new` refuses the arriving items, both counted.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::ForwardError;
use config::Overflow;

/// Bytes of a stored item beyond its payload: the key and the queue time.
const ITEM_OVERHEAD: u64 = 16;

pub struct Queue {
    tree: sled::Tree,
    state: Mutex<State>,
    pub(super) bytes: AtomicU64,
    pub(super) items: AtomicU64,
    /// Items deleted or refused because the queue was full.
    pub(super) dropped: AtomicU64,
    /// Wakes the sender when items arrive.
    pub(super) notify: tokio::sync::Notify,
}

struct State {
    /// The cap and the policy, changeable while the queue is in use.
    max_bytes: u64,
    overflow: Overflow,
    next_seq: u64,
    bytes: u64,
    items: u64,
}

/// An item read from the front of the queue.
pub struct Entry {
    pub seq: u64,
    pub data: sled::IVec,
}

impl Entry {
    pub fn payload(&self) -> &[u8] {
        &self.data[8..]
    }
}

impl Queue {
    /// Opens (or creates) the queue of `target`, counting what it holds.
    pub fn open(
        trees: &store::Trees,
        target: &str,
        max_bytes: u64,
        overflow: Overflow,
    ) -> Result<Queue, ForwardError> {
        let tree = trees.forward_queue(target)?;
        let (mut bytes, mut items) = (0u64, 0u64);
        for kv in tree.iter() {
            let (_, v) = kv?;
            bytes += v.len() as u64 + 8;
            items += 1;
        }
        let next_seq = match tree.last()? {
            Some((k, _)) => decode_seq(&k)? + 1,
            None => 0,
        };
        Ok(Queue {
            tree,
            state: Mutex::new(State {
                max_bytes,
                overflow,
                next_seq,
                bytes,
                items,
            }),
            bytes: AtomicU64::new(bytes),
            items: AtomicU64::new(items),
            dropped: AtomicU64::new(0),
            notify: tokio::sync::Notify::new(),
        })
    }

    /// A new cap and policy (a target's definition changed); applied from
    /// the next push.
    pub fn set_limits(&self, max_bytes: u64, overflow: Overflow) {
        let mut st = self.state.lock();
        st.max_bytes = max_bytes;
        st.overflow = overflow;
    }

    /// Appends items queued at `now_ms` as one batch, applying the overflow
    /// policy. Returns how many were stored.
    pub fn push(&self, items: &[Vec<u8>], now_ms: i64) -> Result<usize, ForwardError> {
        if items.is_empty() {
            return Ok(0);
        }
        let mut st = self.state.lock();
        let mut batch = sled::Batch::default();
        let mut stored = 0usize;
        let mut refused = 0u64;
        for item in items {
            let size = item.len() as u64 + ITEM_OVERHEAD;
            if st.overflow == Overflow::RejectNew && st.bytes + size > st.max_bytes {
                refused += 1;
                continue;
            }
            let mut v = Vec::with_capacity(item.len() + 8);
            v.extend_from_slice(&now_ms.to_be_bytes());
            v.extend_from_slice(item);
            batch.insert(&st.next_seq.to_be_bytes()[..], v);
            st.next_seq += 1;
            st.bytes += size;
            st.items += 1;
            stored += 1;
        }
        self.tree.apply_batch(batch)?;
        // drop_oldest: make room from the front (possibly some of this batch,
        // when one batch is larger than the whole cap).
        while st.overflow == Overflow::DropOldest && st.bytes > st.max_bytes {
            match self.tree.pop_min()? {
                Some((_, v)) => {
                    st.bytes -= v.len() as u64 + 8;
                    st.items -= 1;
                    refused += 1;
                }
                None => break,
            }
        }
        if refused > 0 {
            self.dropped.fetch_add(refused, Ordering::Relaxed);
        }
        self.bytes.store(st.bytes, Ordering::Relaxed);
        self.items.store(st.items, Ordering::Relaxed);
        drop(st);
        if stored > 0 {
            self.notify.notify_one();
        }
        Ok(stored)
    }

    /// Up to `max_items` items (and about `max_bytes`) from the front,
    /// left in place.
    pub fn peek(&self, max_items: usize, max_bytes: usize) -> Result<Vec<Entry>, ForwardError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            if v.len() < 8 {
                return Err(ForwardError::Corrupt(format!(
                    "queue item of {} bytes",
                    v.len()
                )));
            }
            bytes += v.len();
            out.push(Entry {
                seq: decode_seq(&k)?,
                data: v,
            });
            if out.len() >= max_items || bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Removes every item up to and including `last_seq`: the target has
    /// acknowledged them. Items already dropped by the overflow policy are
    /// simply not there any more.
    pub fn commit(&self, last_seq: u64) -> Result<u64, ForwardError> {
        let mut st = self.state.lock();
        let mut removed = 0u64;
        let mut batch = sled::Batch::default();
        for kv in self.tree.range(..=last_seq.to_be_bytes()) {
            let (k, v) = kv?;
            st.bytes -= v.len() as u64 + 8;
            st.items -= 1;
            removed += 1;
            batch.remove(k);
        }
        self.tree.apply_batch(batch)?;
        self.bytes.store(st.bytes, Ordering::Relaxed);
        self.items.store(st.items, Ordering::Relaxed);
        Ok(removed)
    }

    /// When the item at the front was queued.
    pub fn oldest_ms(&self) -> Option<i64> {
        let (_, v) = self.tree.first().ok()??;
        Some(i64::from_be_bytes(v.get(..8)?.try_into().ok()?))
    }
}

fn decode_seq(k: &[u8]) -> Result<u64, ForwardError> {
    k.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| ForwardError::Corrupt(format!("queue key of {} bytes", k.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_removes_only_acknowledged_and_reopen_resumes() {
        let db = store::Trees::temporary().unwrap();
        let q = Queue::open(&db, "t", 1 << 20, Overflow::DropOldest).unwrap();
        let items: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
        assert_eq!(q.push(&items, 5).unwrap(), 10);
        let front = q.peek(4, usize::MAX).unwrap();
        assert_eq!(front.len(), 4);
        assert_eq!(front[0].payload(), &[0u8; 10]);
        assert_eq!(q.oldest_ms(), Some(5));
        assert_eq!(q.commit(front[3].seq).unwrap(), 4);
        drop(q);
        let q = Queue::open(&db, "t", 1 << 20, Overflow::DropOldest).unwrap();
        assert_eq!(q.items.load(Ordering::Relaxed), 6);
        assert_eq!(q.bytes.load(Ordering::Relaxed), 6 * 26);
        let front = q.peek(100, usize::MAX).unwrap();
        assert_eq!(front[0].payload(), &[4u8; 10]);
        q.push(&[vec![99]], 6).unwrap();
        assert_eq!(q.peek(100, usize::MAX).unwrap().last().unwrap().seq, 10);
    }

    #[test]
    fn overflow_policies_do_what_they_say() {
        let db = store::Trees::temporary().unwrap();
        // Each item: 84 bytes of payload + 16 = 100 bytes; the cap holds 10.
        let items: Vec<Vec<u8>> = (0..15u8).map(|i| vec![i; 84]).collect();
        let q = Queue::open(&db, "old", 1000, Overflow::DropOldest).unwrap();
        q.push(&items, 0).unwrap();
        assert_eq!(q.dropped.load(Ordering::Relaxed), 5);
        let front = q.peek(100, usize::MAX).unwrap();
        assert_eq!(front.len(), 10);
        assert_eq!(front[0].payload()[0], 5, "the oldest five went");
        let q = Queue::open(&db, "new", 1000, Overflow::RejectNew).unwrap();
        assert_eq!(q.push(&items, 0).unwrap(), 10);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 5);
        let front = q.peek(100, usize::MAX).unwrap();
        assert_eq!(
            front.last().unwrap().payload()[0],
            9,
            "the newest five went"
        );
    }
}
