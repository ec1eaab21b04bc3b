//! What a queue item holds, encoded compactly (all integers little-endian):
//!
//! ```text
//! samples: 1, u32 series count, series*
//!   series: u16 label count, (u16 len, name, u32 len, value)*, u32 n, (i64 ts, f64 v)*
//! message: 2, u16 topic len, topic, u8 qos, u8 retain, i64 time ms, payload (rest)
//! ```

use super::ForwardError;

const SAMPLES: u8 = 1;
const MESSAGE: u8 = 2;

/// Builds one samples item out of several series (those of one append).
pub struct SamplesWriter {
    buf: Vec<u8>,
    series: u32,
    samples: u64,
}

impl Default for SamplesWriter {
    fn default() -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.push(SAMPLES);
        buf.extend_from_slice(&0u32.to_le_bytes());
        SamplesWriter {
            buf,
            series: 0,
            samples: 0,
        }
    }
}

impl SamplesWriter {
    /// Adds a series unless it has no samples.
    pub fn add<'a>(
        &mut self,
        label_count: usize,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
        samples: impl Iterator<Item = (i64, f64)>,
    ) {
        let mark = self.buf.len();
        let n = encode_series(label_count, labels, samples, &mut self.buf);
        if n == 0 {
            self.buf.truncate(mark);
        } else {
            self.series += 1;
            self.samples += n as u64;
        }
    }

    /// Adds a series of the store unless it has no samples.
    pub fn add_labels(
        &mut self,
        labels: &store::Labels,
        samples: impl Iterator<Item = (i64, f64)>,
    ) {
        self.add(
            labels.len(),
            labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            samples,
        );
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The item, or None when no series had samples.
    pub fn finish(mut self) -> Option<Vec<u8>> {
        if self.series == 0 {
            return None;
        }
        self.buf[1..5].copy_from_slice(&self.series.to_le_bytes());
        Some(self.buf)
    }
}

