//! Telegraf: see docs/devices.md.

use super::{Ctx, Message, Reading};

/// The message read as Telegraf's, or `None` if it is not one.
pub(crate) fn read(_msg: &Message, _ctx: &mut Ctx) -> Option<Reading> {
    None
}
