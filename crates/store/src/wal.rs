//! The write-ahead log: what the head holds that is not yet in a block.
//!
//! Writers append encoded records to an in-memory buffer while holding the
//! head lock, so the log's order is the head's order. A flusher writes and
//! `fdatasync`s the buffer every `storage.flush_interval`, which bounds what a
//! power cut can lose. A checkpoint rotates to a new segment; segments older
//! than a completed checkpoint are deleted. Files are appended sequentially,
//! which is what an SD card wears least from.
//!
//! Segment `wal/NNNNNNNNNNNN.wal`: records of `u32 len, u32 crc32, payload`.
//! Payload: `1` series definition (id, group, labels), `3` samples, or `2`
//! samples as format 2 wrote them (still read).
//!
//! Samples (`3`): a count, then per sample the zigzag varint differences of
//! the series id and the timestamp from the previous sample's, and the
//! value: a varint `zigzag(m) << 3 | s` for a value that is exactly
//! `m / 10^s` (s ≤ 6: the decimals sensors send), or `7` followed by the
//! 8 raw bytes. A 10 s sensor reading with two decimals takes 5 bytes
//! rather than format 2's 11 to 12 — what an SD card is written per sample
//! until a checkpoint.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use std::sync::Arc;

use super::codec::decimal::{exact_decimal, POW10};
use super::encoding::{
    get_bytes, get_ivarint, get_uvarint, put_bytes, put_ivarint, put_uvarint, take, unzigzag,
    zigzag, VarintError,
};
use super::labels::Labels;
use super::space::Budget;
use super::{GroupId, SeriesId};

const REC_SERIES: u8 = 1;
/// Samples as format 2 wrote them: id, timestamp delta, raw value.
const REC_SAMPLES_RAW: u8 = 2;
const REC_SAMPLES: u8 = 3;
/// Value tag: the 8 raw bytes follow; tags below are decimal scales.
const VALUE_RAW: u64 = 7;
/// A record longer than this is corrupt: the writer splits batches well below.
const MAX_RECORD: usize = 64 << 20;

pub enum WalRecord {
    Series {
        id: SeriesId,
        group: GroupId,
        labels: Labels,
    },
    Samples(Vec<(SeriesId, i64, f64)>),
}

struct Segment {
    id: u64,
    file: File,
}

pub struct Wal {
    dir: PathBuf,
    /// Encoded records not yet written to the segment.
    buffer: Mutex<Vec<u8>>,
    /// The open segment; also held while swapping the buffer out, so flushes
    /// and rotations never reorder records.
    segment: Mutex<Segment>,
    /// Bytes appended to the buffer since start, and bytes made durable.
    appended: Mutex<u64>,
    durable: tokio::sync::watch::Sender<u64>,
    /// Buffered bytes are pending in the disk budget until written.
    budget: Arc<Budget>,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:012}.wal"))
}

/// Lists segment ids in order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let name = e?.file_name();
                let name = name.to_string_lossy();
                if let Some(id) = name.strip_suffix(".wal").and_then(|s| s.parse().ok()) {
                    ids.push(id);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    ids.sort_unstable();
    Ok(ids)
}

/// What replaying one segment found.
#[derive(Debug, Default)]
pub struct ReplayStats {
    pub records: usize,
    pub samples: usize,
    /// Bytes at the end of a segment that did not form a whole, valid record
    /// (a write cut by a crash); they are ignored.
    pub torn_bytes: u64,
}

/// Reads every valid record of a segment, stopping at the first torn or
/// corrupt one.
pub fn read_segment(path: &Path, f: impl FnMut(WalRecord)) -> io::Result<ReplayStats> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(read_records(&data, f))
}

