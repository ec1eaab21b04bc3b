//! Varints and zigzag, shared by the block and WAL formats.

use thiserror::Error;

#[derive(Debug, Error)]
#[error("truncated or overlong varint")]
pub struct VarintError;

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_uvarint(input: &mut &[u8]) -> Result<u64, VarintError> {
    let mut v = 0u64;
    for (i, &b) in input.iter().enumerate().take(10) {
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            if i == 9 && b > 1 {
                return Err(VarintError);
            }
            *input = &input[i + 1..];
            return Ok(v);
        }
    }
    Err(VarintError)
}

/// Small magnitudes of either sign to small unsigned numbers.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

pub fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

pub fn get_ivarint(input: &mut &[u8]) -> Result<i64, VarintError> {
    get_uvarint(input).map(unzigzag)
}

/// Reads `len` bytes, failing instead of panicking when they are not there.
pub fn take<'a>(input: &mut &'a [u8], len: usize) -> Result<&'a [u8], VarintError> {
    if input.len() < len {
        return Err(VarintError);
    }
    let (head, tail) = input.split_at(len);
    *input = tail;
    Ok(head)
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub fn get_bytes<'a>(input: &mut &'a [u8]) -> Result<&'a [u8], VarintError> {
    let len = get_uvarint(input)? as usize;
    take(input, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_garbage() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, v);
            let mut s = &buf[..];
            assert_eq!(get_uvarint(&mut s).unwrap(), v);
            assert!(s.is_empty());
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -123456789] {
            let mut buf = Vec::new();
            put_ivarint(&mut buf, v);
            assert_eq!(get_ivarint(&mut &buf[..]).unwrap(), v);
        }
        assert!(get_uvarint(&mut &[0x80u8, 0x80][..]).is_err());
        assert!(get_uvarint(&mut &[0xffu8; 11][..]).is_err());
    }
}
