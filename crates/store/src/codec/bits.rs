//! Bit-level writer and reader for the Gorilla codec. The reader fails cleanly
//! when the input ends early instead of panicking.

use super::CodecError;

#[derive(Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 means the last byte is full or absent).
    used: u8,
}

impl BitWriter {
    pub fn write_bits(&mut self, value: u64, count: u8) {
        debug_assert!(count <= 64);
        for i in (0..count).rev() {
            self.write_bit((value >> i) & 1 == 1);
        }
    }

    pub fn write_bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.bytes.push(0);
        }
        if bit {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << (7 - self.used);
        }
        self.used = (self.used + 1) % 8;
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        BitReader { bytes, pos: 0 }
    }

    pub fn read_bit(&mut self) -> Result<bool, CodecError> {
        let byte = self
            .bytes
            .get(self.pos / 8)
            .ok_or_else(|| CodecError::Corrupt("gorilla stream ends early".into()))?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1 == 1;
        self.pos += 1;
        Ok(bit)
    }

    pub fn read_bits(&mut self, count: u8) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for _ in 0..count {
            v = (v << 1) | self.read_bit()? as u64;
        }
        Ok(v)
    }
}
