//! The runtime's memory, fixed at compile time.

use proto::StreamSlot;

/// Everything one link needs, for records of `RECORD` bytes and `STREAMS`
/// concurrent streams. Place it in a `StaticCell` on the device.
///
/// `IO` sizes the socket-facing buffers (what one write sends and one read
/// takes): one record by default, which suits a board, whose TCP stack
/// batches records in its own socket buffer. A host device, where every
/// write and read is a system call, gives it room for several records
/// (at least one: smaller does not build).
///
/// Size: `3 × RECORD + 2 × IO + STREAMS × size_of::<StreamSlot>()` plus a
/// few words.
pub struct LinkMemory<const RECORD: usize, const STREAMS: usize, const IO: usize = RECORD> {
    pub(crate) rx: [u8; RECORD],
    pub(crate) tx: [u8; RECORD],
    pub(crate) out: [u8; IO],
    pub(crate) input: [u8; IO],
    pub(crate) event: [u8; RECORD],
    pub(crate) streams: [StreamSlot; STREAMS],
}

impl<const RECORD: usize, const STREAMS: usize, const IO: usize> LinkMemory<RECORD, STREAMS, IO> {
    /// Zeroed memory.
    pub const fn new() -> Self {
        const { assert!(IO >= RECORD, "IO must hold a whole record") };
        Self {
            rx: [0; RECORD],
            tx: [0; RECORD],
            out: [0; IO],
            input: [0; IO],
            event: [0; RECORD],
            streams: [StreamSlot::EMPTY; STREAMS],
        }
    }
}

impl<const RECORD: usize, const STREAMS: usize, const IO: usize> Default
    for LinkMemory<RECORD, STREAMS, IO>
{
    fn default() -> Self {
        Self::new()
    }
}
