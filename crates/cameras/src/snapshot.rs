//! Snapshots: a keyframe decoded in process (openh264), scaled if asked, and
//! encoded as JPEG; stored under `snapshots/<camera>/<day>/<ms>.jpg` and
//! indexed in the sled tree `snapshots`, with retention by age and bytes per
//! camera.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::camera::KeyFrame;
use super::fmp4;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotMeta {
    /// Milliseconds since the epoch: also the snapshot's id.
    pub id: i64,
    pub time: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    /// `schedule` or `request`.
    pub trigger: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshots need H.264; this camera sends {0}")]
    NotH264(String),
    #[error("decoding the keyframe failed: {0}")]
    Decode(String),
    #[error("encoding the JPEG failed: {0}")]
    Encode(String),
    #[error("writing the snapshot failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    #[error(transparent)]
    Store(#[from] store::StorageError),
}

impl base::HasKind for SnapshotError {
    fn kind(&self) -> base::ErrorKind {
        use base::ErrorKind as K;
        match self {
            SnapshotError::Store(e) => e.kind(),
            _ => K::Internal,
        }
    }
}

/// Decodes a keyframe and encodes it as JPEG. Runs on a blocking thread:
/// decoding 1080p takes tens of milliseconds on a Pi.
pub fn keyframe_to_jpeg(
    kf: &KeyFrame,
    quality: u8,
    max_width: u32,
) -> Result<(Vec<u8>, u32, u32), SnapshotError> {
    let Some((sps, pps)) = &kf.info.h264 else {
        return Err(SnapshotError::NotH264(kf.info.codec.clone()));
    };
    let mut annex_b = Vec::with_capacity(kf.data.len() + sps.len() + pps.len() + 16);
    for ps in [sps, pps] {
        annex_b.extend_from_slice(&[0, 0, 0, 1]);
        annex_b.extend_from_slice(ps);
    }
    fmp4::to_annex_b(&kf.data, &mut annex_b).map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let mut decoder =
        openh264::decoder::Decoder::new().map_err(|e| SnapshotError::Decode(e.to_string()))?;
    let (rgb, w, h) = {
        let yuv = match decoder.decode(&annex_b) {
            Ok(Some(yuv)) => yuv,
            // A decoder may hold the picture until flushed.
            Ok(None) => {
                let mut rest = decoder
                    .flush_remaining()
                    .map_err(|e| SnapshotError::Decode(e.to_string()))?;
                match rest.pop() {
                    Some(y) => {
                        let (w, h) = openh264::formats::YUVSource::dimensions(&y);
                        let mut rgb = vec![0u8; w * h * 3];
                        y.write_rgb8(&mut rgb);
                        return finish(rgb, w, h, quality, max_width);
                    }
                    None => {
                        return Err(SnapshotError::Decode(
                            "the decoder produced no picture".into(),
                        ))
                    }
                }
            }
            Err(e) => return Err(SnapshotError::Decode(e.to_string())),
        };
        let (w, h) = openh264::formats::YUVSource::dimensions(&yuv);
        let mut rgb = vec![0u8; w * h * 3];
        yuv.write_rgb8(&mut rgb);
        (rgb, w, h)
    };
    finish(rgb, w, h, quality, max_width)
}

fn finish(
    rgb: Vec<u8>,
    w: usize,
    h: usize,
    quality: u8,
    max_width: u32,
) -> Result<(Vec<u8>, u32, u32), SnapshotError> {
    let (rgb, w, h) = if max_width > 0 && w > max_width as usize {
        downscale(&rgb, w, h, max_width as usize)
    } else {
        (rgb, w, h)
    };
    if w > u16::MAX as usize || h > u16::MAX as usize || w == 0 || h == 0 {
        return Err(SnapshotError::Encode(format!("{w}x{h} cannot be a JPEG")));
    }
    let mut out = Vec::with_capacity(w * h / 4);
    jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100))
        .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok((out, w as u32, h as u32))
}

