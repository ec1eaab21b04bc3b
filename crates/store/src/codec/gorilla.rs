//! The Gorilla codec (Pelkonen et al., VLDB 2015): delta-of-delta timestamps in
//! variable-width buckets and XOR-compressed floats. Kept as the baseline that
//! `perch bench codecs` measures against, and used for tiny columns where it
//! beats pco's fixed overhead.

use super::bits::{BitReader, BitWriter};
use super::{check_count, CodecError, CodecId, ColumnCodec};

pub struct Gorilla;

/// (prefix bits, prefix value, payload width) for delta-of-delta buckets,
/// the widths Prometheus uses for millisecond timestamps.
const DOD_BUCKETS: [(u8, u64, u8); 3] = [(2, 0b10, 14), (3, 0b110, 17), (4, 0b1110, 20)];

impl ColumnCodec for Gorilla {
    const ID: CodecId = CodecId::Gorilla;

    fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut w = BitWriter::default();
        let mut prev = 0i64;
        let mut prev_delta = 0i64;
        for (i, &t) in ts.iter().enumerate() {
            if i == 0 {
                w.write_bits(t as u64, 64);
            } else {
                let delta = t.wrapping_sub(prev);
                let dod = delta.wrapping_sub(prev_delta);
                write_dod(&mut w, dod);
                prev_delta = delta;
            }
            prev = t;
        }
        out.extend_from_slice(&w.into_bytes());
        Ok(())
    }

    fn decode_timestamps(data: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
        check_count(n)?;
        let mut r = BitReader::new(data);
        let mut prev = 0i64;
        let mut prev_delta = 0i64;
        for i in 0..n {
            let t = if i == 0 {
                r.read_bits(64)? as i64
            } else {
                let delta = prev_delta.wrapping_add(read_dod(&mut r)?);
                prev_delta = delta;
                prev.wrapping_add(delta)
            };
            out.push(t);
            prev = t;
        }
        Ok(())
    }

    fn encode_values(values: &[f64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut w = BitWriter::default();
        let mut prev = 0u64;
        // The leading/trailing window of the previous non-zero XOR; 0xff marks none yet.
        let (mut lead, mut trail) = (0xffu8, 0u8);
        for (i, v) in values.iter().enumerate() {
            let bits = v.to_bits();
            if i == 0 {
                w.write_bits(bits, 64);
            } else {
                let x = bits ^ prev;
                if x == 0 {
                    w.write_bit(false);
                } else {
                    w.write_bit(true);
                    let l = (x.leading_zeros() as u8).min(31);
                    let t = x.trailing_zeros() as u8;
                    if lead != 0xff && l >= lead && t >= trail {
                        w.write_bit(false);
                        w.write_bits(x >> trail, 64 - lead - trail);
                    } else {
                        w.write_bit(true);
                        w.write_bits(l as u64, 5);
                        let sig = 64 - l - t;
                        // 64 significant bits are written as 0 in 6 bits.
                        w.write_bits((sig % 64) as u64, 6);
                        w.write_bits(x >> t, sig);
                        lead = l;
                        trail = t;
                    }
                }
            }
            prev = bits;
        }
        out.extend_from_slice(&w.into_bytes());
        Ok(())
    }

    fn decode_values(data: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
        check_count(n)?;
        let mut r = BitReader::new(data);
        let mut prev = 0u64;
        let (mut lead, mut trail) = (0xffu8, 0u8);
        for i in 0..n {
            let bits = if i == 0 {
                r.read_bits(64)?
            } else if !r.read_bit()? {
                prev
            } else if !r.read_bit()? {
                if lead == 0xff {
                    return Err(CodecError::Corrupt(
                        "gorilla reuses an absent window".into(),
                    ));
                }
                prev ^ (r.read_bits(64 - lead - trail)? << trail)
            } else {
                let l = r.read_bits(5)? as u8;
                let sig = match r.read_bits(6)? as u8 {
                    0 => 64,
                    s => s,
                };
                if l as u16 + sig as u16 > 64 {
                    return Err(CodecError::Corrupt("gorilla window exceeds 64 bits".into()));
                }
                let t = 64 - l - sig;
                lead = l;
                trail = t;
                prev ^ (r.read_bits(sig)? << t)
            };
            out.push(f64::from_bits(bits));
            prev = bits;
        }
        Ok(())
    }
}

fn write_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.write_bit(false);
        return;
    }
    for &(prefix_len, prefix, width) in &DOD_BUCKETS {
        let half = 1i64 << (width - 1);
        if (-half + 1..=half).contains(&dod) {
            w.write_bits(prefix, prefix_len);
            w.write_bits((dod as u64) & ((1u64 << width) - 1), width);
            return;
        }
    }
    w.write_bits(0b1111, 4);
    w.write_bits(dod as u64, 64);
}

fn read_dod(r: &mut BitReader) -> Result<i64, CodecError> {
    let mut ones = 0;
    while ones < 4 && r.read_bit()? {
        ones += 1;
    }
    if ones == 0 {
        return Ok(0);
    }
    if ones == 4 {
        return Ok(r.read_bits(64)? as i64);
    }
    let width = DOD_BUCKETS[ones - 1].2;
    let raw = r.read_bits(width)?;
    // Sign-extend from `width` bits. A bucket holds -2^(width-1)+1 ..=
    // 2^(width-1) (`write_dod`), so the one pattern that sign-extends to
    // -2^(width-1) is +2^(width-1): read as negative, it moved a timestamp
    // by twice that (found by fuzzing; blocks written before read right now).
    let shift = 64 - width as u32;
    let dod = ((raw << shift) as i64) >> shift;
    Ok(if dod == -(1i64 << (width - 1)) {
        -dod
    } else {
        dod
    })
}
