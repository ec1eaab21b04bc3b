//! VictoriaMetrics JSON lines (`POST /api/v1/import`):
//! `ingest::vm_import::parse`; what it reads, written back as
//! `/api/v1/export` writes it (`write_line`), must read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let out = ingest::vm_import::parse(body);
    assert!(out.errors.len() <= out.refused);
    for e in &out.errors {
        let _ = e.to_string();
    }
    let mut text = String::new();
    for s in &out.series {
        let (ts, values): (Vec<i64>, Vec<f64>) = s.samples.iter().copied().unzip();
        ingest::vm_import::write_line(&mut text, &s.labels, &ts, &values);
    }
    let again = ingest::vm_import::parse(&text);
    assert_eq!(again.refused, 0, "{text}: {:?}", again.errors);
    assert_eq!(again.series.len(), out.series.len());
    for (a, b) in out.series.iter().zip(&again.series) {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.samples.len(), b.samples.len());
        for (&(ta, va), &(tb, vb)) in a.samples.iter().zip(&b.samples) {
            assert_eq!(ta, tb);
            assert!(
                va.to_bits() == vb.to_bits() || (va.is_nan() && vb.is_nan()),
                "{va:?} read back as {vb:?} from {text}"
            );
        }
    }
});
