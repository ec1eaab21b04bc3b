//! HLS with fMP4 segments, from memory: segments of about two seconds, each
//! starting at a keyframe, the last few kept, a live playlist over them.
//! When the camera changes its parameters, a discontinuity and a new init
//! segment follow.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::camera::StreamInfo;
use super::fmp4;

/// Segments are cut at the first keyframe after this much video.
const TARGET_SECONDS: f64 = 2.0;
/// Segments kept and listed.
const KEEP: usize = 6;
/// Segments are made while a player asked for the playlist within this
/// time (players fetch it again every target duration); then they are
/// dropped. Six segments of a 720p camera are about 3 MiB that a board
/// whose viewers use the WebSocket relay, or none, need not hold.
pub const WANTED_FOR: Duration = Duration::from_secs(60);

pub struct Segment {
    pub sequence: u64,
    pub seconds: f64,
    pub bytes: Bytes,
    pub info: Arc<StreamInfo>,
}

struct Building {
    base: u64,
    durations: Vec<u32>,
    keyframes: Vec<bool>,
    data: Vec<u8>,
    lengths: Vec<usize>,
}

pub struct Hls {
    segments: VecDeque<Segment>,
    building: Option<Building>,
    info: Option<Arc<StreamInfo>>,
    next_sequence: u64,
    /// Discontinuities that left the playlist, for EXT-X-DISCONTINUITY-SEQUENCE.
    dropped_discontinuities: u64,
    /// Until when segments are made (see [`WANTED_FOR`]).
    wanted_until: Option<Instant>,
}

impl Default for Hls {
    fn default() -> Self {
        Hls::new()
    }
}

impl Hls {
    pub fn new() -> Hls {
        Hls {
            segments: VecDeque::new(),
            building: None,
            info: None,
            next_sequence: 1,
            dropped_discontinuities: 0,
            wanted_until: None,
        }
    }

    pub fn new_stream(&mut self, info: Arc<StreamInfo>) {
        self.finish();
        self.info = Some(info);
    }

    /// Heap bytes of the kept segments and the one being built.
    pub fn buffered_bytes(&self) -> usize {
        self.segments.iter().map(|s| s.bytes.len()).sum::<usize>()
            + self.building.as_ref().map_or(0, |b| b.data.capacity())
    }

    /// A player asked for the playlist at `now`: make segments for
    /// [`WANTED_FOR`] more.
    pub fn want(&mut self, now: Instant) {
        self.wanted_until = Some(now + WANTED_FOR);
    }

    /// A frame received at `now`; kept only while a player wants HLS.
    pub fn push(
        &mut self,
        now: Instant,
        dts: u64,
        duration: u32,
        keyframe: bool,
        data: &[u8],
        info: &Arc<StreamInfo>,
    ) {
        if self.wanted_until.is_none_or(|until| now >= until) {
            self.drop_all();
            return;
        }
        let timescale = info.timescale as f64;
        if keyframe {
            let long_enough = self.building.as_ref().is_some_and(|b| {
                b.durations.iter().map(|d| *d as u64).sum::<u64>() as f64 / timescale
                    >= TARGET_SECONDS
            });
            if long_enough {
                self.finish();
            }
            if self.building.is_none() {
                self.building = Some(Building {
                    base: dts,
                    durations: Vec::new(),
                    keyframes: Vec::new(),
                    data: Vec::new(),
                    lengths: Vec::new(),
                });
            }
        }
        // Before the first keyframe there is nothing to start a segment with.
        if let Some(b) = self.building.as_mut() {
            b.durations.push(duration);
            b.keyframes.push(keyframe);
            b.lengths.push(data.len());
            b.data.extend_from_slice(data);
            // A camera without keyframes must not grow a segment forever.
            if b.data.len() > 32 << 20 {
                self.building = None;
            }
        }
    }

    /// Drops every segment while nobody plays HLS. Sequence numbers go on
    /// from where they were, so a player that comes back never sees one
    /// twice; the discontinuity sequence counts the tags that left with
    /// the segments and one for the gap, so such a player also knows the
    /// timeline jumped (RFC 8216, 6.2.2).
    fn drop_all(&mut self) {
        if !self.segments.is_empty() {
            let changes = self
                .segments
                .iter()
                .zip(self.segments.iter().skip(1))
                .filter(|(a, b)| a.info.generation != b.info.generation)
                .count() as u64;
            self.dropped_discontinuities += changes + 1;
            self.segments.clear();
        }
        self.building = None;
    }

