//! The rules inside `perch serve`: loads the rule files of `[alerts]`,
//! evaluates each group every interval on the query threads (so a rule is
//! held to the query limits and cannot stall anything else), writes what
//! the rules produce into the store, and keeps every rule's alerts in the
//! store's `alerts` tree, so that after a restart pending alerts go on
//! with their `for` timers and firing ones are still firing (not fired
//! anew).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use base::Clock;
use config::{AlertsConfig, QueryConfig};
use store::{Storage, Tree};
use thiserror::Error;

use crate::eval::{Alert, AlertState, EngineQuerier, Group, StoreSink};
use crate::notify::Notifier;
use crate::rulefile::{self, RuleFileError};
use crate::silence::Silences;
use crate::template::Template;

#[derive(Debug, Error)]
pub enum AlertsError {
    #[error("{0}")]
    RuleFile(#[from] RuleFileError),
    #[error("cannot read the rule file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Storage(#[from] store::StorageError),
    #[error("invalid rule file name {0:?}: letters, digits, '.', '-' and '_' only, at most 64")]
    BadName(String),
    #[error("no rule file {0:?} was added through the API")]
    NoSuchFile(String),
    #[error("the database: {0}")]
    Database(#[from] sled::Error),
    #[error(transparent)]
    Query(#[from] query::QueryError),
    #[error("{0}")]
    Invalid(String),
}

impl base::HasKind for AlertsError {
    fn kind(&self) -> base::ErrorKind {
        match self {
            AlertsError::RuleFile(_) => base::ErrorKind::InvalidArgument,
            AlertsError::Read { .. } => base::ErrorKind::Internal,
            AlertsError::Storage(e) => e.kind(),
            AlertsError::BadName(_) => base::ErrorKind::InvalidArgument,
            AlertsError::NoSuchFile(_) => base::ErrorKind::NotFound,
            AlertsError::Database(_) => base::ErrorKind::Internal,
            AlertsError::Query(e) => e.kind(),
            AlertsError::Invalid(_) => base::ErrorKind::InvalidArgument,
        }
    }
}

/// Every rule group perch evaluates.
pub struct Manager {
    storage: Arc<Storage>,
    querier: Arc<EngineQuerier>,
    clock: Arc<dyn Clock>,
    groups: RwLock<Vec<Arc<Mutex<Group>>>>,
    state: sled::Tree,
    /// Rule files added through the API: name → the YAML as sent.
    api_files: sled::Tree,
    /// The files of the config and the built-in rules, as read at start.
    start_files: Vec<(String, String)>,
    interval_ms: i64,
    notifier: Option<Arc<Notifier>>,
    repeat_ms: i64,
    silences: Arc<Silences>,
    /// Devices whose DeviceOffline alert fires, by the group (file, name)
    /// the rule is in.
    offline: Arc<Mutex<OfflineByGroup>>,
}

/// Devices whose DeviceOffline fires, by the group (file, name) saying so.
type OfflineByGroup = HashMap<(String, String), HashSet<String>>;

/// The name a rule file added through the API goes by in `/api/v1/rules`.
fn api_file_name(name: &str) -> String {
    format!("api:{name}")
}

fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// perch's own rules (`[alerts] builtin`), a plain Prometheus rule file.
pub const BUILTIN_RULES: &str = include_str!("builtin_rules.yml");
/// The name the built-in rules go by in `/api/v1/rules`.
pub const BUILTIN_FILE: &str = "builtin";
/// The name the rules of `[[alerts.anomaly]]` go by.
pub const ANOMALY_FILE: &str = "anomaly";

/// The rule files a configured path names: the path itself, or a
/// directory's `*.yml` and `*.yaml`, sorted.
fn rule_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AlertsError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let entries = std::fs::read_dir(path).map_err(|source| AlertsError::Read {
                path: path.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Whether the notification targets are to hear of this alert now: it
/// started firing, it has fired for the repeat interval since they last
/// heard, or it resolved after firing.
/// (A firing alert not yet sent since it became active — because it was
/// silenced or inhibited then — is sent once it no longer is; a resolution
/// is sent only for an alert that was.)
fn notify_now(a: &Alert, before: Option<AlertState>, ts: i64, repeat_ms: i64) -> bool {
    let sent_since_active = a.last_sent_at.is_some_and(|t| t >= a.active_at);
    match a.state {
        AlertState::Firing => {
            !sent_since_active || a.last_sent_at.is_some_and(|t| ts - t >= repeat_ms)
        }
        AlertState::Inactive => before == Some(AlertState::Firing) && sent_since_active,
        AlertState::Pending => false,
    }
}

/// The alert whose firing holds back the notifications of every other
/// alert of the same device (Alertmanager's inhibition, built in): a
/// device that is offline sends nothing, and its silence is not news.
const INHIBITING_ALERT: &str = "DeviceOffline";

/// The key of a rule's alerts in the `alerts` tree.
fn state_key(group: &Group, index: usize, name: &str) -> Vec<u8> {
    format!("{}\0{}\0{index}\0{name}", group.file, group.name()).into_bytes()
}

fn lock(g: &Mutex<Group>) -> MutexGuard<'_, Group> {
    g.lock().unwrap_or_else(|e| e.into_inner())
}

impl Manager {
    /// Loads the rule files (every problem of a file is an error, with its
    /// line) and the alerts kept from before.
    /// `external_url` is how people reach perch's web UI: notifications
    /// link to it. `email_tls`: the TLS client configuration e-mail
    /// targets use.
    pub fn open(
        config: &AlertsConfig,
        query: &QueryConfig,
        storage: Arc<Storage>,
        clock: Arc<dyn Clock>,
        external_url: String,
        email_tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    ) -> Result<Manager, AlertsError> {
        let interval_ms = config.evaluation_interval().0.as_millis() as i64;
        let state = storage.trees().open(Tree::Alerts)?;
        let api_files = storage.trees().open(Tree::AlertRuleFiles)?;
        let mut start_files = Vec::new();
        for path in rule_files(&config.rule_files)? {
            let text = std::fs::read_to_string(&path).map_err(|source| AlertsError::Read {
                path: path.clone(),
                source,
            })?;
            start_files.push((path.display().to_string(), text));
        }
        if config.builtin {
            start_files.push((BUILTIN_FILE.to_string(), BUILTIN_RULES.to_string()));
        }
        if !config.anomaly.is_empty() {
            start_files.push((
                ANOMALY_FILE.to_string(),
                crate::anomaly::rule_file(&config.anomaly),
            ));
        }
        for (i, n) in config.notify.iter().enumerate() {
            if let Some(body) = &n.body {
                Template::parse(body)
                    .map_err(|e| AlertsError::Invalid(format!("alerts.notify[{i}].body: {e}")))?;
            }
        }
        let notifier = if config.notify.is_empty() {
            None
        } else {
            let mut n = Notifier::new(
                config.notify.clone(),
                storage.trees().open(Tree::AlertNotifications)?,
                clock.clone(),
                external_url,
            );
            if let Some(tls) = email_tls {
                n.set_tls(tls);
            }
            n.set_repeat_interval(config.repeat_interval().0.as_millis() as i64);
            Some(Arc::new(n))
        };
        let silences = Arc::new(Silences::open(storage.trees().open(Tree::AlertSilences)?));
        let manager = Manager {
            querier: Arc::new(EngineQuerier(query::promql::Engine::new(
                storage.clone(),
                query,
            ))),
            storage,
            clock,
            groups: RwLock::new(Vec::new()),
            state,
            api_files,
            start_files,
            interval_ms,
            notifier,
            repeat_ms: config.repeat_interval().0.as_millis() as i64,
            silences,
            offline: Arc::new(Mutex::new(HashMap::new())),
        };
        let groups = manager.load(None)?;
        let rules: usize = groups.iter().map(|g| lock(g).rules.len()).sum();
        tracing::info!(
            groups = groups.len(),
            rules,
            "alerting and recording rules loaded"
        );
        *manager.groups.write().unwrap_or_else(|e| e.into_inner()) = groups;
        Ok(manager)
    }

    /// The groups of every rule file — the config's, the built-in ones and
    /// the API's, with `change` (name, new text or removal) applied to the
    /// API's — each rule with the alerts kept for it.
    fn load(
        &self,
        change: Option<(&str, Option<&str>)>,
    ) -> Result<Vec<Arc<Mutex<Group>>>, AlertsError> {
        let mut files = self.start_files.clone();
        for entry in self.api_files.iter() {
            let (k, v) = entry?;
            let name = String::from_utf8_lossy(&k).into_owned();
            if change.is_some_and(|(n, _)| n == name) {
                continue;
            }
            files.push((
                api_file_name(&name),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        if let Some((name, Some(text))) = change {
            files.push((api_file_name(name), text.to_string()));
        }
        let mut groups = Vec::new();
        for (name, text) in files {
            let file = rulefile::parse(&name, &text)?;
            for spec in file.groups {
                let mut group = Group::new(&name, spec, self.interval_ms);
                for i in 0..group.rules.len() {
                    let key = state_key(&group, i, group.rules[i].name());
                    let kept: Option<Vec<Alert>> = self
                        .state
                        .get(&key)
                        .ok()
                        .flatten()
                        .and_then(|v| serde_json::from_slice(&v).ok());
                    if let Some(alerts) = kept {
                        group.rules[i].restore(alerts);
                    }
                }
                groups.push(Arc::new(Mutex::new(group)));
            }
        }
        Ok(groups)
    }

    /// Adds or replaces a rule file through the API: checked first (every
    /// problem with its line), kept as sent, evaluated from the next tick.
    pub fn put_file(&self, name: &str, text: &str) -> Result<(), AlertsError> {
        if !valid_file_name(name) {
            return Err(AlertsError::BadName(name.to_string()));
        }
        rulefile::parse(name, text)?;
        let groups = self.load(Some((name, Some(text))))?;
        self.api_files.insert(name.as_bytes(), text.as_bytes())?;
        self.api_files.flush()?;
        *self.groups.write().unwrap_or_else(|e| e.into_inner()) = groups;
        tracing::info!(file = name, "rule file added through the API");
        Ok(())
    }

    /// A rule file added through the API, exactly as it was sent.
    pub fn file(&self, name: &str) -> Result<String, AlertsError> {
        match self.api_files.get(name.as_bytes())? {
            Some(v) => Ok(String::from_utf8_lossy(&v).into_owned()),
            None => Err(AlertsError::NoSuchFile(name.to_string())),
        }
    }

    /// The names of the rule files added through the API.
    pub fn files(&self) -> Result<Vec<String>, AlertsError> {
        self.api_files
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    pub fn delete_file(&self, name: &str) -> Result<(), AlertsError> {
        if self.api_files.get(name.as_bytes())?.is_none() {
            return Err(AlertsError::NoSuchFile(name.to_string()));
        }
        let groups = self.load(Some((name, None)))?;
        self.api_files.remove(name.as_bytes())?;
        self.api_files.flush()?;
        *self.groups.write().unwrap_or_else(|e| e.into_inner()) = groups;
        Ok(())
    }

    /// What perch's alerts did over `(start, end]` (see [`crate::history`]);
    /// blocking: run it on a query thread.
    pub fn history(
        &self,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<Vec<crate::history::Episode>, AlertsError> {
        crate::history::history(&self.querier.0, start_ms, end_ms)
    }

    /// An alerting rule evaluated over `[start, end]` of the stored data
    /// (see [`crate::history::preview`]); blocking: run it on a query
    /// thread.
    pub fn preview(
        &self,
        expr: &str,
        for_ms: i64,
        keep_firing_for_ms: i64,
        start_ms: i64,
        end_ms: i64,
    ) -> Result<crate::history::Preview, AlertsError> {
        let deadline = std::time::Instant::now() + crate::history::PREVIEW_BUDGET;
        let querier = crate::eval::UntilQuerier {
            engine: &self.querier,
            deadline,
        };
        crate::history::preview(
            &querier,
            deadline,
            expr,
            for_ms,
            keep_firing_for_ms,
            start_ms,
            end_ms,
        )
    }

    /// The silences (the API adds, lists and expires them).
    pub fn silences(&self) -> &Silences {
        &self.silences
    }

    /// The notification queues and senders, when targets are configured:
    /// the server runs them with its MQTT broker.
    pub fn notifier(&self) -> Option<&Arc<Notifier>> {
        self.notifier.as_ref()
    }

    /// The groups, for the API; lock one to read it.
    pub fn groups(&self) -> Vec<Arc<Mutex<Group>>> {
        self.groups
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Evaluates each group at the multiples of its interval until
    /// shutdown. A group that takes longer than its interval skips the
    /// evaluations it missed (and counts them in the log), as Prometheus'.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        // When each group (by file and name) is next due; groups change
        // when rule files are added through the API.
        let mut next: HashMap<(String, String), i64> = HashMap::new();
        loop {
            let now = self.clock.now_ms();
            for group in self.groups() {
                let (interval, key) = {
                    let g = lock(&group);
                    (g.interval_ms.max(1), (g.file.clone(), g.name().to_string()))
                };
                let due = *next
                    .entry(key.clone())
                    .or_insert(now - now.rem_euclid(interval));
                if now < due {
                    continue;
                }
                // The evaluation time is the latest multiple of the interval.
                let ts = now - now.rem_euclid(interval);
                if ts > due {
                    tracing::debug!(
                        group = key.1,
                        missed = (ts - due) / interval,
                        "rule group evaluations missed"
                    );
                }
                next.insert(key, ts + interval);
                self.eval_group(group, ts).await;
            }
            let sleep = tokio::time::sleep(Duration::from_millis(250));
            tokio::select! {
                _ = sleep => {}
                _ = base::stopping(&mut shutdown) => return,
            }
        }
    }

    async fn eval_group(&self, group: Arc<Mutex<Group>>, ts: i64) {
        let querier = self.querier.clone();
        let storage = self.storage.clone();
        let state = self.state.clone();
        let notifier = self.notifier.clone();
        let repeat_ms = self.repeat_ms;
        let silences = self.silences.clone();
        let offline = self.offline.clone();
        let clock = self.clock.clone();
        let done = query::run(move || {
            let mut g = lock(&group);
            let span = tracing::info_span!("rule_group", group = g.name(), file = %g.file);
            let _entered = span.enter();
            let before: Vec<HashMap<base::Labels, AlertState>> = g
                .rules
                .iter()
                .map(|r| {
                    r.alerts()
                        .into_iter()
                        .map(|a| (a.labels.clone(), a.state))
                        .collect()
                })
                .collect();
            g.eval(ts, querier.as_ref(), &mut StoreSink(&storage));
            {
                let here: HashSet<String> = g
                    .rules
                    .iter()
                    .filter(|r| r.name() == INHIBITING_ALERT)
                    .flat_map(|r| r.alerts())
                    .filter(|a| a.state == AlertState::Firing)
                    .filter_map(|a| a.labels.get("device").map(str::to_string))
                    .collect();
                let key = (g.file.clone(), g.name().to_string());
                offline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, here);
            }
            if let Some(n) = &notifier {
                let resend_due = n.has_alertmanager();
                let off: HashSet<String> = offline
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .flatten()
                    .cloned()
                    .collect();
                // Silences hold back what is sent from the moment they are
                // made, as Alertmanager's: checked at the time of sending,
                // not at the evaluation time (up to an interval earlier), or
                // a silence made just before a sample came would let it by.
                let sending_at = clock.now_ms().max(ts);
                for (rule, before) in g.rules.iter_mut().zip(&before) {
                    let inhibitable = rule.name() != INHIBITING_ALERT;
                    for a in rule.alerts_mut() {
                        let held = silences.silenced_by(&a.labels, sending_at).is_some()
                            || (inhibitable
                                && a.labels.get("device").is_some_and(|d| off.contains(d)));
                        if held && a.state == AlertState::Firing {
                            n.withdraw(a);
                            continue;
                        }
                        if notify_now(a, before.get(&a.labels).copied(), ts, repeat_ms) {
                            if a.state == AlertState::Firing {
                                a.last_sent_at = Some(ts);
                                a.last_resent_at = Some(ts);
                            }
                            n.enqueue(a, false);
                        } else if resend_due
                            && a.state == AlertState::Firing
                            && a.last_resent_at
                                .is_none_or(|t| ts - t >= crate::notify::ALERTMANAGER_RESEND_MS)
                        {
                            a.last_resent_at = Some(ts);
                            n.enqueue(a, true);
                        }
                    }
                }
            }
            for (i, rule) in g.rules.iter().enumerate() {
                if !rule.is_alerting() {
                    continue;
                }
                let key = state_key(&g, i, rule.name());
                let alerts: Vec<&Alert> = rule.alerts();
                let value = serde_json::to_vec(&alerts).unwrap_or_default();
                // Written only when it changed: the SD card is not written
                // every evaluation for alerts that stay as they are.
                if state.get(&key).ok().flatten().as_deref() != Some(&value[..]) {
                    if let Err(e) = state.insert(key, value) {
                        tracing::warn!(error = %e, "alert state not kept");
                    }
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "rule group not evaluated");
        }
    }
}

#[cfg(test)]
mod tests {
    use base::{Labels, ManualClock, SeriesSamples};

    use super::*;
    use crate::silence::{Matcher, Silence};

    /// An evaluation runs at the last multiple of its interval, up to an
    /// interval after it: a silence made in between, before the sample
    /// that fires came, still holds the notification back.
    #[tokio::test]
    async fn a_silence_made_after_the_evaluation_time_holds_back_what_is_sent_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("r.yml");
        std::fs::write(
            &rules,
            "groups:\n  - name: g\n    rules:\n      - alert: Warm\n        expr: env_temp > 0\n",
        )
        .unwrap();
        let config: AlertsConfig = toml::from_str(&format!(
            "builtin = false\nrule_files = [{rules:?}]\nevaluation_interval = \"1s\"\n\
             [[notify]]\nname = \"home\"\nkind = \"mqtt\"\n"
        ))
        .unwrap();
        let evaluation_ts = 1_700_000_000_000;
        let clock = ManualClock::new(evaluation_ts + 300);
        let (storage, _) = Storage::open(
            &config::StorageConfig::default(),
            &dir.path().join("data"),
            clock.clone(),
        )
        .unwrap();
        let manager = Manager::open(
            &config,
            &QueryConfig::default(),
            storage.clone(),
            clock.clone(),
            "http://perch".into(),
            None,
        )
        .unwrap();
        let fridge = Silence {
            id: String::new(),
            matchers: vec![Matcher {
                name: "device".into(),
                value: "fridge".into(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at: clock.now_ms(),
            ends_at: clock.now_ms() + 600_000,
            created_by: "test".into(),
            comment: String::new(),
        };
        manager.silences().add(fridge, clock.now_ms()).unwrap();
        let sample = |device: &str| {
            SeriesSamples::new(
                Labels::from_pairs([("__name__", "env_temp"), ("device", device)]),
                vec![(evaluation_ts, 5.0)],
            )
        };
        storage.append(&[sample("fridge"), sample("oven")]).unwrap();
        clock.set(evaluation_ts + 700);
        let group = manager.groups().remove(0);
        manager.eval_group(group.clone(), evaluation_ts).await;

        let mut firing: Vec<String> = lock(&group).rules[0]
            .alerts()
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .map(|a| a.labels.get("device").unwrap().to_string())
            .collect();
        firing.sort();
        assert_eq!(firing, ["fridge", "oven"]);
        // The oven's alert only (the mqtt target queues a message per alert).
        assert_eq!(manager.notifier().unwrap().queued("home"), 1);
    }
}
