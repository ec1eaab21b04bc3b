//! Priorities between targets sharing the site's uplink. A target is
//! catching up while its last send went through and it still holds more
//! than a batch; while one of a higher priority (a lower number, 1 first)
//! catches up, lower ones wait before each batch — as Greengrass' stream
//! manager exports higher-priority streams first. A target that is down, or
//! whose sender ended, holds nobody back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::sender::pause;

/// A lower-priority target sends at least one batch this often.
const MAX_HOLD: Duration = Duration::from_secs(60);

/// Which targets are catching up, by priority.
#[derive(Default)]
pub(crate) struct PriorityBoard {
    catching_up: Mutex<Vec<(u8, Arc<AtomicBool>)>>,
}

impl PriorityBoard {
    /// Whether a target of higher priority than `priority` is catching up.
    fn held_back(&self, priority: u8) -> bool {
        self.catching_up
            .lock()
            .iter()
            .any(|(p, f)| *p < priority && f.load(Ordering::Relaxed))
    }
}

/// One target's place on the board.
pub(crate) struct Seat {
    board: Arc<PriorityBoard>,
    priority: u8,
    catching_up: Arc<AtomicBool>,
    /// Waiting for a target of higher priority (shown in the status).
    held: AtomicBool,
}

impl Seat {
    pub(crate) fn join(board: &Arc<PriorityBoard>, priority: u8, catching_up: bool) -> Seat {
        let flag = Arc::new(AtomicBool::new(catching_up));
        board.catching_up.lock().push((priority, flag.clone()));
        Seat {
            board: board.clone(),
            priority,
            catching_up: flag,
            held: AtomicBool::new(false),
        }
    }

    pub(crate) fn leave(&self) {
        self.board
            .catching_up
            .lock()
            .retain(|(_, f)| !Arc::ptr_eq(f, &self.catching_up));
    }

    pub(crate) fn set_catching_up(&self, yes: bool) {
        self.catching_up.store(yes, Ordering::Relaxed);
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Waits while a target of higher priority catches up; false when
    /// perch stops.
    pub(crate) async fn wait_turn(&self, stop: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        if !self.board.held_back(self.priority) {
            return true;
        }
        self.held.store(true, Ordering::Relaxed);
        tracing::debug!("held back by a target of higher priority");
        let mut go_on = true;
        // A higher target that never stops catching up (input above its
        // bandwidth) must not starve this one: one batch per MAX_HOLD.
        let until = tokio::time::Instant::now() + MAX_HOLD;
        while self.board.held_back(self.priority) && tokio::time::Instant::now() < until {
            if !pause(Duration::from_millis(50), stop).await {
                go_on = false;
                break;
            }
        }
        self.held.store(false, Ordering::Relaxed);
        go_on
    }

    /// A guard for the sender task: however the task ends (returned early,
    /// stopped, panicked), a sender that is gone holds nobody back.
    pub(crate) fn clear_on_drop(&self) -> ClearOnDrop {
        ClearOnDrop(self.catching_up.clone())
    }
}

pub(crate) struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_higher_priority_catching_up_holds_back() {
        let board = Arc::new(PriorityBoard::default());
        let first = Seat::join(&board, 1, true);
        let second = Seat::join(&board, 2, true);
        assert!(!board.held_back(1));
        assert!(board.held_back(2) && board.held_back(3));
        drop(first.clear_on_drop());
        assert!(
            !board.held_back(2),
            "an ended sender and an equal priority hold nobody back"
        );
        assert!(board.held_back(3));
        second.leave();
        assert!(!board.held_back(3), "a target that left holds nobody back");
    }
}
