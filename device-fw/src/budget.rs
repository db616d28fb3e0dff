//! Memory budgets, checked when the crate compiles: a change that grows the
//! link runtime or the application past its budget fails the build.
//!
//! | what | budget | holds |
//! |---|---|---|
//! | link runtime memory ([`LinkMemory`] at 1 KiB records, 4 streams) plus the device session | 12 KiB | receive, staging, output, socket-read and event buffers, stream table, keys, handshake state |
//! | the sample application ([`Controller`]) | 10 KiB | four exchanges with their head, body, WebSocket and reply buffers |
//!
//! The flash budget (link runtime ≤ 32 KiB) and the whole firmware's
//! (≤ 256 KiB flash, ≤ 96 KiB static RAM) are checked by `scripts/firmware-size`.

use core::mem::size_of;

use crate::app::{Board, Controller, Readings};
use crate::link::LinkMemory;

/// Records the device receives and sends, bytes.
pub const RECORD: usize = 1024;
/// Concurrent streams.
pub const STREAMS: usize = 4;
/// Static RAM for the link runtime, bytes.
pub const LINK_RAM: usize = 12 * 1024;
/// Static RAM for the sample application, bytes.
pub const APP_RAM: usize = 10 * 1024;

/// The link memory the firmware and `device-sim` use.
pub type DeviceLinkMemory = LinkMemory<RECORD, STREAMS>;

type DeviceSession = proto::Session<&'static mut [u8], &'static mut [proto::StreamSlot]>;

/// Bytes the link runtime holds: its buffers plus the session state.
pub const LINK_USED: usize = size_of::<DeviceLinkMemory>() + size_of::<DeviceSession>();

struct NoBoard;
impl Board for NoBoard {
    fn readings(&mut self) -> Readings {
        Readings::default()
    }
    fn set_led(&mut self, _: usize, _: bool) {}
    fn set_setpoint(&mut self, _: i32) {}
}

/// Bytes the sample application holds (with a zero-sized board).
pub const APP_USED: usize = size_of::<Controller<NoBoard>>();

const _: () = assert!(
    LINK_USED <= LINK_RAM,
    "the link runtime outgrew its RAM budget"
);
const _: () = assert!(
    APP_USED <= APP_RAM,
    "the sample application outgrew its RAM budget"
);

#[cfg(test)]
mod tests {
    #[test]
    fn report() {
        // Printed by `cargo test -p device-fw budget -- --nocapture`.
        std::println!(
            "link runtime: {} of {} bytes",
            super::LINK_USED,
            super::LINK_RAM
        );
        std::println!(
            "application:  {} of {} bytes",
            super::APP_USED,
            super::APP_RAM
        );
    }
}
