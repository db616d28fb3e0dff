//! `FrameRepr::decode` over a record's worth of plaintext, frame after
//! frame as the session reads it. Each decoded frame must re-encode to
//! `buffer_len` bytes that decode to the same frame, never longer than the
//! input it came from (decoding accepts non-minimal varints, encoding
//! writes minimal ones, so only the value round-trips, not the bytes), and
//! the checked view `Frame::new_checked` must agree with `decode`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::wire::{Frame, FrameRepr, FrameType};

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    let mut out = vec![0u8; data.len() + 16];
    while pos < data.len() {
        let buf = &data[pos..];
        let view = Frame::new_checked(buf);
        let (frame, used) = match FrameRepr::decode(buf) {
            Ok(v) => v,
            Err(e) => {
                assert_eq!(view.err(), Some(e), "view and decode disagree");
                break;
            }
        };
        assert!(
            used > 0 && used <= buf.len(),
            "consumed {used} of {}",
            buf.len()
        );
        let view = view.expect("decode accepted, so the view must");
        assert_eq!(view.total_len(), used);
        assert_eq!(FrameRepr::parse(&view), frame);
        assert_eq!(FrameType::from_byte(buf[0]), Ok(view.frame_type()));

        let len = frame.buffer_len();
        let n = frame.emit(&mut out).expect("a decoded frame encodes");
        assert_eq!(n, len, "buffer_len disagrees with emit for {frame:?}");
        assert!(
            n <= used,
            "re-encoding {frame:?} grew from {used} to {n} bytes"
        );
        let (again, used_again) = FrameRepr::decode(&out[..n]).expect("an encoded frame decodes");
        assert_eq!(again, frame);
        assert_eq!(used_again, n);
        // A buffer one byte short must be refused, not overrun.
        assert!(frame.emit(&mut out[..n - 1]).is_err());
        pos += used;
    }
});
