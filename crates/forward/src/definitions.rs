//! Targets as they are defined: the checks every definition passes (the
//! config file's through [`check_config`], the API's through
//! [`check_api_definition`]), the definitions added through the API (kept
//! in the sled tree `forward_targets`, created, changed and deleted at
//! runtime) and how a definition is shown without its secrets.

use std::sync::Arc;

use serde::Serialize;

use super::{ForwardError, Forwarder, TopicTemplate};
use crate::target::Target;
use config::{ForwardConfig, ForwardKind};

/// A target's definition as the API shows it: the password withheld.
#[derive(Clone, Debug, Serialize)]
pub struct TargetDefinition {
    #[serde(flatten)]
    pub config: ForwardConfig,
    pub has_password: bool,
    /// `config` (read-only here) or `api`.
    pub source: &'static str,
}

/// Checks what only forwarding understands in a target: its Kafka topic
/// template. The keys of the issues are relative to the target.
fn check_target(c: &ForwardConfig, issues: &mut config::Issues) {
    if c.kind == ForwardKind::Kafka {
        if let Err(e) = TopicTemplate::parse(&c.topic) {
            issues.add("topic", e.to_string());
        }
    }
}

/// A target's shape (the config crate's checks) and meaning, all problems
/// at once.
pub fn validate_target(c: &ForwardConfig) -> Result<(), config::Issues> {
    let mut issues = c.validate().err().unwrap_or_default();
    check_target(c, &mut issues);
    issues.into_result()
}

/// The `[[forward]]` targets of a configuration (a [`config::Check`]).
pub fn check_config(config: &config::Config, issues: &mut config::Issues) {
    for (i, c) in config.forward.iter().enumerate() {
        let mut mine = config::Issues::default();
        check_target(c, &mut mine);
        issues.extend_under(&format!("forward[{i}]"), mine);
    }
}

/// Fields the API does not take: they name files on the box, whose
/// contents would be sent to a destination the API chose.
fn check_api_definition(c: &ForwardConfig) -> Result<(), ForwardError> {
    if c.bearer_token_file.is_some() || c.ca_file.is_some() {
        return Err(ForwardError::Invalid(
            "bearer_token_file and ca_file name files on the box: set them in the config file"
                .into(),
        ));
    }
    validate_target(c).map_err(|why| ForwardError::Invalid(why.to_string()))
}

/// The definitions kept in `tree` that can run: those shadowed by a target
/// of the config file, unreadable or no longer valid are logged and left
/// out, so one bad entry does not keep perch from starting.
pub(crate) fn stored(
    tree: &sled::Tree,
    from_config: &[ForwardConfig],
) -> Result<Vec<ForwardConfig>, ForwardError> {
    let mut out = Vec::new();
    for kv in tree.iter() {
        let (_, v) = kv?;
        match serde_json::from_slice::<ForwardConfig>(&v) {
            Ok(c) if from_config.iter().any(|f| f.name == c.name) => tracing::warn!(
                target = c.name,
                "forwarding target in the database shadowed by the config file"
            ),
            Ok(c) => match validate_target(&c) {
                Ok(()) => out.push(c),
                Err(why) => {
                    tracing::error!(target = c.name, "stored forwarding target skipped: {why}")
                }
            },
            Err(e) => tracing::error!(error = %e, "unreadable forwarding target skipped"),
        }
    }
    Ok(out)
}

impl Forwarder {
    /// Every target's definition, passwords withheld.
    pub fn definitions(&self) -> Vec<TargetDefinition> {
        self.targets().iter().map(|t| shown(t)).collect()
    }

    /// Adds a target through the API; it is kept in the database. A queue
    /// left behind under that name (by a target since removed from the
    /// config file) is discarded first.
    pub async fn create(&self, config: ForwardConfig) -> Result<(), ForwardError> {
        check_api_definition(&config)?;
        let _one = self.changes.lock().await;
        if self.find(&config.name).is_ok() {
            return Err(ForwardError::Exists(config.name));
        }
        let t = tokio::task::block_in_place(|| -> Result<_, ForwardError> {
            self.trees.drop_forward_queue(&config.name)?;
            self.save_definition(&config)?;
            self.launch(config, false)
        })?;
        tracing::info!(target = %t.config.name, "forwarding target added");
        self.swap(|v| v.push(t));
        Ok(())
    }

    /// Changes a target added through the API. Its queue, writer and
    /// counters carry on (nothing arriving meanwhile is lost); only its
    /// sender restarts. The kind cannot change. A password left out is kept
    /// while the destination stays the same.
    pub async fn update(&self, mut config: ForwardConfig) -> Result<(), ForwardError> {
        let _one = self.changes.lock().await;
        let old = self.find(&config.name)?;
        if old.from_config {
            return Err(ForwardError::FromConfig(config.name));
        }
        if config.kind != old.config.kind {
            return Err(ForwardError::Invalid(
                "kind: cannot change; delete the target and add it again".into(),
            ));
        }
        keep_password(&mut config, &old.config)?;
        check_api_definition(&config)?;
        old.halt_sender().await;
        let t = match tokio::task::block_in_place(|| self.redefine(&old, config)) {
            Ok(t) => t,
            Err(e) => {
                self.reinstate(&old)?;
                return Err(e);
            }
        };
        tracing::info!(target = %t.config.name, "forwarding target changed");
        self.replace(&old, t);
        Ok(())
    }

