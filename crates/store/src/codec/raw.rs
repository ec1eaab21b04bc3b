//! Plain little-endian columns: the fallback, and the smallest choice for a
//! column of one or two items.

use super::{check_count, CodecError, CodecId, ColumnCodec};

pub struct Raw;

impl ColumnCodec for Raw {
    const ID: CodecId = CodecId::Raw;

    fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        for t in ts {
            out.extend_from_slice(&t.to_le_bytes());
        }
        Ok(())
    }

    fn decode_timestamps(data: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
        read_words(data, n, |w| out.push(i64::from_le_bytes(w)))
    }

    fn encode_values(values: &[f64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        for v in values {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        Ok(())
    }

    fn decode_values(data: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
        read_words(data, n, |w| out.push(f64::from_bits(u64::from_le_bytes(w))))
    }
}

fn read_words(data: &[u8], n: usize, mut push: impl FnMut([u8; 8])) -> Result<(), CodecError> {
    check_count(n)?;
    if data.len() != n * 8 {
        return Err(CodecError::Corrupt(format!(
            "raw column of {n} items has {} bytes",
            data.len()
        )));
    }
    for w in data.chunks_exact(8) {
        push(w.try_into().expect("chunks_exact gives 8 bytes"));
    }
    Ok(())
}
