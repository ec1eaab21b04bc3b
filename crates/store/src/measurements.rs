//! The measurement and field each metric name was written as, remembered
//! from the writes that named them (line protocol, Telegraf's JSON) so that
//! InfluxQL answers with what a client wrote rather than a guess from the
//! metric name (`room_aaa_temp` could be `room_aaa` + `temp` or `room` +
//! `aaa_temp`). Keyed by metric name, not by series: a handful of entries
//! per measurement, whatever its tag sets. The first write of a name
//! decides; later writes that spell it another way join that measurement.
//!
//! Tree `measurements`: metric name → varint-prefixed measurement, field.
//! The whole tree is kept in memory: it has at most one entry per metric
//! name that has series.

use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::{FxHashMap, FxHashSet};

use super::encoding::{get_bytes, put_bytes};
use super::{SeriesId, SeriesSamples, StorageError};
use base::MeasurementField;

pub(crate) const TREE: &str = "measurements";

pub(crate) struct Measurements {
    tree: sled::Tree,
    known: RwLock<FxHashMap<String, Arc<MeasurementField>>>,
}

impl Measurements {
    pub fn load(db: &sled::Db) -> Result<Measurements, StorageError> {
        let tree = db.open_tree(TREE)?;
        let mut known = FxHashMap::default();
        for entry in tree.iter() {
            let (k, v) = entry?;
            // One damaged entry costs its name's measurement (guessed until
            // the next write names it again and replaces the entry), not
            // the database; `perch check` reports it.
            match decode(&k, &v) {
                Ok((metric, origin)) => {
                    known.insert(metric, Arc::new(origin));
                }
                Err(e) => tracing::warn!(error = %e, "measurement name ignored"),
            }
        }
        Ok(Measurements {
            tree,
            known: RwLock::new(known),
        })
    }

    /// The metric names of stored series (`ids[i]` is `batch[i]`'s
    /// series, `None` when nothing of it was stored) that came with an
    /// origin and have none remembered yet, each once: what
    /// [`Measurements::remember`] is to write.
    pub fn unknown<'a>(
        &self,
        batch: &'a [SeriesSamples],
        ids: &[Option<SeriesId>],
    ) -> Vec<(&'a str, &'a Arc<MeasurementField>)> {
        let known = self.known.read();
        let mut seen: FxHashSet<&str> = FxHashSet::default();
        let mut new = Vec::new();
        let mut last: Option<&str> = None;
        for (s, id) in batch.iter().zip(ids) {
            let (Some(origin), Some(_)) = (&s.origin, id) else {
                continue;
            };
            let Some(metric) = s.labels.metric_name() else {
                continue;
            };
            // A line's tag sets repeat its fields: skip the common case cheaply.
            if last == Some(metric) {
                continue;
            }
            last = Some(metric);
            if !known.contains_key(metric) && seen.insert(metric) {
                new.push((metric, origin));
            }
        }
        new
    }

    /// Remembers names found by [`Measurements::unknown`], but for those
    /// remembered meanwhile: the first write of a name decides. Writes sled
    /// before the map, so that a failed write leaves both as they were.
    pub fn remember(&self, new: &[(&str, &Arc<MeasurementField>)]) -> Result<(), StorageError> {
        let new: Vec<&(&str, &Arc<MeasurementField>)> = {
            let known = self.known.read();
            new.iter()
                .filter(|(m, _)| !known.contains_key(*m))
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for (metric, origin) in &new {
            batch.insert(metric.as_bytes(), encode(origin));
        }
        self.tree.apply_batch(batch)?;
        let mut known = self.known.write();
        for (metric, origin) in new {
            known.insert((*metric).to_owned(), (*origin).clone());
        }
        Ok(())
    }

    pub fn get(&self, metric: &str) -> Option<Arc<MeasurementField>> {
        self.known.read().get(metric).cloned()
    }

    /// The metric names written as fields of `measurement`, with their field.
    pub fn metrics_of(&self, measurement: &str) -> Vec<(String, String)> {
        self.known
            .read()
            .iter()
            .filter(|(_, o)| o.measurement == measurement)
            .map(|(m, o)| (m.clone(), o.field.clone()))
            .collect()
    }

    /// Forgets the names no series has any more.
    pub fn retain(&self, metric_names: &FxHashSet<&str>) -> Result<usize, StorageError> {
        let gone: Vec<String> = self
            .known
            .read()
            .keys()
            .filter(|m| !metric_names.contains(m.as_str()))
            .cloned()
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for m in &gone {
            batch.remove(m.as_bytes());
        }
        self.tree.apply_batch(batch)?;
        let mut known = self.known.write();
        for m in &gone {
            known.remove(m);
        }
        Ok(gone.len())
    }
}

