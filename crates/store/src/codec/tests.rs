use proptest::prelude::*;

use super::*;

fn round_trip_ts<C: ColumnCodec>(ts: &[i64]) {
    let mut buf = Vec::new();
    C::encode_timestamps(ts, &mut buf).unwrap();
    let mut out = Vec::new();
    C::decode_timestamps(&buf, ts.len(), &mut out).unwrap();
    assert_eq!(out, ts, "{}", C::ID.name());
}

fn round_trip_values<C: ColumnCodec>(values: &[f64]) -> bool {
    let mut buf = Vec::new();
    if C::encode_values(values, &mut buf).is_err() {
        return false;
    }
    let mut out = Vec::new();
    C::decode_values(&buf, values.len(), &mut out).unwrap();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&out), bits(values), "{}", C::ID.name());
    true
}

fn all_codecs_ts(ts: &[i64]) {
    round_trip_ts::<Raw>(ts);
    round_trip_ts::<Gorilla>(ts);
    round_trip_ts::<Pco>(ts);
    let mut buf = Vec::new();
    let id = encode_timestamps(ts, &mut buf);
    let mut out = Vec::new();
    decode_timestamps(id, &buf, ts.len(), &mut out).unwrap();
    assert_eq!(out, ts);
}

fn all_codecs_values(values: &[f64]) {
    assert!(round_trip_values::<Raw>(values));
    assert!(round_trip_values::<Gorilla>(values));
    assert!(round_trip_values::<Pco>(values));
    round_trip_values::<Decimal>(values);
    let mut buf = Vec::new();
    let id = encode_values(values, &mut buf);
    let mut out = Vec::new();
    decode_values(id, &buf, values.len(), &mut out).unwrap();
    assert_eq!(
        out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        values.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn special_floats_survive_every_codec() {
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let v = [
        1.5,
        f64::NAN,
        stale,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        5e-324,
        21.53,
    ];
    all_codecs_values(&v);
    all_codecs_values(&[f64::NAN]);
    all_codecs_values(&[-0.0]);
}

#[test]
fn edge_timestamp_columns() {
    all_codecs_ts(&[]);
    all_codecs_ts(&[1_700_000_000_000]);
    all_codecs_ts(&[5, 5, 5, 5, 5]);
    all_codecs_ts(&[i64::MIN, 0, i64::MAX, i64::MIN]);
    all_codecs_ts(&[10, 5, 20, 1, 1_000_000_000_000_000]);
    let regular: Vec<i64> = (0..1000).map(|i| 1_767_225_600_000 + i * 10_000).collect();
    all_codecs_ts(&regular);
}

/// Found by the `codec_roundtrip` fuzz target (docs/fuzzing.md): a
/// delta-of-delta of exactly +2^13, +2^16 or +2^19 ms (the top of a Gorilla
/// bucket) read back negated, moving the timestamp by twice that. Gorilla is
/// chosen for columns of fewer than 24 timestamps when it is the shortest.
#[test]
fn gorilla_bucket_tops_round_trip() {
    for dod in [8192, 65_536, 524_288, -8191, -65_535, -524_287, 8193, -8192] {
        let t0 = 1_767_225_600_000;
        let ts = [t0, t0 + 10_000, t0 + 20_000 + dod, t0 + 30_000 + dod];
        all_codecs_ts(&ts);
    }
    // A sparse sensor: the second gap 8.192 s longer than the first.
    let ts = [1_767_225_600_000, 1_767_225_610_000, 1_767_225_628_192];
    let mut buf = Vec::new();
    assert_eq!(encode_timestamps(&ts, &mut buf), CodecId::Gorilla);
    let mut out = Vec::new();
    decode_timestamps(CodecId::Gorilla, &buf, ts.len(), &mut out).unwrap();
    assert_eq!(out, ts);
}

/// The input the fuzz target found: sorted timestamps over the whole i64
/// range.
#[test]
fn fuzzed_timestamp_column_round_trips() {
    all_codecs_ts(&[
        -9223372036854775808,
        -9079256848793141249,
        -7378697629483794432,
        -5534023222112878592,
        -3689348814741897216,
        -1844674407370981376,
        -72057594037927936,
        0,
        289360691352306692,
        289360692899755136,
        1844674407370981376,
        3689348814741897216,
        7378697629483794432,
    ]);
}

#[test]
fn single_and_empty_value_columns() {
    all_codecs_values(&[]);
    all_codecs_values(&[42.0]);
    all_codecs_values(&[-999.0]);
}

#[test]
fn decimal_codec_keeps_short_decimals_small() {
    let values: Vec<f64> = (0..720)
        .map(|i| 20.0 + ((i * 7) % 13) as f64 / 100.0)
        .collect();
    let (mut d, mut p) = (Vec::new(), Vec::new());
    Decimal::encode_values(&values, &mut d).unwrap();
    Pco::encode_values(&values, &mut p).unwrap();
    assert!(d.len() < p.len(), "decimal {} vs pco {}", d.len(), p.len());
    let mut buf = Vec::new();
    assert_eq!(encode_values(&values, &mut buf), CodecId::Decimal);
}

/// Found by the `codec_roundtrip` fuzz target: an integer exact at scale
/// 0 in a column of scale 5 was scaled past i64 and read back as
/// -92233720368547.77. It is an exception now.
#[test]
fn decimal_codec_keeps_large_values_of_a_small_scale() {
    let mut values: Vec<f64> = (0..100).map(|i| i as f64 / 1e5).collect();
    values.push(-571_873_016_414_208.0);
    values.push(90_071_992_547_409.0);
    assert!(round_trip_values::<Decimal>(&values));
    all_codecs_values(&values);
}

#[test]
fn decimal_codec_refuses_noise() {
    let values: Vec<f64> = (0..200)
        .map(|i| (i as f64).sqrt() * std::f64::consts::PI)
        .collect();
    assert!(matches!(
        Decimal::encode_values(&values, &mut Vec::new()),
        Err(CodecError::Unsuited)
    ));
}

#[test]
fn corrupt_columns_fail_without_panicking() {
    let values: Vec<f64> = (0..100).map(|i| i as f64 * 0.25).collect();
    let ts: Vec<i64> = (0..100).map(|i| i * 1000).collect();
    for id in [
        CodecId::Raw,
        CodecId::Gorilla,
        CodecId::Pco,
        CodecId::Decimal,
    ] {
        let mut buf = Vec::new();
        match id {
            CodecId::Raw => Raw::encode_values(&values, &mut buf).unwrap(),
            CodecId::Gorilla => Gorilla::encode_values(&values, &mut buf).unwrap(),
            CodecId::Pco => Pco::encode_values(&values, &mut buf).unwrap(),
            CodecId::Decimal => Decimal::encode_values(&values, &mut buf).unwrap(),
        }
        for cut in [0, 1, buf.len() / 2, buf.len().saturating_sub(1)] {
            let _ = decode_values(id, &buf[..cut], values.len(), &mut Vec::new());
        }
        for flip in 0..buf.len().min(64) {
            let mut bad = buf.clone();
            bad[flip] ^= 0x5a;
            let _ = decode_values(id, &bad, values.len(), &mut Vec::new());
        }
        // Absurd lengths are refused before allocating.
        assert!(decode_values(id, &buf, usize::MAX / 2, &mut Vec::new()).is_err());
        let mut tbuf = Vec::new();
        let tid = encode_timestamps(&ts, &mut tbuf);
        let _ = decode_timestamps(tid, &tbuf[..tbuf.len() / 2], ts.len(), &mut Vec::new());
    }
}

fn special_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(-999.0),
        (-100_000i64..100_000).prop_map(|i| i as f64 / 100.0),
        (-1000i64..1000).prop_map(|i| i as f64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn any_timestamps_round_trip(ts in prop::collection::vec(any::<i64>(), 0..300)) {
        all_codecs_ts(&ts);
    }

    #[test]
    fn realistic_timestamps_round_trip(
        start in 0i64..4_000_000_000_000,
        steps in prop::collection::vec(prop_oneof![Just(0i64), 9_500i64..10_500, 0i64..1_000_000_000, -5000i64..0], 1..500),
    ) {
        let ts: Vec<i64> = steps.iter().scan(start, |t, s| { *t += s; Some(*t) }).collect();
        all_codecs_ts(&ts);
    }

    #[test]
    fn any_values_round_trip(values in prop::collection::vec(special_f64(), 0..300)) {
        all_codecs_values(&values);
    }
}
