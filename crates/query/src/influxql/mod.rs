//! InfluxQL, read-only, over the series line protocol writes: measurement
//! `m` with field `f` is the series `m_f` (field `value` is `m` itself), tags
//! are labels. Answers in InfluxDB 1.x's JSON shape
//! (`results[].series[].{name,tags,columns,values}`).
//!
//! Reads raw samples only (rollup buckets are left-open, InfluxQL intervals
//! right-open, so they are not interchangeable), within `query.max_samples`
//! and `query.timeout`. Measurement and field names are those the store
//! remembers from the write that named them, else guessed from metric names
//! (`names`); `docs/query.md` says what that means.
//!
//! This file runs the statements of a query; `parse` reads them, `select`
//! and `show` answer them, `names` maps measurements to series, `condition`
//! and `time` evaluate `WHERE`, `response` is the JSON written back.

mod condition;
mod error;
mod names;
pub mod parse;
mod response;
mod select;
mod show;
mod time;

use std::time::{Duration, Instant};

pub use error::{InfluxError, InvalidEpoch, UnparsableQuery};
pub use response::{rfc3339, Epoch, Response, SeriesOut, StatementResult};

use config::QueryConfig;
use parse::Statement;
use store::Storage;

/// What every statement of one query shares.
struct Ctx<'a> {
    storage: &'a Storage,
    config: &'a QueryConfig,
    /// `now()`, the same for every statement.
    now: i64,
    epoch: Epoch,
    deadline: Instant,
    timeout: Duration,
}

impl Ctx<'_> {
    fn check_deadline(&self) -> Result<(), InfluxError> {
        if Instant::now() > self.deadline {
            return Err(InfluxError::Timeout(self.timeout));
        }
        Ok(())
    }
}

/// Runs `q` (one or more statements). A statement that fails reports its
/// error in its own result, as InfluxDB does; a query that does not parse is
/// an `Err`.
pub fn execute(
    storage: &Storage,
    config: &QueryConfig,
    q: &str,
    epoch: Epoch,
) -> Result<Response, UnparsableQuery> {
    let statements = parse::parse(q)?;
    let ctx = Ctx {
        storage,
        config,
        now: storage.now_ms(),
        epoch,
        deadline: Instant::now() + config.timeout.0,
        timeout: config.timeout.0,
    };
    let mut results = Vec::new();
    for (i, st) in statements.iter().enumerate() {
        let span = tracing::info_span!("influxql", statement = i);
        let _g = span.enter();
        let mut r = StatementResult {
            statement_id: i,
            series: None,
            error: None,
        };
        match run(&ctx, st) {
            Ok(series) if series.is_empty() => {}
            Ok(series) => r.series = Some(series),
            Err(e) => r.error = Some(e.to_string()),
        }
        results.push(r);
    }
    Ok(Response { results })
}