    fn finish(&mut self) {
        let (Some(b), Some(info)) = (self.building.take(), self.info.clone()) else {
            return;
        };
        let mut offset = 0;
        let samples: Vec<fmp4::Sample<'_>> = b
            .lengths
            .iter()
            .zip(&b.durations)
            .zip(&b.keyframes)
            .map(|((len, d), k)| {
                let s = fmp4::Sample {
                    duration: *d,
                    keyframe: *k,
                    data: &b.data[offset..offset + len],
                };
                offset += len;
                s
            })
            .collect();
        let seconds =
            b.durations.iter().map(|d| *d as u64).sum::<u64>() as f64 / info.timescale as f64;
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let bytes = Bytes::from(fmp4::fragment(sequence as u32, b.base, &samples));
        self.segments.push_back(Segment {
            sequence,
            seconds,
            bytes,
            info,
        });
        while self.segments.len() > KEEP {
            if let (Some(old), Some(next)) = (self.segments.pop_front(), self.segments.front()) {
                if old.info.generation != next.info.generation {
                    self.dropped_discontinuities += 1;
                }
            }
        }
    }

    /// The live playlist; `None` until the first segment exists.
    pub fn playlist(&self) -> Option<String> {
        let first = self.segments.front()?;
        let target = self
            .segments
            .iter()
            .map(|s| s.seconds.ceil() as u64)
            .max()
            .unwrap_or(2)
            .max(1);
        let mut p = String::new();
        let _ = writeln!(p, "#EXTM3U");
        let _ = writeln!(p, "#EXT-X-VERSION:7");
        let _ = writeln!(p, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(p, "#EXT-X-MEDIA-SEQUENCE:{}", first.sequence);
        let _ = writeln!(
            p,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.dropped_discontinuities
        );
        let mut generation = None;
        for s in &self.segments {
            if generation != Some(s.info.generation) {
                if generation.is_some() {
                    let _ = writeln!(p, "#EXT-X-DISCONTINUITY");
                }
                let _ = writeln!(p, "#EXT-X-MAP:URI=\"init.mp4?g={}\"", s.info.generation);
                generation = Some(s.info.generation);
            }
            let _ = writeln!(p, "#EXTINF:{:.3},", s.seconds);
            let _ = writeln!(p, "segment-{}.m4s", s.sequence);
        }
        Some(p)
    }

    pub fn segment(&self, sequence: u64) -> Option<Bytes> {
        self.segments
            .iter()
            .find(|s| s.sequence == sequence)
            .map(|s| s.bytes.clone())
    }

    /// The init segment of a generation still listed (or the current one).
    pub fn init(&self, generation: Option<u64>) -> Option<Bytes> {
        match generation {
            Some(g) => self
                .segments
                .iter()
                .find(|s| s.info.generation == g)
                .map(|s| s.info.init_segment.clone())
                .or_else(|| {
                    self.info
                        .as_ref()
                        .filter(|i| i.generation == g)
                        .map(|i| i.init_segment.clone())
                }),
            None => self.info.as_ref().map(|i| i.init_segment.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Arc<StreamInfo> {
        Arc::new(StreamInfo {
            generation: 1,
            codec: "avc1.64001F".into(),
            width: 640,
            height: 480,
            timescale: 90_000,
            init_segment: Bytes::from_static(b"init"),
            h264: None,
        })
    }

    /// Ten seconds of 10 fps video with a keyframe every second, from `t`.
    fn feed(hls: &mut Hls, t: Instant, from_frame: u64) {
        let info = info();
        for n in from_frame..from_frame + 100 {
            let now = t + Duration::from_millis(n * 100);
            hls.push(now, n * 9_000, 9_000, n % 10 == 0, &[0u8; 1000], &info);
        }
    }

    #[test]
    fn segments_are_made_only_while_a_player_wants_them() {
        let t = Instant::now();
        let mut hls = Hls::new();
        hls.new_stream(info());
        feed(&mut hls, t, 0);
        assert_eq!(hls.playlist(), None, "nobody asked");
        assert_eq!(hls.buffered_bytes(), 0);
        let asked = t + Duration::from_secs(10);
        hls.want(asked);
        feed(&mut hls, asked, 100);
        let playlist = hls.playlist().expect("segments while wanted");
        assert!(playlist.contains("#EXTINF:2.000,"), "{playlist}");
        assert!(hls.buffered_bytes() >= 4 * 20 * 1000);
        let first = hls.segments.front().unwrap().sequence;
        // A minute after the last request the segments go at the next frame.
        let gone = asked + WANTED_FOR;
        feed(&mut hls, gone, 200);
        assert_eq!(hls.playlist(), None);
        assert_eq!(hls.buffered_bytes(), 0);
        hls.want(gone);
        feed(&mut hls, gone, 300);
        let again = hls.segments.front().unwrap().sequence;
        let playlist = hls.playlist().unwrap();
        assert!(
            playlist.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
            "the gap counts as a discontinuity: {playlist}"
        );
        assert!(
            again > first,
            "sequence numbers go on: {again} after {first}"
        );
    }
}
