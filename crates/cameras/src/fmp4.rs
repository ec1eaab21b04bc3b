//! A small fragmented-MP4 (ISO BMFF) writer for relaying H.264/H.265 without
//! transcoding: an init segment (`ftyp` + `moov` with the sample entry retina
//! builds from the camera's parameters) and media fragments (`moof` + `mdat`)
//! of one or more samples. Validated by ffprobe in the tests; Media Source
//! Extensions and HLS (fMP4 segments) read the same bytes.

/// Writes a box: size placeholder, type, contents from `f`, then the size.
fn write_box(out: &mut Vec<u8>, kind: &[u8; 4], f: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(kind);
    f(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// A full box: version and 24-bit flags first.
fn write_full_box(
    out: &mut Vec<u8>,
    kind: &[u8; 4],
    version: u8,
    flags: u32,
    f: impl FnOnce(&mut Vec<u8>),
) {
    write_box(out, kind, |out| {
        out.push(version);
        out.extend_from_slice(&flags.to_be_bytes()[1..]);
        f(out);
    })
}

const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn put_matrix(out: &mut Vec<u8>) {
    for v in UNITY_MATRIX {
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// The init segment for one video track.
pub fn init_segment(sample_entry: &[u8], width: u32, height: u32, timescale: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024 + sample_entry.len());
    write_box(&mut out, b"ftyp", |o| {
        o.extend_from_slice(b"isom");
        o.extend_from_slice(&0x200u32.to_be_bytes());
        for brand in [b"isom", b"iso6", b"mp41"] {
            o.extend_from_slice(brand);
        }
    });
    write_box(&mut out, b"moov", |o| {
        write_full_box(o, b"mvhd", 0, 0, |o| {
            o.extend_from_slice(&[0; 8]); // creation, modification time
            o.extend_from_slice(&1000u32.to_be_bytes()); // timescale
            o.extend_from_slice(&0u32.to_be_bytes()); // duration: unknown (live)
            o.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
            o.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
            o.extend_from_slice(&[0; 10]); // reserved
            put_matrix(o);
            o.extend_from_slice(&[0; 24]); // pre_defined
            o.extend_from_slice(&2u32.to_be_bytes()); // next_track_ID
        });
        write_box(o, b"trak", |o| {
            // flags: enabled, in movie, in preview
            write_full_box(o, b"tkhd", 0, 7, |o| {
                o.extend_from_slice(&[0; 8]);
                o.extend_from_slice(&1u32.to_be_bytes()); // track_ID
                o.extend_from_slice(&[0; 4]); // reserved
                o.extend_from_slice(&0u32.to_be_bytes()); // duration
                o.extend_from_slice(&[0; 8]); // reserved
                o.extend_from_slice(&[0; 4]); // layer, alternate_group
                o.extend_from_slice(&[0; 4]); // volume (0 for video), reserved
                put_matrix(o);
                o.extend_from_slice(&(width << 16).to_be_bytes());
                o.extend_from_slice(&(height << 16).to_be_bytes());
            });
            write_box(o, b"mdia", |o| {
                write_full_box(o, b"mdhd", 0, 0, |o| {
                    o.extend_from_slice(&[0; 8]);
                    o.extend_from_slice(&timescale.to_be_bytes());
                    o.extend_from_slice(&0u32.to_be_bytes());
                    o.extend_from_slice(&0x55c4u16.to_be_bytes()); // language "und"
                    o.extend_from_slice(&[0; 2]);
                });
                write_full_box(o, b"hdlr", 0, 0, |o| {
                    o.extend_from_slice(&[0; 4]);
                    o.extend_from_slice(b"vide");
                    o.extend_from_slice(&[0; 12]);
                    o.extend_from_slice(b"perch video\0");
                });
                write_box(o, b"minf", |o| {
                    write_full_box(o, b"vmhd", 0, 1, |o| o.extend_from_slice(&[0; 8]));
                    write_box(o, b"dinf", |o| {
                        write_full_box(o, b"dref", 0, 0, |o| {
                            o.extend_from_slice(&1u32.to_be_bytes());
                            // Self-contained: flag 1, no location.
                            write_full_box(o, b"url ", 0, 1, |_| {});
                        });
                    });
                    write_box(o, b"stbl", |o| {
                        write_full_box(o, b"stsd", 0, 0, |o| {
                            o.extend_from_slice(&1u32.to_be_bytes());
                            o.extend_from_slice(sample_entry);
                        });
                        // Empty tables: the samples are in the fragments.
                        write_full_box(o, b"stts", 0, 0, |o| o.extend_from_slice(&[0; 4]));
                        write_full_box(o, b"stsc", 0, 0, |o| o.extend_from_slice(&[0; 4]));
                        write_full_box(o, b"stsz", 0, 0, |o| o.extend_from_slice(&[0; 8]));
                        write_full_box(o, b"stco", 0, 0, |o| o.extend_from_slice(&[0; 4]));
                    });
                });
            });
        });
        write_box(o, b"mvex", |o| {
            write_full_box(o, b"trex", 0, 0, |o| {
                o.extend_from_slice(&1u32.to_be_bytes()); // track_ID
                o.extend_from_slice(&1u32.to_be_bytes()); // sample description index
                o.extend_from_slice(&[0; 12]); // default duration, size, flags
            });
        });
    });
    out
}

/// One sample of a fragment.
#[derive(Clone, Debug)]
pub struct Sample<'a> {
    /// In the track's timescale.
    pub duration: u32,
    pub keyframe: bool,
    /// Length-prefixed NAL units (MP4 framing).
    pub data: &'a [u8],
}

const KEYFRAME_FLAGS: u32 = 0x0200_0000; // depends on no other sample
const DEPENDENT_FLAGS: u32 = 0x0101_0000; // depends on others, not a sync sample

/// A `moof` + `mdat` holding `samples`, the first decoded at `base_time`.
pub fn fragment(sequence: u32, base_time: u64, samples: &[Sample<'_>]) -> Vec<u8> {
    let data_len: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut out = Vec::with_capacity(128 + samples.len() * 12 + data_len);
    let mut data_offset_at = 0;
    write_box(&mut out, b"moof", |o| {
        write_full_box(o, b"mfhd", 0, 0, |o| {
            o.extend_from_slice(&sequence.to_be_bytes())
        });
        write_box(o, b"traf", |o| {
            // default-base-is-moof: offsets count from the start of moof.
            write_full_box(o, b"tfhd", 0, 0x02_0000, |o| {
                o.extend_from_slice(&1u32.to_be_bytes())
            });
            write_full_box(o, b"tfdt", 1, 0, |o| {
                o.extend_from_slice(&base_time.to_be_bytes())
            });
            // data offset, and per sample: duration, size, flags.
            write_full_box(o, b"trun", 0, 0x00_0701, |o| {
                o.extend_from_slice(&(samples.len() as u32).to_be_bytes());
                data_offset_at = o.len();
                o.extend_from_slice(&[0; 4]);
                for s in samples {
                    o.extend_from_slice(&s.duration.to_be_bytes());
                    o.extend_from_slice(&(s.data.len() as u32).to_be_bytes());
                    let flags = if s.keyframe {
                        KEYFRAME_FLAGS
                    } else {
                        DEPENDENT_FLAGS
                    };
                    o.extend_from_slice(&flags.to_be_bytes());
                }
            });
        });
    });
    // The samples start after moof and mdat's 8-byte header.
    let offset = (out.len() + 8) as u32;
    out[data_offset_at..data_offset_at + 4].copy_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&((data_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in samples {
        out.extend_from_slice(s.data);
    }
    out
}

/// A frame whose length-prefixed NAL units do not add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NalError {
    #[error("truncated NAL length")]
    TruncatedLength,
    #[error("NAL of {len} bytes runs past the frame")]
    PastFrame { len: usize },
}

/// Turns length-prefixed NAL units into an Annex B stream (start codes), as
/// the decoder wants them. Fails on a length running past the end.
pub fn to_annex_b(data: &[u8], out: &mut Vec<u8>) -> Result<(), NalError> {
    let mut rest = data;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(NalError::TruncatedLength);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let nal = rest.get(4..4 + len).ok_or(NalError::PastFrame { len })?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(nal);
        rest = &rest[4 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(mut b: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes(b[0..4].try_into().unwrap()) as usize;
            out.push((String::from_utf8_lossy(&b[4..8]).into_owned(), size));
            b = &b[size..];
        }
        out
    }

    #[test]
    fn fragments_are_well_formed() {
        let a = [0, 0, 0, 2, 0x65, 0x88];
        let b = [0, 0, 0, 1, 0x41];
        let f = fragment(
            7,
            90_000,
            &[
                Sample {
                    duration: 6000,
                    keyframe: true,
                    data: &a,
                },
                Sample {
                    duration: 6000,
                    keyframe: false,
                    data: &b,
                },
            ],
        );
        let top = boxes(&f);
        assert_eq!(
            top.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(),
            ["moof", "mdat"]
        );
        assert_eq!(top[1].1, 8 + a.len() + b.len());
        // The data offset points at the first sample.
        let pos = f.windows(4).position(|w| w == b"trun").unwrap();
        let off = u32::from_be_bytes(f[pos + 12..pos + 16].try_into().unwrap()) as usize;
        assert_eq!(&f[off..off + a.len()], &a);
        let init = init_segment(b"\0\0\0\x08avc1", 640, 360, 90_000);
        assert_eq!(
            boxes(&init)
                .iter()
                .map(|b| b.0.as_str())
                .collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
    }

    #[test]
    fn annex_b_conversion() {
        let mut out = Vec::new();
        to_annex_b(&[0, 0, 0, 2, 1, 2, 0, 0, 0, 1, 3], &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 1, 1, 2, 0, 0, 0, 1, 3]);
        assert_eq!(
            to_annex_b(&[0, 0, 0, 9, 1], &mut Vec::new())
                .unwrap_err()
                .to_string(),
            "NAL of 9 bytes runs past the frame"
        );
        assert_eq!(
            to_annex_b(&[0, 0], &mut Vec::new())
                .unwrap_err()
                .to_string(),
            "truncated NAL length"
        );
    }
}