fn encode(origin: &MeasurementField) -> Vec<u8> {
    let mut v = Vec::with_capacity(origin.measurement.len() + origin.field.len() + 4);
    put_bytes(&mut v, origin.measurement.as_bytes());
    put_bytes(&mut v, origin.field.as_bytes());
    v
}

/// One entry of the tree, or what is wrong with it.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<(String, MeasurementField), StorageError> {
    let corrupt = || {
        StorageError::Corrupt(format!(
            "measurements entry {:?} is damaged",
            String::from_utf8_lossy(key)
        ))
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt());
    let mut v = value;
    let measurement = text(get_bytes(&mut v).map_err(|_| corrupt())?)?;
    let field = text(get_bytes(&mut v).map_err(|_| corrupt())?)?;
    if !v.is_empty() || measurement.is_empty() || field.is_empty() {
        return Err(corrupt());
    }
    Ok((text(key)?, MeasurementField { measurement, field }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base::Labels;

    fn written(metric: &str, measurement: &str, field: &str) -> SeriesSamples {
        SeriesSamples {
            labels: Labels::from_pairs([("__name__", metric), ("loc", "lab")]),
            samples: vec![(0, 1.0)],
            origin: Some(Arc::new(MeasurementField {
                measurement: measurement.into(),
                field: field.into(),
            })),
        }
    }

    #[test]
    fn the_first_write_of_a_name_decides_and_survives_a_reopen() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let m = Measurements::load(&db).unwrap();
        let batch = [
            written("room_aaa_temp", "room_aaa", "temp"),
            written("room_aaa_temp", "room", "aaa_temp"),
            written("cpu", "cpu", "value"),
            // Not stored: not remembered.
            written("gone_x", "gone", "x"),
            SeriesSamples::new(Labels::from_pairs([("__name__", "mqtt_t")]), vec![]),
        ];
        let new = m.unknown(&batch, &[Some(1), Some(2), Some(3), None, Some(4)]);
        assert_eq!(new.len(), 2, "{new:?}");
        m.remember(&new).unwrap();
        let later = [written("cpu", "c", "pu")];
        m.remember(&m.unknown(&later, &[Some(5)])).unwrap();
        // Found unknown before another write remembered it: the first
        // remembered still decides.
        let racing = [written("room_aaa_temp", "room", "aaa_temp")];
        let origin = racing[0].origin.as_ref().unwrap();
        m.remember(&[("room_aaa_temp", origin)]).unwrap();
        let again = Measurements::load(&db).unwrap();
        for m in [&m, &again] {
            assert_eq!(m.known.read().len(), 2);
            assert_eq!(m.get("room_aaa_temp").unwrap().measurement, "room_aaa");
            assert_eq!(m.get("cpu").unwrap().field, "value");
            assert_eq!(
                m.metrics_of("room_aaa"),
                [("room_aaa_temp".into(), "temp".into())]
            );
            assert!(m.get("gone_x").is_none() && m.get("mqtt_t").is_none());
        }
        let keep: FxHashSet<&str> = ["cpu"].into_iter().collect();
        assert_eq!(m.retain(&keep).unwrap(), 1);
        assert_eq!(Measurements::load(&db).unwrap().known.read().len(), 1);
    }

    #[test]
    fn damaged_entries_are_named_and_skipped() {
        let e = decode(b"x_y", &[9, b'a']).unwrap_err().to_string();
        assert!(e.contains("\"x_y\""), "{e}");
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree(TREE)
            .unwrap()
            .insert("x_y", &[9, b'a'])
            .unwrap();
        let m = Measurements::load(&db).unwrap();
        assert!(m.get("x_y").is_none());
        let again = [written("x_y", "x", "y")];
        m.remember(&m.unknown(&again, &[Some(1)])).unwrap();
        assert_eq!(
            Measurements::load(&db).unwrap().get("x_y").unwrap().field,
            "y"
        );
        let mut v = Vec::new();
        put_bytes(&mut v, b"x");
        put_bytes(&mut v, b"y");
        assert_eq!(decode(b"x_y", &v).unwrap().1.field, "y");
    }
}
