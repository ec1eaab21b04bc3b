//! pco (pcodec): detects a column's delta order and numeric mode, then
//! entropy-codes with tANS. The workhorse for timestamps and, through
//! [`super::Decimal`], for values.

use pco::wrapped::{FileCompressor, FileDecompressor};
use pco::{ChunkConfig, DecompressorScratch, PagingSpec};

thread_local! {
    static SCRATCH: std::cell::RefCell<DecompressorScratch> = Default::default();
}

use super::{check_count, CodecError, CodecId, ColumnCodec};

pub struct Pco;

impl Pco {
    pub(crate) fn encode<T: pco::data_types::Number>(
        src: &[T],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        if src.is_empty() {
            return Ok(());
        }
        let config = ChunkConfig::default().with_paging_spec(PagingSpec::Exact(vec![src.len()]));
        let fc = FileCompressor::default();
        let err = |e: pco::errors::PcoError| CodecError::Corrupt(format!("pco encode: {e}"));
        fc.write_header(&mut *out).map_err(err)?;
        let mut cc = fc.chunk_compressor(src, &config).map_err(err)?;
        cc.write_meta(&mut *out).map_err(err)?;
        cc.write_page(0, &mut *out).map_err(err)?;
        Ok(())
    }

    pub(crate) fn decode<T: pco::data_types::Number>(
        data: &[u8],
        n: usize,
        out: &mut Vec<T>,
    ) -> Result<(), CodecError> {
        check_count(n)?;
        if n == 0 {
            return Ok(());
        }
        let err = |e: pco::errors::PcoError| CodecError::Corrupt(format!("pco decode: {e}"));
        let (fd, rest) = FileDecompressor::new(data).map_err(err)?;
        let (cd, rest) = fd.chunk_decompressor::<T, _>(rest).map_err(err)?;
        let start = out.len();
        out.resize(start + n, T::default());
        // One scratch per thread rather than one per column: a query reads
        // thousands of 2 h columns, and pco's scratch is ~12 KB to allocate
        // and zero each time.
        let progress = SCRATCH.with_borrow_mut(|scratch| {
            let mut pd = cd
                .page_decompressor_with_scratch(rest, n, scratch)
                .map_err(err)?;
            pd.read(&mut out[start..]).map_err(err)
        })?;
        if progress.n_processed != n {
            out.truncate(start);
            return Err(CodecError::Corrupt(format!(
                "pco page holds {} of {n} items",
                progress.n_processed
            )));
        }
        Ok(())
    }
}

impl ColumnCodec for Pco {
    const ID: CodecId = CodecId::Pco;

    fn encode_timestamps(ts: &[i64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        Self::encode(ts, out)
    }

    fn decode_timestamps(data: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), CodecError> {
        Self::decode(data, n, out)
    }

    fn encode_values(values: &[f64], out: &mut Vec<u8>) -> Result<(), CodecError> {
        Self::encode(values, out)
    }

    fn decode_values(data: &[u8], n: usize, out: &mut Vec<f64>) -> Result<(), CodecError> {
        Self::decode(data, n, out)
    }
}