/// Appends one series to `out`; returns the number of samples written.
fn encode_series<'a>(
    label_count: usize,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
    samples: impl Iterator<Item = (i64, f64)>,
    out: &mut Vec<u8>,
) -> u32 {
    out.extend_from_slice(&(label_count as u16).to_le_bytes());
    for (n, v) in labels {
        out.extend_from_slice(&(n.len() as u16).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut n = 0u32;
    for (t, v) in samples {
        out.extend_from_slice(&t.to_le_bytes());
        out.extend_from_slice(&v.to_le_bytes());
        n += 1;
    }
    out[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes());
    n
}

pub fn encode_message(topic: &str, qos: u8, retain: bool, time_ms: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(topic.len() + payload.len() + 16);
    out.push(MESSAGE);
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.push(qos);
    out.push(retain as u8);
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A decoded samples item.
#[derive(Debug, PartialEq)]
pub struct Samples {
    /// Sorted by name (as storage keeps them).
    pub labels: Vec<(String, String)>,
    pub samples: Vec<(i64, f64)>,
}

/// A decoded message item.
#[derive(Debug, PartialEq)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub qos: u8,
    pub retain: bool,
    pub time_ms: i64,
    pub payload: &'a [u8],
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ForwardError> {
        if self.0.len() < n {
            return Err(ForwardError::Corrupt("truncated queue item".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ForwardError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ForwardError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, ForwardError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, ForwardError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn str(&mut self, n: usize) -> Result<&'a str, ForwardError> {
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| ForwardError::Corrupt("queue item with invalid UTF-8".into()))
    }
}

pub fn decode_samples(data: &[u8]) -> Result<Vec<Samples>, ForwardError> {
    let mut r = Reader(data);
    if r.u8()? != SAMPLES {
        return Err(ForwardError::Corrupt("not a samples item".into()));
    }
    let count = r.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        out.push(decode_series(&mut r)?);
    }
    if !r.0.is_empty() {
        return Err(ForwardError::Corrupt(
            "samples item of the wrong length".into(),
        ));
    }
    Ok(out)
}

/// Samples in an item, skipping over labels and values.
pub fn count_samples(data: &[u8]) -> Result<u64, ForwardError> {
    let mut r = Reader(data);
    if r.u8()? != SAMPLES {
        return Err(ForwardError::Corrupt("not a samples item".into()));
    }
    let mut total = 0u64;
    for _ in 0..r.u32()? {
        for _ in 0..r.u16()? {
            let n = r.u16()? as usize;
            r.take(n)?;
            let n = r.u32()? as usize;
            r.take(n)?;
        }
        let n = r.u32()? as usize;
        r.take(n.saturating_mul(16))?;
        total += n as u64;
    }
    Ok(total)
}

fn decode_series(r: &mut Reader<'_>) -> Result<Samples, ForwardError> {
    let n = r.u16()? as usize;
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u16()? as usize;
        let name = r.str(len)?.to_string();
        let len = r.u32()? as usize;
        labels.push((name, r.str(len)?.to_string()));
    }
    let n = r.u32()? as usize;
    if r.0.len() < n.saturating_mul(16) {
        return Err(ForwardError::Corrupt("truncated samples item".into()));
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = r.u64()? as i64;
        samples.push((t, f64::from_bits(r.u64()?)));
    }
    Ok(Samples { labels, samples })
}

/// Decoded queue items, samples of the same series brought together in
/// queue order.
pub fn merge_samples(entries: &[super::queue::Entry]) -> Result<Vec<Samples>, ForwardError> {
    let mut out: Vec<Samples> = Vec::new();
    let mut at: rustc_hash::FxHashMap<Vec<(String, String)>, usize> = Default::default();
    for e in entries {
        for s in decode_samples(e.payload())? {
            match at.get(&s.labels) {
                Some(&i) => out[i].samples.extend(s.samples),
                None => {
                    at.insert(s.labels.clone(), out.len());
                    out.push(s);
                }
            }
        }
    }
    Ok(out)
}

pub fn decode_message(data: &[u8]) -> Result<Message<'_>, ForwardError> {
    let mut r = Reader(data);
    if r.u8()? != MESSAGE {
        return Err(ForwardError::Corrupt("not a message item".into()));
    }
    let n = r.u16()? as usize;
    let topic = r.str(n)?;
    let qos = r.u8()?;
    let retain = r.u8()? != 0;
    let time_ms = r.u64()? as i64;
    Ok(Message {
        topic,
        qos,
        retain,
        time_ms,
        payload: r.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_roundtrip() {
        let mut w = SamplesWriter::default();
        w.add(
            2,
            [("__name__", "t"), ("site", "é")].into_iter(),
            [(1, 2.5), (-3, f64::NAN)].into_iter(),
        );
        w.add(1, [("__name__", "empty")].into_iter(), std::iter::empty());
        w.add(
            1,
            [("__name__", "u")].into_iter(),
            std::iter::once((9, 1.0)),
        );
        assert_eq!(w.samples(), 3);
        let b = w.finish().unwrap();
        let v = decode_samples(&b).unwrap();
        assert_eq!(v.len(), 2, "the series without samples is left out");
        let s = &v[0];
        assert_eq!(s.labels[1], ("site".into(), "é".into()));
        assert_eq!(s.samples[0], (1, 2.5));
        assert!(s.samples[1].1.is_nan());
        assert_eq!(v[1].samples, vec![(9, 1.0)]);
        assert_eq!(count_samples(&b).unwrap(), 3);
        assert!(decode_samples(&b[..b.len() - 1]).is_err());
        assert!(SamplesWriter::default().finish().is_none());
        let m = encode_message("a/b", 1, true, 7, b"xyz");
        let d = decode_message(&m).unwrap();
        assert_eq!(
            d,
            Message {
                topic: "a/b",
                qos: 1,
                retain: true,
                time_ms: 7,
                payload: b"xyz"
            }
        );
        assert!(decode_samples(&m).is_err());
        assert!(decode_message(&m[..3]).is_err());
    }
}