/// [`read_segment`] over a segment's bytes.
pub fn read_records(data: &[u8], mut f: impl FnMut(WalRecord)) -> ReplayStats {
    let mut stats = ReplayStats::default();
    let mut rest = data;
    while rest.len() >= 8 {
        let len = u32::from_le_bytes(rest[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
        if len > MAX_RECORD || rest.len() < 8 + len {
            break;
        }
        let payload = &rest[8..8 + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match decode_record(payload) {
            Ok(rec) => {
                if let WalRecord::Samples(s) = &rec {
                    stats.samples += s.len();
                }
                stats.records += 1;
                f(rec);
            }
            Err(_) => break,
        }
        rest = &rest[8 + len..];
    }
    stats.torn_bytes = rest.len() as u64;
    stats
}

fn decode_record(mut p: &[u8]) -> Result<WalRecord, VarintError> {
    let kind = take(&mut p, 1)?[0];
    match kind {
        REC_SERIES => {
            let id = get_uvarint(&mut p)? as SeriesId;
            let group = get_uvarint(&mut p)? as GroupId;
            let n = get_uvarint(&mut p)? as usize;
            if n > 1024 {
                return Err(VarintError);
            }
            let mut pairs = Vec::with_capacity(n);
            for _ in 0..n {
                let name = String::from_utf8_lossy(get_bytes(&mut p)?).into_owned();
                let value = String::from_utf8_lossy(get_bytes(&mut p)?).into_owned();
                pairs.push((name, value));
            }
            Ok(WalRecord::Series {
                id,
                group,
                labels: Labels::from_pairs(pairs),
            })
        }
        REC_SAMPLES => {
            let n = get_uvarint(&mut p)? as usize;
            // Every sample takes at least 3 bytes; the writer puts at most
            // 65 536 in a record.
            if n > p.len() / 3 || n > 65_536 {
                return Err(VarintError);
            }
            let mut out = Vec::with_capacity(n);
            let (mut prev_id, mut prev_ts) = (0i64, 0i64);
            for _ in 0..n {
                let id = prev_id.wrapping_add(get_ivarint(&mut p)?);
                prev_id = id;
                let ts = prev_ts.wrapping_add(get_ivarint(&mut p)?);
                prev_ts = ts;
                let tag = get_uvarint(&mut p)?;
                let v = match tag & 7 {
                    VALUE_RAW => f64::from_bits(u64::from_le_bytes(
                        take(&mut p, 8)?.try_into().map_err(|_| VarintError)?,
                    )),
                    scale => unzigzag(tag >> 3) as f64 / POW10[scale as usize],
                };
                out.push((SeriesId::try_from(id).map_err(|_| VarintError)?, ts, v));
            }
            Ok(WalRecord::Samples(out))
        }
        REC_SAMPLES_RAW => {
            let n = get_uvarint(&mut p)? as usize;
            if n > p.len() {
                return Err(VarintError);
            }
            let mut out = Vec::with_capacity(n);
            let mut prev_ts = 0i64;
            for _ in 0..n {
                let id = get_uvarint(&mut p)? as SeriesId;
                let ts = prev_ts.wrapping_add(get_ivarint(&mut p)?);
                prev_ts = ts;
                let v = f64::from_bits(u64::from_le_bytes(take(&mut p, 8)?.try_into().unwrap()));
                out.push((id, ts, v));
            }
            Ok(WalRecord::Samples(out))
        }
        _ => Err(VarintError),
    }
}

/// Samples as framed WAL records of bounded size, ready for
/// [`Wal::append_encoded`]: the caller learns their exact size on disk first.
pub fn encode_samples(samples: &[(SeriesId, i64, f64)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(samples.len() * 6 + 16);
    let mut p = Vec::with_capacity(samples.len().min(65536) * 6 + 8);
    for chunk in samples.chunks(65536) {
        p.clear();
        p.push(REC_SAMPLES);
        put_uvarint(&mut p, chunk.len() as u64);
        let (mut prev_id, mut prev_ts) = (0i64, 0i64);
        for &(id, ts, v) in chunk {
            put_ivarint(&mut p, (id as i64).wrapping_sub(prev_id));
            prev_id = id as i64;
            put_ivarint(&mut p, ts.wrapping_sub(prev_ts));
            prev_ts = ts;
            match exact_decimal(v, VALUE_RAW as usize - 1) {
                Some((m, scale)) => put_uvarint(&mut p, zigzag(m) << 3 | scale as u64),
                None => {
                    put_uvarint(&mut p, VALUE_RAW);
                    p.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
        frame(&mut out, &p);
    }
    out
}

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

impl Wal {
    /// Opens a new segment after the existing ones (which the caller replays
    /// and deletes once a checkpoint covers them).
    pub fn open(dir: &Path, budget: Arc<Budget>) -> io::Result<Wal> {
        fs::create_dir_all(dir)?;
        let next = list_segments(dir)?.last().map_or(1, |l| l + 1);
        let file = create_segment(dir, next)?;
        let (durable, _) = tokio::sync::watch::channel(0);
        Ok(Wal {
            dir: dir.to_path_buf(),
            buffer: Mutex::new(Vec::with_capacity(1 << 16)),
            segment: Mutex::new(Segment { id: next, file }),
            appended: Mutex::new(0),
            durable,
            budget,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn current_segment(&self) -> u64 {
        self.segment.lock().id
    }

    /// Appends a series definition; returns the log position after it.
    pub fn append_series(&self, id: SeriesId, group: GroupId, labels: &Labels) -> u64 {
        let mut p = Vec::with_capacity(64);
        p.push(REC_SERIES);
        put_uvarint(&mut p, id as u64);
        put_uvarint(&mut p, group as u64);
        put_uvarint(&mut p, labels.len() as u64);
        for l in labels.iter() {
            put_bytes(&mut p, l.name.as_bytes());
            put_bytes(&mut p, l.value.as_bytes());
        }
        self.append_payload(&p)
    }

    /// Appends samples in records of bounded size; returns the log position.
    #[cfg(test)]
    pub fn append_samples(&self, samples: &[(SeriesId, i64, f64)]) -> u64 {
        self.append_encoded(&encode_samples(samples))
    }

    /// Appends records from [`encode_samples`]; returns the log position.
    pub fn append_encoded(&self, records: &[u8]) -> u64 {
        let mut buf = self.buffer.lock();
        buf.extend_from_slice(records);
        self.budget.add_pending(records.len() as u64);
        let mut a = self.appended.lock();
        *a += records.len() as u64;
        *a
    }

    fn append_payload(&self, payload: &[u8]) -> u64 {
        let mut buf = self.buffer.lock();
        frame(&mut buf, payload);
        self.budget.add_pending(8 + payload.len() as u64);
        let mut a = self.appended.lock();
        *a += 8 + payload.len() as u64;
        *a
    }

    /// Bytes waiting for the next flush.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.lock().len()
    }

    /// Bytes of records appended since start.
    pub fn appended_bytes(&self) -> u64 {
        *self.appended.lock()
    }

    /// Heap bytes of the buffer (its capacity: it is reused between flushes).
    pub fn buffer_bytes(&self) -> usize {
        self.buffer.lock().capacity()
    }

    /// Writes the buffer to the open segment and syncs it.
    pub fn flush(&self) -> io::Result<()> {
        let mut seg = self.segment.lock();
        let pos = self.write_out(&mut seg)?;
        // Synced even when nothing is pending: a previous sync may have failed.
        seg.file.sync_data()?;
        self.durable.send_replace(pos);
        Ok(())
    }

    /// Moves the buffer into the open segment; returns the log position it
    /// covers. On failure the segment is cut back to where it was (a torn
    /// record in the middle would hide every later one from replay) and the
    /// records go back to the front of the buffer for the next attempt.
    fn write_out(&self, seg: &mut Segment) -> io::Result<u64> {
        let (data, pos) = {
            let mut buf = self.buffer.lock();
            let pos = *self.appended.lock();
            (
                std::mem::replace(&mut *buf, Vec::with_capacity(1 << 16)),
                pos,
            )
        };
        if data.is_empty() {
            return Ok(pos);
        }
        let len_before = seg.file.metadata()?.len();
        // Counted as written before the write, as pending until it is done.
        let _writing = self.budget.writing(data.len() as u64);
        if let Err(e) = seg.file.write_all(&data) {
            let _ = seg.file.set_len(len_before);
            let mut buf = self.buffer.lock();
            let newer = std::mem::replace(&mut *buf, data);
            buf.extend_from_slice(&newer);
            return Err(e);
        }
        self.budget.settle_pending(data.len() as u64);
        Ok(pos)
    }

    /// Starts a new segment; everything appended before this call is in
    /// (synced) segments with ids lower than the returned one.
    pub fn rotate(&self) -> io::Result<u64> {
        let mut seg = self.segment.lock();
        let pos = self.write_out(&mut seg)?;
        seg.file.sync_data()?;
        let next = seg.id + 1;
        seg.file = create_segment(&self.dir, next)?;
        seg.id = next;
        self.durable.send_replace(pos);
        Ok(next)
    }

    /// Deletes segments older than `before`.
    pub fn remove_before(&self, before: u64) -> io::Result<()> {
        for id in list_segments(&self.dir)? {
            if id < before {
                fs::remove_file(segment_path(&self.dir, id))?;
            }
        }
        Ok(())
    }

    /// A receiver that sees the durable position advance.
    pub fn durable_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.durable.subscribe()
    }

    #[cfg(test)]
    pub fn size_on_disk(&self) -> u64 {
        list_segments(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| fs::metadata(segment_path(&self.dir, id)).ok())
            .map(|m| m.len())
            .sum()
    }
}

pub fn segment_file(dir: &Path, id: u64) -> PathBuf {
    segment_path(dir, id)
}

fn create_segment(dir: &Path, id: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, id))?;
    // Make the new file's directory entry durable, or a crash could lose it.
    File::open(dir)?.sync_all()?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_torn_tails_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), Arc::new(Budget::new(u64::MAX))).unwrap();
        wal.append_series(1, 1, &Labels::from_pairs([("__name__", "m"), ("a", "b")]));
        wal.append_samples(&[(1, 1000, 1.5), (1, 2000, f64::NAN), (1, 500, -2.0)]);
        wal.flush().unwrap();
        let seg = wal.current_segment();
        let path = segment_path(dir.path(), seg);
        // A torn write at the end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        let mut got = Vec::new();
        let stats = read_segment(&path, |r| got.push(r)).unwrap();
        assert_eq!(stats.records, 2);
        assert_eq!(stats.samples, 3);
        assert_eq!(stats.torn_bytes, 6);
        match &got[1] {
            WalRecord::Samples(s) => {
                assert_eq!(s[0], (1, 1000, 1.5));
                assert!(s[1].2.is_nan());
                assert_eq!(s[2], (1, 500, -2.0));
            }
            _ => panic!("expected samples"),
        }
    }

    /// Every value comes back with its exact bits; decimals take few bytes.
    #[test]
    fn sample_values_round_trip_and_decimals_are_small() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            21.53,
            -40.25,
            0.1 + 0.2,
            1e-7,
            123456.789,
            3977560064.0,
            9007199254740993.0,
            1e300,
            f64::MIN_POSITIVE / 3.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::from_bits(0x7ff8_0000_0000_0002), // Prometheus' stale marker
            f64::from_bits(0xfff0_0000_0000_0001),
            f64::MAX,
        ];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(f64::from_bits(x));
            values.push((x % 100_000) as f64 / 100.0);
        }
        let samples: Vec<(SeriesId, i64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                (
                    (i * 7919 % 50_000) as SeriesId,
                    1_767_225_600_000 - i as i64,
                    v,
                )
            })
            .collect();
        let mut got = Vec::new();
        let stats = read_records(&encode_samples(&samples), |r| {
            if let WalRecord::Samples(s) = r {
                got.extend(s);
            }
        });
        assert_eq!(stats.torn_bytes, 0);
        assert_eq!(got.len(), samples.len());
        for (a, b) in samples.iter().zip(&got) {
            assert_eq!(
                (a.0, a.1, a.2.to_bits()),
                (b.0, b.1, b.2.to_bits()),
                "{a:?}"
            );
        }
        // 10 000 series of two-decimal readings (as parsed from text) at one
        // time: 5 bytes each.
        let readings: Vec<(SeriesId, i64, f64)> = (0..10_000)
            .map(|i| (i, 1_767_225_600_000, (2000 + i % 1000) as f64 / 100.0))
            .collect();
        let bytes = encode_samples(&readings).len();
        assert!(bytes <= 5 * readings.len() + 16, "{bytes} bytes");
    }

    /// Segments written by format 2 (raw values) still replay.
    #[test]
    fn format_2_sample_records_still_replay() {
        let mut p = vec![REC_SAMPLES_RAW];
        put_uvarint(&mut p, 2);
        for (id, dts, v) in [(5u64, 1000i64, 1.5f64), (9, -10, f64::NAN)] {
            put_uvarint(&mut p, id);
            put_ivarint(&mut p, dts);
            p.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        let mut data = Vec::new();
        frame(&mut data, &p);
        let mut got = Vec::new();
        read_records(&data, |r| {
            if let WalRecord::Samples(s) = r {
                got.extend(s);
            }
        });
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (5, 1000, 1.5));
        assert_eq!((got[1].0, got[1].1), (9, 990));
        assert!(got[1].2.is_nan());
    }

    #[test]
    fn rotation_splits_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::open(dir.path(), Arc::new(Budget::new(u64::MAX))).unwrap();
        wal.append_samples(&[(1, 1, 1.0)]);
        let next = wal.rotate().unwrap();
        wal.append_samples(&[(1, 2, 2.0)]);
        wal.flush().unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![next - 1, next]);
        wal.remove_before(next).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![next]);
    }
}
