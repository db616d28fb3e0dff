//! The definitions for x86-64 Linux with glibc.

use core::arch::asm;

use crate::slow_shape;

unsafe extern "C" {
    // glibc's checked copies: the same implementations as its `memcpy`
    // and `memmove` (chosen for the CPU at load time), entered after one
    // compare of the two lengths.
    fn __memcpy_chk(dst: *mut u8, src: *const u8, len: usize, dst_len: usize) -> *mut u8;
    fn __memmove_chk(dst: *mut u8, src: *const u8, len: usize, dst_len: usize) -> *mut u8;
}

type Checked = unsafe extern "C" fn(*mut u8, *const u8, usize, usize) -> *mut u8;

// Called through these, read with a volatile load: the optimizer knows
// `__memcpy_chk` with no bound on the destination to be `memcpy`, and
// would otherwise turn the call into one to `memcpy`, this crate's own,
// making a loop (`#![no_builtins]` does not stop that fold).
static GLIBC_MEMCPY: Checked = __memcpy_chk;
static GLIBC_MEMMOVE: Checked = __memmove_chk;

/// `memcpy(3)`: see the crate documentation for which copies stay glibc's.
///
/// # Safety
///
/// As for `memcpy`: both ranges valid for `len` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    if slow_shape(dst as usize, src as usize, len) {
        // SAFETY: the caller's contract; `len` is at least MIN_LEN (≥ 64),
        // and regions that do not overlap can be copied front to back.
        unsafe { forward(dst, src, len) };
        return dst;
    }
    // SAFETY: the caller's contract; the destination length given is no
    // bound, so the check cannot fail.
    unsafe { core::ptr::read_volatile(&GLIBC_MEMCPY)(dst, src, len, usize::MAX) }
}

/// `memmove(3)`: see the crate documentation for which copies stay glibc's.
///
/// # Safety
///
/// As for `memmove`: both ranges valid for `len` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    // Front to back is right unless the destination starts inside the
    // source (then glibc copies back to front).
    let front_to_back = (dst as usize).wrapping_sub(src as usize) >= len;
    if front_to_back && slow_shape(dst as usize, src as usize, len) {
        // SAFETY: the caller's contract; see `forward` for overlaps.
        unsafe { forward(dst, src, len) };
        return dst;
    }
    // SAFETY: as in `memcpy`.
    unsafe { core::ptr::read_volatile(&GLIBC_MEMMOVE)(dst, src, len, usize::MAX) }
}

