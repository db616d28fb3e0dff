//! The runtime's memory, fixed at compile time.

use proto::StreamSlot;

/// Everything one link needs, for records of `RECORD` bytes and `STREAMS`
/// concurrent streams. Place it in a `StaticCell` on the device.
///
/// Size: `4 × RECORD + STREAMS × size_of::<StreamSlot>()` plus a few words.
pub struct LinkMemory<const RECORD: usize, const STREAMS: usize> {
    pub(crate) rx: [u8; RECORD],
    pub(crate) tx: [u8; RECORD],
    pub(crate) out: [u8; RECORD],
    pub(crate) input: [u8; RECORD],
    pub(crate) event: [u8; RECORD],
    pub(crate) streams: [StreamSlot; STREAMS],
}

impl<const RECORD: usize, const STREAMS: usize> LinkMemory<RECORD, STREAMS> {
    /// Zeroed memory.
    pub const fn new() -> Self {
        Self {
            rx: [0; RECORD],
            tx: [0; RECORD],
            out: [0; RECORD],
            input: [0; RECORD],
            event: [0; RECORD],
            streams: [StreamSlot::EMPTY; STREAMS],
        }
    }
}

impl<const RECORD: usize, const STREAMS: usize> Default for LinkMemory<RECORD, STREAMS> {
    fn default() -> Self {
        Self::new()
    }
}