/// Area-average downscaling to `new_w`, keeping the aspect ratio: good enough
/// for a thumbnail, no dependency.
fn downscale(rgb: &[u8], w: usize, h: usize, new_w: usize) -> (Vec<u8>, usize, usize) {
    let new_h = ((h * new_w) / w).max(1);
    let mut out = vec![0u8; new_w * new_h * 3];
    for y in 0..new_h {
        let (y0, y1) = (y * h / new_h, ((y + 1) * h / new_h).max(y * h / new_h + 1));
        for x in 0..new_w {
            let (x0, x1) = (x * w / new_w, ((x + 1) * w / new_w).max(x * w / new_w + 1));
            let mut acc = [0u32; 3];
            for sy in y0..y1.min(h) {
                for sx in x0..x1.min(w) {
                    let p = (sy * w + sx) * 3;
                    for c in 0..3 {
                        acc[c] += rgb[p + c] as u32;
                    }
                }
            }
            let n = ((y1.min(h) - y0) * (x1.min(w) - x0)).max(1) as u32;
            let q = (y * new_w + x) * 3;
            for c in 0..3 {
                out[q + c] = (acc[c] / n) as u8;
            }
        }
    }
    (out, new_w, new_h)
}

pub struct SnapshotStore {
    root: PathBuf,
    tree: sled::Tree,
    /// For the disk budget: a snapshot reserves its room before it is
    /// written.
    trees: store::Trees,
}

