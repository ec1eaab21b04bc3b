//! Column codecs for sealed blocks: one small module per codec, each able to
//! encode and decode a column of timestamps (`i64` ms) and a column of values
//! (`f64`), in the manner of Prometheus' `tsdb/chunkenc`.
//!
//! The choice between them is made per column by [`encode_timestamps`] and
//! [`encode_values`]; `docs/storage.md` has the measurements behind it. Decoding
//! never panics on corrupt input: every codec returns [`CodecError`].

mod bits;
pub(crate) mod decimal;
mod gorilla;
mod pco_codec;
mod raw;

use thiserror::Error;

pub use decimal::Decimal;
pub use gorilla::Gorilla;
pub use pco_codec::Pco;
pub use raw::Raw;

/// Why a column could not be encoded or decoded.
#[derive(Debug, Error)]
pub enum CodecError {
    /// The codec cannot represent this column (for example non-decimal values
    /// for the decimal codec); the caller falls back to another codec.
    #[error("column not suited to this codec")]
    Unsuited,
    #[error("corrupt column: {0}")]
    Corrupt(String),
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
}

impl base::HasKind for CodecError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        let _ = self;
        K::DataLoss
    }
}

/// Stable identifiers written into blocks; never renumber them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CodecId {
    Raw = 0,
    Gorilla = 1,
    Pco = 2,
    Decimal = 3,
}

impl CodecId {
    pub fn from_u8(b: u8) -> Result<Self, CodecError> {
        Ok(match b {
            0 => CodecId::Raw,
            1 => CodecId::Gorilla,
            2 => CodecId::Pco,
            3 => CodecId::Decimal,
            other => return Err(CodecError::UnknownCodec(other)),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CodecId::Raw => "raw",
            CodecId::Gorilla => "gorilla",
            CodecId::Pco => "pco",
            CodecId::Decimal => "decimal+pco",
        }
    }
}

/// The interface every codec implements. Encoders append to `out`; decoders
/// append exactly `n` items to `out` or fail.
pub trait ColumnCodec {
    const ID: CodecId;
    fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) -> Result<(), CodecError>;
    fn decode_timestamps(data: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), CodecError>;
    fn encode_values(values: &[f64], out: &mut Vec<u8>) -> Result<(), CodecError>;
    fn decode_values(data: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError>;
}

/// Below this many items the fixed overhead of pco dominates, so the small
/// codecs are tried too and the shortest output wins.
const SMALL_COLUMN: usize = 24;

/// Encodes a timestamp column with the codec that measured best for it.
pub fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) -> CodecId {
    let start = out.len();
    if Pco::encode_timestamps(ts, out).is_err() {
        out.truncate(start);
        Raw::encode_timestamps(ts, out).expect("raw encoding is infallible");
        return CodecId::Raw;
    }
    if ts.len() < SMALL_COLUMN {
        return keep_shortest(out, start, CodecId::Pco, |o| {
            Gorilla::encode_timestamps(ts, o).map(|_| CodecId::Gorilla)
        });
    }
    CodecId::Pco
}

/// Encodes a value column: decimal-scaled integers when every value is a short
/// decimal (what sensors send), plain pco floats otherwise.
pub fn encode_values(values: &[f64], out: &mut Vec<u8>) -> CodecId {
    let start = out.len();
    let mut chosen = if Decimal::encode_values(values, out).is_ok() {
        CodecId::Decimal
    } else {
        out.truncate(start);
        if Pco::encode_values(values, out).is_ok() {
            CodecId::Pco
        } else {
            out.truncate(start);
            Raw::encode_values(values, out).expect("raw encoding is infallible");
            return CodecId::Raw;
        }
    };
    if values.len() < SMALL_COLUMN {
        chosen = keep_shortest(out, start, chosen, |o| {
            Gorilla::encode_values(values, o).map(|_| CodecId::Gorilla)
        });
        chosen = keep_shortest(out, start, chosen, |o| {
            Raw::encode_values(values, o).map(|_| CodecId::Raw)
        });
    }
    chosen
}

/// Encodes an alternative into a scratch buffer and keeps it in `out[start..]`
/// if it is shorter than what is there.
fn keep_shortest(
    out: &mut Vec<u8>,
    start: usize,
    current: CodecId,
    alternative: impl FnOnce(&mut Vec<u8>) -> Result<CodecId, CodecError>,
) -> CodecId {
    let mut scratch = Vec::new();
    match alternative(&mut scratch) {
        Ok(id) if scratch.len() < out.len() - start => {
            out.truncate(start);
            out.extend_from_slice(&scratch);
            id
        }
        _ => current,
    }
}

pub fn decode_timestamps(
    id: CodecId,
    data: &[u8],
    n: usize,
    out: &mut Vec<i64>,
) -> Result<(), CodecError> {
    let before = out.len();
    match id {
        CodecId::Raw => Raw::decode_timestamps(data, n, out),
        CodecId::Gorilla => Gorilla::decode_timestamps(data, n, out),
        CodecId::Pco | CodecId::Decimal => Pco::decode_timestamps(data, n, out),
    }?;
    check_len(out.len() - before, n)
}

pub fn decode_values(
    id: CodecId,
    data: &[u8],
    n: usize,
    out: &mut Vec<f64>,
) -> Result<(), CodecError> {
    let before = out.len();
    match id {
        CodecId::Raw => Raw::decode_values(data, n, out),
        CodecId::Gorilla => Gorilla::decode_values(data, n, out),
        CodecId::Pco => Pco::decode_values(data, n, out),
        CodecId::Decimal => Decimal::decode_values(data, n, out),
    }?;
    check_len(out.len() - before, n)
}

fn check_len(got: usize, want: usize) -> Result<(), CodecError> {
    if got == want {
        Ok(())
    } else {
        Err(CodecError::Corrupt(format!(
            "decoded {got} items, expected {want}"
        )))
    }
}

/// Guards allocations driven by a count read from disk.
pub(crate) const MAX_COLUMN_LEN: usize = 1 << 24;

pub(crate) fn check_count(n: usize) -> Result<(), CodecError> {
    if n > MAX_COLUMN_LEN {
        return Err(CodecError::Corrupt(format!(
            "column length {n} is implausible"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
