//! The recent warnings and errors, for the dashboard's Overview: a tracing
//! layer keeps the last [`CAPACITY`] events at WARN or above in memory.
//! Process-wide like the log itself, so it lives in a static.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::OnceLock;

use parking_lot::Mutex;
use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

const CAPACITY: usize = 200;
const MAX_MESSAGE: usize = 1024;

#[derive(Clone, Debug, Serialize)]
pub struct RecentEvent {
    pub time_ms: i64,
    pub level: String,
    pub target: String,
    pub message: String,
}

fn buffer() -> &'static Mutex<VecDeque<RecentEvent>> {
    static BUFFER: OnceLock<Mutex<VecDeque<RecentEvent>>> = OnceLock::new();
    BUFFER.get_or_init(|| Mutex::new(VecDeque::with_capacity(CAPACITY)))
}

/// The kept events, newest first.
pub fn recent() -> Vec<RecentEvent> {
    buffer().lock().iter().rev().cloned().collect()
}

/// Add to the subscriber to keep WARN and ERROR events.
pub struct RecentEventsLayer;

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentEventsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // Problems have their own list (crate::problems); their log lines
        // would push real warnings out of this one and show viewers who
        // tried which user name.
        if level > Level::WARN || event.metadata().target() == crate::problems::LOG_TARGET {
            return;
        }
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let mut message = visitor.0;
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut buf = buffer().lock();
        if buf.len() == CAPACITY {
            buf.pop_front();
        }
        buf.push_back(RecentEvent {
            time_ms,
            level: level.to_string(),
            target: event.metadata().target().to_string(),
            message,
        });
    }
}
