//! Who may publish and subscribe where. rumqttd has no authorization hook, so
//! perch decides on every PUBLISH and SUBSCRIBE in its own front end, before
//! the packet reaches the router (see `docs/mqtt.md`).

use accounts::{Role, UserInfo};
pub use base::topic::topic_matches;

/// What a connected client may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Admins, and anonymous clients where `mqtt.allow_anonymous` is set.
    Everything,
    /// Viewers: subscribe anywhere, publish nowhere.
    ReadOnly,
    /// Devices: publish and subscribe only within these filters.
    Within(Vec<String>),
}

impl Access {
    pub fn for_user(user: &UserInfo) -> Access {
        match user.role {
            Role::Admin => Access::Everything,
            Role::Viewer => Access::ReadOnly,
            Role::Device => Access::Within(user.topics.clone()),
        }
    }

    pub fn can_publish(&self, topic: &str) -> bool {
        match self {
            Access::Everything => true,
            Access::ReadOnly => false,
            Access::Within(filters) => filters.iter().any(|f| topic_matches(f, topic)),
        }
    }

    pub fn can_subscribe(&self, filter: &str) -> bool {
        // A shared subscription is judged by the filter it shares.
        let filter = strip_share(filter);
        match self {
            Access::Everything | Access::ReadOnly => true,
            Access::Within(allowed) => allowed.iter().any(|a| filter_covers(a, filter)),
        }
    }
}

fn strip_share(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, f)| f),
        None => filter,
    }
}

/// Whether every topic `inner` can match is also matched by `outer`.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Why a topic cannot be published to, per MQTT: empty, a wildcard, NUL.
pub fn invalid_topic_name(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("empty topic")
    } else if topic.contains(['+', '#']) {
        Some("wildcards are not allowed in topic names")
    } else if topic.contains('\0') {
        Some("NUL in topic name")
    } else if topic.len() > 65535 {
        Some("topic longer than 65535 bytes")
    } else {
        None
    }
}

/// Why a subscription filter is malformed, per MQTT.
pub fn invalid_filter(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("empty filter");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Some("'+' must be a whole level");
        }
    }
    if filter.contains('\0') {
        return Some("NUL in filter");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_stay_within_their_filters() {
        let dev = Access::Within(vec!["sensors/dev1/#".into(), "cmd/+/dev1".into()]);
        assert!(dev.can_publish("sensors/dev1/temp"));
        assert!(dev.can_publish("sensors/dev1"));
        assert!(!dev.can_publish("sensors/dev2/temp"));
        assert!(dev.can_subscribe("sensors/dev1/#"));
        assert!(dev.can_subscribe("sensors/dev1/+/x"));
        assert!(dev.can_subscribe("cmd/a/dev1"));
        assert!(dev.can_subscribe("cmd/+/dev1"));
        assert!(!dev.can_subscribe("sensors/#"));
        assert!(!dev.can_subscribe("#"));
        assert!(!dev.can_subscribe("+/dev1/x"));
        assert!(!dev.can_subscribe("cmd/#"));
        assert!(dev.can_subscribe("$share/g/sensors/dev1/x"));
        assert!(!dev.can_subscribe("$share/g/sensors/#"));
        assert!(!Access::ReadOnly.can_publish("a"));
        assert!(Access::ReadOnly.can_subscribe("#"));
    }

    #[test]
    fn malformed_names_and_filters() {
        assert!(invalid_topic_name("a/+/b").is_some());
        assert!(invalid_topic_name("").is_some());
        assert!(invalid_topic_name("a/b").is_none());
        assert!(invalid_filter("a/#/b").is_some());
        assert!(invalid_filter("a/b#").is_some());
        assert!(invalid_filter("a/+b").is_some());
        assert!(invalid_filter("a/+/#").is_none());
    }
}
