//! The painted stack: every word between the end of the statics and the
//! current stack pointer is filled with a pattern at start-up; the deepest
//! word no longer holding it is the high-water mark.
//!
//! All embassy tasks share this one stack (their futures live in statics),
//! so the mark covers the deepest poll of any task plus interrupt frames;
//! the link task's poll (the Noise handshake, sealing and opening records)
//! is the deep one.

const PAINT: u32 = 0x5AC3_5AC3;
/// Left unpainted below the stack pointer when painting (the painting
/// function's own frame and what it calls).
const MARGIN: usize = 256;

unsafe extern "C" {
    /// Lowest address of the stack (end of `.bss`/`.uninit`, cortex-m-rt).
    static _stack_end: u32;
    /// Highest address of the stack (end of RAM, cortex-m-rt).
    static _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    (
        core::ptr::addr_of!(_stack_end) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}

/// Paints the unused stack, so [`high_water`] measures from here on.
/// Interrupts are masked while it runs: their frames land below the stack
/// pointer, in the region being painted.
pub(crate) fn paint() {
    critical_section::with(|_| paint_below_sp());
}

fn paint_below_sp() {
    let (bottom, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize - MARGIN;
    let mut p = bottom;
    while p < sp {
        // SAFETY: [bottom, sp) is stack below the live frames: nothing
        // holds a reference into it, and nothing runs concurrently yet.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack used at the deepest point so far.
pub(crate) fn high_water() -> usize {
    let (bottom, top) = bounds();
    let mut p = bottom;
    // SAFETY: reads of aligned words inside the stack region.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}

/// Bytes the stack region holds in all.
pub(crate) fn size() -> usize {
    let (bottom, top) = bounds();
    top - bottom
}