fn run(ctx: &Ctx, st: &Statement) -> Result<Vec<SeriesOut>, InfluxError> {
    match st {
        Statement::Select(s) => select::select(ctx, s),
        Statement::ShowMeasurements { condition, limit } => {
            show::measurements(ctx, condition.as_ref(), *limit)
        }
        Statement::ShowDatabases => Ok(show::databases()),
        Statement::ShowTagKeys { from } => show::tag_keys(ctx, from.as_deref()),
        Statement::ShowFieldKeys { from } => show::field_keys(ctx, from.as_deref()),
        Statement::ShowTagValues {
            from,
            key,
            condition,
        } => show::tag_values(ctx, from.as_deref(), key, condition.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use base::{Clock, ManualClock};
    use config::StorageConfig;
    use store::{Labels, SeriesSamples};

    #[test]
    fn the_station_check_answers_in_influxdbs_shape() {
        let dir = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = ManualClock::new(1_767_225_600_000);
        let cfg = StorageConfig {
            retention: config::Duration::from_secs(20 * 365 * 86_400),
            ..Default::default()
        };
        let storage = Storage::open(&cfg, dir.path(), clock).unwrap().0;
        // `JNU_rasp,id=RaspberryPi alcohol_gas=9i,…,temp=26.52 1505724776794724369`
        // as line protocol stores it (seed-payloads.md §3), in ms.
        let t = 1_505_724_776_794;
        let batch: Vec<SeriesSamples> = [
            ("alcohol_gas", 9.0),
            ("co_gas", 117.0),
            ("dust", 0.05),
            ("latitude", 35.17959),
            ("light", 554.0),
            ("longitude", 126.90822),
            ("temp", 26.52),
        ]
        .into_iter()
        .map(|(field, v)| {
            let mut labels = Labels::from_pairs([("id", "RaspberryPi")]);
            labels.set(base::labels::METRIC_NAME, &format!("JNU_rasp_{field}"));
            SeriesSamples::new(labels, vec![(t, v)])
        })
        .collect();
        storage.append(&batch).unwrap();
        let config = QueryConfig::default();
        let answer = |q: &str| {
            let r = execute(&storage, &config, q, Epoch::Rfc3339).unwrap();
            serde_json::to_string(&r).unwrap()
        };
        assert_eq!(
            answer("SELECT * FROM JNU_rasp"),
            r#"{"results":[{"statement_id":0,"series":[{"name":"JNU_rasp","columns":["time","alcohol_gas","co_gas","dust","id","latitude","light","longitude","temp"],"values":[["2017-09-18T08:52:56.794Z",9,117,0.05,"RaspberryPi",35.17959,554,126.90822,26.52]]}]}]}"#
        );
        // Each statement answers on its own: one failing leaves the others.
        assert_eq!(
            answer("SHOW DATABASES; SELECT median(temp) FROM JNU_rasp; SELECT * FROM nothing"),
            r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["perch"]]}]},{"statement_id":1,"error":"function median() is not supported: use one of mean, min, max, sum, count, first, last"},{"statement_id":2}]}"#
        );
        assert_eq!(
            execute(&storage, &config, "SELECT * FROM", Epoch::Rfc3339)
                .unwrap_err()
                .to_string(),
            "error parsing query: found EOF, expected identifier at char 14"
        );
    }

    /// Series no write named (imports, MQTT, format 1 data) beside named
    /// ones: a guess that lands on a named measurement joins it, under its
    /// name as written, in SHOW as in FROM.
    #[test]
    fn guesses_join_the_named_measurements() {
        let dir = tempfile::tempdir().unwrap();
        let t = 1_767_225_600_000;
        let clock: Arc<dyn Clock> = ManualClock::new(t);
        let storage = Storage::open(&StorageConfig::default(), dir.path(), clock)
            .unwrap()
            .0;
        let series = |name: &str, site: &str, origin: Option<(&str, &str)>| {
            let mut labels = Labels::from_pairs([("site", site)]);
            labels.set(base::labels::METRIC_NAME, name);
            SeriesSamples {
                origin: origin.map(|(m, f)| {
                    Arc::new(store::MeasurementField {
                        measurement: m.into(),
                        field: f.into(),
                    })
                }),
                ..SeriesSamples::new(labels, vec![(t, 1.0)])
            }
        };
        storage
            .append(&[
                series("env_temp", "s0", None),
                series("env_hum", "s0", None),
                series("boiler_room_x", "s0", None),
            ])
            .unwrap();
        storage
            .append(&[
                series("env_temp", "s0", Some(("env", "temp"))),
                series("boiler_room_temp_c", "s1", Some(("boiler room", "temp.c"))),
            ])
            .unwrap();
        let config = QueryConfig::default();
        let answer = |q: &str| {
            let r = execute(&storage, &config, q, Epoch::Rfc3339).unwrap();
            serde_json::to_value(&r).unwrap()["results"][0]["series"].clone()
        };
        let names = |v: serde_json::Value| -> Vec<(String, Vec<String>)> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let values = s["values"].as_array().unwrap();
                    let first = values.iter().map(|v| v[0].as_str().unwrap().to_string());
                    (s["name"].as_str().unwrap().to_string(), first.collect())
                })
                .collect()
        };
        let both = vec![
            (
                "boiler room".to_string(),
                vec!["temp.c".to_string(), "x".to_string()],
            ),
            (
                "env".to_string(),
                vec!["hum".to_string(), "temp".to_string()],
            ),
        ];
        assert_eq!(names(answer("SHOW FIELD KEYS")), both);
        assert_eq!(
            names(answer("SHOW MEASUREMENTS")),
            [(
                "measurements".to_string(),
                vec!["boiler room".to_string(), "env".to_string()]
            )]
        );
        assert_eq!(
            names(answer("SHOW FIELD KEYS FROM \"boiler room\"")),
            both[..1]
        );
        assert_eq!(names(answer("SHOW FIELD KEYS FROM env")), both[1..]);
    }

    #[test]
    fn epochs() {
        assert!(matches!(Epoch::parse(None), Ok(Epoch::Rfc3339)));
        assert!(matches!(
            Epoch::parse(Some("s")),
            Ok(Epoch::Unit { mul: 1, div: 1000 })
        ));
        assert_eq!(
            Epoch::parse(Some("fortnight")).unwrap_err().to_string(),
            "invalid epoch \"fortnight\": use h, m, s, ms, u or ns"
        );
    }
}
