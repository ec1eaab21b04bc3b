//! One target as it runs now: its definition over a lane, its seat on the
//! priority board and its sender task. A change of definition builds a new
//! `Target` over the old one's lane, so the hooks never lose a thing while a
//! target is edited.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base::Clock;
use config::ForwardConfig;
use store::Matcher;

use super::{ForwardError, Forwarder};
use crate::lane::Lane;
use crate::priority::Seat;
use crate::sender::{self, SenderSlot};

pub(crate) struct Target {
    pub(crate) config: ForwardConfig,
    /// What outlives a change of the definition: shared with the next one.
    pub(crate) lane: Lane,
    /// Samples targets: a series is forwarded when it matches one set;
    /// none: all.
    pub(crate) selectors: Vec<Vec<Matcher>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) seat: Seat,
    pub(crate) from_config: bool,
    pub(crate) sender: SenderSlot,
}

impl Forwarder {
    /// A target of definition `c` over a lane of its own.
    pub(crate) fn launch(
        &self,
        c: ForwardConfig,
        from_config: bool,
    ) -> Result<Arc<Target>, ForwardError> {
        let lane = Lane::open(&self.trees, &c, self.clock.clone())?;
        self.attach(c, lane.clone(), from_config)
            .inspect_err(|_| lane.close())
    }

    /// A target of definition `c` over `lane`; starts its sender when
    /// senders run.
    pub(crate) fn attach(
        &self,
        c: ForwardConfig,
        lane: Lane,
        from_config: bool,
    ) -> Result<Arc<Target>, ForwardError> {
        let selectors = parse_selectors(&c)?;
        // A backlog from the last run counts until the first attempt tells
        // whether the target is reachable.
        let backlog = lane.queue.items.load(Ordering::Relaxed) > 0;
        let seat = Seat::join(&self.board, c.priority, backlog);
        let t = Arc::new(Target {
            config: c,
            lane,
            selectors,
            clock: self.clock.clone(),
            seat,
            from_config,
            sender: SenderSlot::new(),
        });
        if let Some(rt) = self.runtime.lock().clone() {
            sender::start(&t, &rt);
        }
        Ok(t)
    }
}

fn parse_selectors(c: &ForwardConfig) -> Result<Vec<Vec<Matcher>>, ForwardError> {
    let mut sets = Vec::new();
    for s in &c.selectors {
        let parsed = base::selector::parse_selector(s)
            .map_err(|e| ForwardError::Setup(format!("{}: {e}", c.name)))?;
        sets.extend(parsed);
    }
    Ok(sets)
}