    /// Deletes a target added through the API, and what its queue held.
    pub async fn delete(&self, name: &str) -> Result<(), ForwardError> {
        let _one = self.changes.lock().await;
        let old = self.find(name)?;
        if old.from_config {
            return Err(ForwardError::FromConfig(name.to_string()));
        }
        self.swap(|v| v.retain(|t| !Arc::ptr_eq(t, &old)));
        old.halt_sender().await;
        let lane = old.lane.clone();
        let _ = tokio::task::spawn_blocking(move || lane.close()).await;
        tokio::task::block_in_place(|| -> Result<(), ForwardError> {
            self.definitions.remove(name.as_bytes())?;
            self.trees.drop_forward_queue(name)?;
            self.definitions.flush()?;
            Ok(())
        })?;
        tracing::info!(target = name, "forwarding target deleted with its queue");
        Ok(())
    }

    /// Stores a definition in `forward_targets`, on disk before it runs.
    fn save_definition(&self, c: &ForwardConfig) -> Result<(), ForwardError> {
        let json = serde_json::to_vec(c).map_err(|e| ForwardError::Setup(e.to_string()))?;
        self.definitions.insert(c.name.as_bytes(), json)?;
        self.definitions.flush()?;
        Ok(())
    }

    /// `old`'s lane under definition `config`, its sender stopped.
    fn redefine(&self, old: &Target, config: ForwardConfig) -> Result<Arc<Target>, ForwardError> {
        self.save_definition(&config)?;
        old.lane
            .queue
            .set_limits(config.queue_max_bytes.0, config.overflow);
        self.attach(config, old.lane.clone(), false)
    }

    /// A change that failed halfway: the old definition goes back to work
    /// over the same lane.
    fn reinstate(&self, old: &Arc<Target>) -> Result<(), ForwardError> {
        old.lane
            .queue
            .set_limits(old.config.queue_max_bytes.0, old.config.overflow);
        let back = self.attach(old.config.clone(), old.lane.clone(), false)?;
        self.replace(old, back);
        Ok(())
    }
}

/// A running target's definition, its secrets left out.
fn shown(t: &Target) -> TargetDefinition {
    let mut config = t.config.clone();
    let has_password = config.password.take().is_some() || url_password(&config.url);
    config.url = without_password(&config.url);
    TargetDefinition {
        config,
        has_password,
        source: if t.from_config { "config" } else { "api" },
    }
}

/// Gives a changed definition the old one's password where the API left
/// it out — in the URL as shown, or the `password` field — as long as it
/// goes to the same place as the same user: a password must not follow a
/// target to a destination the caller chose.
fn keep_password(config: &mut ForwardConfig, old: &ForwardConfig) -> Result<(), ForwardError> {
    if config.url != old.url && config.url == without_password(&old.url) {
        config.url = old.url.clone();
    }
    let same_place =
        config.url == old.url && config.brokers == old.brokers && config.username == old.username;
    if config.password.is_none() && old.password.is_some() {
        if !same_place {
            return Err(ForwardError::Invalid(
                "password: give it again, the destination or user changed".into(),
            ));
        }
        config.password = old.password.clone();
    }
    Ok(())
}

/// The URL without its password (user name kept).
fn without_password(url: &str) -> String {
    replace_password(url, None)
}

/// The URL with a placeholder for its password, for status and logs.
pub(crate) fn redact(url: &str) -> String {
    replace_password(url, Some("xxxxx"))
}

/// The URL with its password, if it has one, replaced by `by`.
fn replace_password(url: &str, by: Option<&str>) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(by);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

fn url_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_config_refuses_an_unclosed_kafka_topic_template() {
        let c = config::Config::parse(
            "[[forward]]\nname = \"k\"\nkind = \"kafka\"\nbrokers = [\"k:9092\"]\ntopic = \"{site\"\n",
            "p.toml",
        )
        .unwrap();
        let mut issues = config::Issues::default();
        check_config(&c, &mut issues);
        let [issue] = issues.0.as_slice() else {
            panic!("one issue expected: {issues}");
        };
        assert_eq!(issue.key, "forward[0].topic");
        assert!(issue.reason.contains("unclosed"), "{}", issue.reason);
        let why = validate_target(&c.forward[0]).unwrap_err();
        assert!(why.to_string().starts_with("topic: unclosed"), "{why}");
    }

    fn mqtt(url: &str, user: Option<&str>, password: Option<&str>) -> ForwardConfig {
        let mut c = config::Config::parse(
            &format!("[[forward]]\nname = \"m\"\nkind = \"mqtt\"\nurl = \"{url}\"\n"),
            "p.toml",
        )
        .unwrap()
        .forward
        .remove(0);
        c.username = user.map(str::to_string);
        c.password = password.map(str::to_string);
        c
    }

    #[test]
    fn a_password_left_out_stays_only_with_its_destination() {
        let old = mqtt("mqtt://h:1883", Some("u"), Some("secret"));
        let mut same = mqtt("mqtt://h:1883", Some("u"), None);
        keep_password(&mut same, &old).unwrap();
        assert_eq!(same.password.as_deref(), Some("secret"));
        for mut moved in [
            mqtt("mqtt://elsewhere:1883", Some("u"), None),
            mqtt("mqtt://h:1883", Some("v"), None),
        ] {
            assert!(keep_password(&mut moved, &old).is_err());
        }
        let old = mqtt("mqtt://u:secret@h:1883", None, None);
        let mut shown = mqtt(&without_password(&old.url), None, None);
        keep_password(&mut shown, &old).unwrap();
        assert_eq!(shown.url, old.url);
        assert_eq!(redact(&old.url), "mqtt://u:xxxxx@h:1883");
    }
}
