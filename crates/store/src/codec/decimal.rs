//! Decimal-aware values: sensors send short decimals (`21.53`, `40.2`, `612`),
//! which are integers times a power of ten. Scaling them to integers lets pco
//! delta-code and entropy-code exact steps instead of float bit patterns — on
//! `gen_sensors.py --profile rounded` this is 10% smaller than pco on floats and
//! four times smaller than Gorilla (see `docs/storage.md`).
//!
//! Layout: scale `k` (u8), exception count (varint), exceptions as
//! (index delta varint, raw f64 bits LE), then the pco column of `round(v·10^k)`.
//! A value is an exception when `n / 10^k` does not give back its exact bits
//! (NaN, ±Inf, -0.0, or a longer decimal than the column's scale).

use super::{CodecError, CodecId, ColumnCodec, Pco};
use crate::encoding::{get_uvarint, put_uvarint};

pub struct Decimal;

/// Exact in f64, so `n as f64 / POW10[k]` decodes the same on every machine.
pub(crate) const POW10: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
const MAX_EXACT: f64 = (1u64 << 53) as f64;

/// The integer that stands for `v` at scale `p` (a power of ten), if `v`
/// round-trips through it exactly. Checks exactly what the decoder will
/// compute (this also sends -0.0, which becomes integer 0, to the
/// exceptions), and that the integer is exact in an f64.
fn scaled(v: f64, p: f64) -> Option<i64> {
    let n = (v * p).round();
    if n.is_nan() || n.abs() >= MAX_EXACT {
        return None;
    }
    ((n as i64) as f64 / p)
        .to_bits()
        .eq(&v.to_bits())
        .then_some(n as i64)
}

/// `(n, k)` with `v` exactly `n / 10^k` for the smallest scale `k` up to
/// `max_scale` (below 10), if there is one: the WAL's decimal sample values
/// use it as this codec does.
pub(crate) fn exact_decimal(v: f64, max_scale: usize) -> Option<(i64, u8)> {
    if !v.is_finite() {
        return None;
    }
    for (k, &p) in POW10.iter().enumerate().take(max_scale + 1) {
        if (v * p).round().abs() >= MAX_EXACT {
            return None;
        }
        if let Some(n) = scaled(v, p) {
            return Some((n, k as u8));
        }
    }
    None
}

/// The smallest scale at which `v` round-trips exactly, if any.
fn min_scale(v: f64) -> Option<u8> {
    exact_decimal(v, POW10.len() - 1).map(|(_, k)| k)
}

impl ColumnCodec for Decimal {
    const ID: CodecId = CodecId::Decimal;

    fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        Pco::encode_timestamps(ts, out)
    }

    fn decode_timestamps(data: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
        Pco::decode_timestamps(data, n, out)
    }

    fn encode_values(values: &[f64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        // Histogram of the scale each value needs; index 10 counts the values
        // that need none (exceptions at any scale).
        let mut needs = [0usize; POW10.len() + 1];
        let scales: Vec<Option<u8>> = values.iter().map(|&v| min_scale(v)).collect();
        for s in &scales {
            needs[s.map_or(POW10.len(), |k| k as usize)] += 1;
        }
        // Allow up to 1/64 of the column as exceptions before giving up.
        let budget = values.len() / 64;
        let mut above = values.len();
        let mut scale = None;
        for (k, &count) in needs.iter().take(POW10.len()).enumerate() {
            above -= count;
            if above <= budget {
                scale = Some(k);
                break;
            }
        }
        let k = scale.ok_or(CodecError::Unsuited)?;
        let p = POW10[k];
        let mut ints = Vec::with_capacity(values.len());
        let mut exceptions = Vec::new();
        let mut prev = 0i64;
        for (i, (&v, s)) in values.iter().zip(&scales).enumerate() {
            // A value of a smaller scale can still be too large for the
            // column's: 5.7e14 is exact at scale 0 but not as 5.7e19 at
            // scale 5 (which once saturated and read back as -9.2e13).
            let at_column_scale = match s {
                Some(sk) if *sk as usize <= k => scaled(v, p),
                _ => None,
            };
            match at_column_scale {
                Some(n) => {
                    prev = n;
                    ints.push(prev);
                }
                None => {
                    exceptions.push((i, v.to_bits()));
                    // Repeat the previous integer so the delta stream stays smooth.
                    ints.push(prev);
                }
            }
        }
        out.push(k as u8);
        put_uvarint(out, exceptions.len() as u64);
        let mut last = 0usize;
        for (i, bits) in exceptions {
            put_uvarint(out, (i - last) as u64);
            out.extend_from_slice(&bits.to_le_bytes());
            last = i;
        }
        Pco::encode(&ints, out)
    }

    fn decode_values(data: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
        super::check_count(n)?;
        let corrupt = |what: &str| CodecError::Corrupt(format!("decimal column: {what}"));
        let (&k, mut rest) = data.split_first().ok_or_else(|| corrupt("empty"))?;
        let p = *POW10.get(k as usize).ok_or_else(|| corrupt("bad scale"))?;
        let count = get_uvarint(&mut rest).map_err(|_| corrupt("bad exception count"))? as usize;
        if count > n {
            return Err(corrupt("more exceptions than items"));
        }
        let mut exceptions = Vec::with_capacity(count);
        let mut idx = 0usize;
        for _ in 0..count {
            idx = idx
                .checked_add(get_uvarint(&mut rest).map_err(|_| corrupt("bad index"))? as usize)
                .ok_or_else(|| corrupt("index overflow"))?;
            if idx >= n || rest.len() < 8 {
                return Err(corrupt("exception out of range"));
            }
            let (b, r) = rest.split_at(8);
            exceptions.push((
                idx,
                f64::from_bits(u64::from_le_bytes(b.try_into().unwrap())),
            ));
            rest = r;
        }
        let mut ints = Vec::with_capacity(n);
        Pco::decode::<i64>(rest, n, &mut ints)?;
        let start = out.len();
        out.extend(ints.iter().map(|&i| i as f64 / p));
        for (i, v) in exceptions {
            out[start + i] = v;
        }
        Ok(())
    }
}
