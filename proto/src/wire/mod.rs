//! Wire types, in two levels as smoltcp's `wire` module has them: zero-copy
//! views over a caller's buffer (`Frame<T: AsRef<[u8]>>`, checked once by
//! `new_checked`, after which no accessor panics) and owned or borrowing
//! representations (`FrameRepr`, `Hello`, heads, handshake payloads) with
//! `parse`, `emit` and `buffer_len`.
//!
//! Every decoder here is total: any input gives a value or a [`WireError`],
//! in time linear in the input, without panicking or allocating.

mod error;
mod frame;
mod handshake;
mod head;
mod hello;
mod reader;

pub use error::WireError;
pub use frame::{DATA_HEADER_MAX, Frame, FrameRepr, FrameType, MsgKind, StreamId, StreamKind};
pub(crate) use frame::{
    data_header_len as frame_data_header_len, emit_data_header as frame_emit_data_header,
};
pub use handshake::{
    Cipher, Ciphers, InitPayload, MAX_WINDOW, MIN_RECORD, Params, RespPayload, Status,
};
pub use head::{Header, HeaderList, RequestHead, ResponseHead};
pub use hello::{Hello, MIN_HEAD, Service, ServiceKind, ServiceList, StrList, valid_device_id};