/// Copies `len` (at least 64) bytes front to back, 64 per turn with
/// unaligned SSE2 loads and stores; the last 64 bytes are loaded before
/// anything is stored and stored last, so the tail needs no byte loop.
///
/// Each turn loads its 64 bytes before storing any of them, and the last
/// 64 are read first: so the copy is also right when the regions overlap
/// with the destination before the source.
///
/// # Safety
///
/// `len >= 64`; `src` readable and `dst` writable for `len` bytes; the
/// destination does not start inside the source (`dst - src >= len`, as
/// unsigned numbers, or `dst <= src`).
unsafe fn forward(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!(len >= 64);
    // SAFETY: in bounds by the contract (`len >= 64`).
    let (tail_src, tail_dst) = unsafe { (src.add(len - 64), dst.add(len - 64)) };
    // The loop runs max(1, ceil((len - 64) / 64)) turns: it covers at most
    // `len` bytes, and at least `len - 64`, which the tail completes.
    // SAFETY: every access is within the two ranges (see above); the
    // registers it uses are declared clobbered.
    unsafe {
        asm!(
            "movdqu xmm4, [{ts}]",
            "movdqu xmm5, [{ts} + 16]",
            "movdqu xmm6, [{ts} + 32]",
            "movdqu xmm7, [{ts} + 48]",
            "2:",
            "movdqu xmm0, [{s}]",
            "movdqu xmm1, [{s} + 16]",
            "movdqu xmm2, [{s} + 32]",
            "movdqu xmm3, [{s} + 48]",
            "movdqu [{d}], xmm0",
            "movdqu [{d} + 16], xmm1",
            "movdqu [{d} + 32], xmm2",
            "movdqu [{d} + 48], xmm3",
            "add {s}, 64",
            "add {d}, 64",
            "sub {left}, 64",
            "ja 2b",
            "movdqu [{td}], xmm4",
            "movdqu [{td} + 16], xmm5",
            "movdqu [{td} + 32], xmm6",
            "movdqu [{td} + 48], xmm7",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            left = inout(reg) len - 64 => _,
            ts = in(reg) tail_src,
            td = in(reg) tail_dst,
            out("xmm0") _,
            out("xmm1") _,
            out("xmm2") _,
            out("xmm3") _,
            out("xmm4") _,
            out("xmm5") _,
            out("xmm6") _,
            out("xmm7") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIN_LEN, NEAR};

    /// A page-aligned region of `pages` pages holding a pattern that does
    /// not repeat within a page, so a byte copied from the wrong place shows.
    struct Pages {
        buf: Vec<u8>,
        base: usize,
    }

    impl Pages {
        fn new(pages: usize) -> Self {
            let buf: Vec<u8> = (0..(pages + 1) * 4096)
                .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
                .collect();
            let base = (4096 - buf.as_ptr() as usize % 4096) % 4096;
            Self { buf, base }
        }

        fn at(&mut self, off: usize) -> *mut u8 {
            // SAFETY: callers stay within the `pages` pages after `base`.
            unsafe { self.buf.as_mut_ptr().add(self.base + off) }
        }

        fn slice(&self, off: usize, len: usize) -> &[u8] {
            &self.buf[self.base + off..self.base + off + len]
        }
    }

    const LENS: [usize; 14] = [
        0, 1, 63, 64, 65, 2047, 2048, 2049, 2111, 4096, 5000, 16_389, 65_536, 70_001,
    ];
    const AHEAD: [usize; 9] = [0, 1, 2, 5, 16, 31, 63, 64, 200];

    /// Every length and distance, the slow shape and not, gives the bytes
    /// a byte-by-byte copy gives.
    #[test]
    fn memcpy_copies_every_shape() {
        let mut src = Pages::new(20);
        let mut dst = Pages::new(20);
        for len in LENS {
            for src_off in [0, 3, 64, 4000] {
                for ahead in AHEAD {
                    let dst_off = src_off + ahead;
                    let want: Vec<u8> = src.slice(src_off, len).to_vec();
                    // Guard bytes either side must stay as they were.
                    let before = dst.slice(0, dst_off).to_vec();
                    let after = dst.slice(dst_off + len, 4096).to_vec();
                    // SAFETY: both ranges lie within their own 20 pages.
                    let r = unsafe { memcpy(dst.at(dst_off), src.at(src_off), len) };
                    assert_eq!(r, dst.at(dst_off));
                    assert!(
                        dst.slice(dst_off, len) == want,
                        "len {len} src+{src_off} ahead {ahead}"
                    );
                    assert_eq!(dst.slice(0, dst_off), before, "len {len}: wrote before");
                    assert_eq!(
                        dst.slice(dst_off + len, 4096),
                        after,
                        "len {len}: wrote after"
                    );
                    // Scramble the destination for the next round.
                    for b in &mut dst.buf {
                        *b = b.wrapping_mul(7).wrapping_add(1);
                    }
                }
            }
        }
    }

    /// Overlapping moves both ways, and far ones, including the distances
    /// modulo 4 KiB that take the loop.
    #[test]
    fn memmove_copies_every_overlap() {
        let mut p = Pages::new(40);
        let distances = [
            1, 2, 16, 63, 64, 65, 1000, 4033, 4095, 4096, 4097, 4100, 8191, 8195, 70_000,
        ];
        for len in LENS {
            for d in distances {
                for dst_first in [false, true] {
                    let (src_off, dst_off) = if dst_first { (d, 0) } else { (0, d) };
                    if src_off.max(dst_off) + len > 40 * 4096 {
                        continue;
                    }
                    let want = p.slice(src_off, len).to_vec();
                    let whole = p.slice(0, 40 * 4096).to_vec();
                    // SAFETY: both ranges lie within the 40 pages.
                    let r = unsafe { memmove(p.at(dst_off), p.at(src_off), len) };
                    assert_eq!(r, p.at(dst_off));
                    assert!(
                        p.slice(dst_off, len) == want,
                        "len {len} distance {d} dst first {dst_first}"
                    );
                    // Nothing outside the destination changed.
                    let (a, b) = (dst_off, dst_off + len);
                    assert!(
                        p.slice(0, a) == &whole[..a],
                        "len {len} distance {d}: wrote before"
                    );
                    assert!(
                        p.slice(b, 40 * 4096 - b) == &whole[b..],
                        "len {len} distance {d}: wrote after"
                    );
                    for b in &mut p.buf {
                        *b = b.wrapping_mul(5).wrapping_add(3);
                    }
                }
            }
        }
    }

    #[test]
    fn only_the_slow_shape_takes_the_loop() {
        let page = 1 << 20;
        assert!(slow_shape(page + 1, page, MIN_LEN));
        assert!(slow_shape(page + NEAR, page, 1 << 20));
        // A page further on, the same shape.
        assert!(slow_shape(page + 4096 + 2, page, 70_000));
        assert!(!slow_shape(page + 1, page, MIN_LEN - 1));
        assert!(!slow_shape(page, page, 70_000));
        assert!(!slow_shape(page + 4096, page, 70_000));
        assert!(!slow_shape(page + NEAR + 1, page, 70_000));
        assert!(!slow_shape(page - 1, page, 70_000));
    }

    /// The program's references to `memcpy` and `memmove` bind to this
    /// crate's: what makes the rest of the gateway's copies come here.
    #[test]
    fn the_c_names_bind_here() {
        unsafe extern "C" {
            #[link_name = "memcpy"]
            fn linked_memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8;
            #[link_name = "memmove"]
            fn linked_memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8;
        }
        assert_eq!(linked_memcpy as *const (), memcpy as *const ());
        assert_eq!(linked_memmove as *const (), memmove as *const ());
    }
}