fn key(camera: &str, id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(camera.len() + 9);
    k.extend_from_slice(camera.as_bytes());
    k.push(0);
    k.extend_from_slice(&((id as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn prefix(camera: &str) -> Vec<u8> {
    let mut k = camera.as_bytes().to_vec();
    k.push(0);
    k
}

impl SnapshotStore {
    pub fn open(data_dir: &Path, trees: &store::Trees) -> Result<SnapshotStore, SnapshotError> {
        let root = data_dir.join("snapshots");
        std::fs::create_dir_all(&root)?;
        Ok(SnapshotStore {
            root,
            tree: trees.open(store::Tree::Snapshots)?,
            trees: trees.clone(),
        })
    }

    fn path(&self, camera: &str, id: i64) -> PathBuf {
        let day = chrono::DateTime::from_timestamp_millis(id)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "unknown".into());
        self.root.join(camera).join(day).join(format!("{id}.jpg"))
    }

    /// Writes the file (synced: a snapshot is worth keeping), then indexes it.
    pub fn save(
        &self,
        camera: &str,
        id: i64,
        jpeg: &[u8],
        width: u32,
        height: u32,
        trigger: &str,
    ) -> Result<SnapshotMeta, SnapshotError> {
        let path = self.path(camera, id);
        // Reserve, then write: refused when storage.max_disk_bytes is full.
        let _room = self.trees.reserve_disk("a snapshot", jpeg.len() as u64)?;
        std::fs::create_dir_all(path.parent().expect("in a directory"))?;
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, jpeg)
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        // Written on a shared runtime thread: counted here rather than by
        // the thread's name (base::footprint).
        base::footprint::count_written("snapshots", jpeg.len() as u64);
        let meta = SnapshotMeta {
            id,
            time: chrono::DateTime::from_timestamp_millis(id)
                .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_default(),
            bytes: jpeg.len() as u64,
            width,
            height,
            trigger: trigger.to_string(),
        };
        self.tree.insert(
            key(camera, id),
            serde_json::to_vec(&meta).expect("serializable"),
        )?;
        Ok(meta)
    }

    /// Snapshots of a camera in `[start, end]`, newest first.
    pub fn list(&self, camera: &str, start: i64, end: i64, limit: usize) -> Vec<SnapshotMeta> {
        let (lo, hi) = (key(camera, start), key(camera, end));
        self.tree
            .range(lo..=hi)
            .rev()
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .take(limit)
            .collect()
    }

    pub fn latest(&self, camera: &str) -> Option<SnapshotMeta> {
        self.tree
            .scan_prefix(prefix(camera))
            .next_back()
            .and_then(|r| r.ok())
            .and_then(|(_, v)| serde_json::from_slice(&v).ok())
    }

    pub fn file(&self, camera: &str, id: i64) -> Option<PathBuf> {
        self.tree
            .contains_key(key(camera, id))
            .ok()?
            .then(|| self.path(camera, id))
    }

    /// Drops a camera's snapshots older than `min_id`, then the oldest while
    /// over `max_bytes`. Returns how many went.
    pub fn enforce(
        &self,
        camera: &str,
        min_id: i64,
        max_bytes: u64,
    ) -> Result<usize, SnapshotError> {
        let mut all: Vec<SnapshotMeta> = self
            .tree
            .scan_prefix(prefix(camera))
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect();
        let mut total: u64 = all.iter().map(|m| m.bytes).sum();
        let mut removed = 0;
        all.sort_by_key(|m| m.id);
        for m in all {
            if m.id >= min_id && total <= max_bytes {
                break;
            }
            self.remove(camera, m.id)?;
            total -= m.bytes;
            removed += 1;
        }
        Ok(removed)
    }

    fn remove(&self, camera: &str, id: i64) -> Result<(), SnapshotError> {
        self.tree.remove(key(camera, id))?;
        match std::fs::remove_file(self.path(camera, id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Removes every snapshot of a camera (when the camera is deleted).
    pub fn remove_camera(&self, camera: &str) -> Result<(), SnapshotError> {
        for r in self.tree.scan_prefix(prefix(camera)) {
            self.tree.remove(r?.0)?;
        }
        match std::fs::remove_dir_all(self.root.join(camera)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn bytes(&self, camera: &str) -> u64 {
        self.tree
            .scan_prefix(prefix(camera))
            .filter_map(|r| r.ok())
            .filter_map(|(_, v)| serde_json::from_slice::<SnapshotMeta>(&v).ok())
            .map(|m| m.bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscaling_keeps_aspect_and_averages() {
        let w = 8;
        let h = 4;
        let rgb: Vec<u8> = (0..w * h)
            .flat_map(|i| [if i % 2 == 0 { 0 } else { 200 }, 50, 100])
            .collect();
        let (out, nw, nh) = downscale(&rgb, w, h, 4);
        assert_eq!((nw, nh), (4, 2));
        assert_eq!(out[0..3], [100, 50, 100]);
    }

    #[test]
    fn store_lists_newest_first_and_enforces_limits() {
        let dir = tempfile::tempdir().unwrap();
        let trees = store::Trees::temporary().unwrap();
        let s = SnapshotStore::open(dir.path(), &trees).unwrap();
        for i in 0..5 {
            s.save(
                "yard",
                1_700_000_000_000 + i * 1000,
                &[0xff; 100],
                10,
                10,
                "schedule",
            )
            .unwrap();
        }
        s.save("other", 1_700_000_000_000, &[1; 10], 1, 1, "request")
            .unwrap();
        let l = s.list("yard", 0, i64::MAX, 3);
        assert_eq!(
            l.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1_700_000_004_000, 1_700_000_003_000, 1_700_000_002_000]
        );
        assert_eq!(s.latest("yard").unwrap().id, 1_700_000_004_000);
        assert_eq!(s.enforce("yard", 1_700_000_001_000, 250).unwrap(), 3);
        assert_eq!(s.list("yard", 0, i64::MAX, 10).len(), 2);
        assert!(s.file("yard", 1_700_000_000_000).is_none());
        assert!(s.file("yard", 1_700_000_004_000).unwrap().exists());
        assert_eq!(s.list("other", 0, i64::MAX, 10).len(), 1);
        s.remove_camera("yard").unwrap();
        assert!(s.latest("yard").is_none());
    }
}
