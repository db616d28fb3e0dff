//! # memcopy
//!
//! `memcpy` and `memmove` for the gateway's processes on x86-64 Linux with
//! glibc: glibc's own, except for the one shape of copy that glibc's
//! `rep movsb` path makes about twenty times slower than a vector loop.
//!
//! ## Why
//!
//! glibc (2.36 on Debian 12) copies from `x86_rep_movsb_threshold` bytes
//! (2,112 on the build machine) up to `rep_movsb_stop_threshold` (512 KiB)
//! with `rep movsb`. On the build machine's AMD EPYC that instruction runs
//! at 1.6 – 2.8 GB/s instead of 30 – 80 GB/s when the destination lies 1 to
//! 31 bytes past the source modulo 4 KiB (the two addresses alias in the
//! store buffer). glibc skips `rep movsb` for a short distance only on
//! CPUs it flags (`Avoid_Short_Distance_REP_MOVSB`, set for some Intel
//! parts), and then only for a distance in absolute terms, not modulo a
//! page.
//!
//! A proxy makes that shape all the time: nearly every copy puts a
//! payload a few bytes after where it was, behind a header the copy makes
//! room for (the link's 2-byte record length and 4-byte DATA header, a
//! WebSocket frame head, rustls's 5-byte TLS header), between buffers that
//! the allocator aligned alike. In the gateway's bulk transfer `memmove`
//! was a third of the process's CPU time (`perf`, BENCHMARKS.md, "glibc's
//! rep movsb and the gateway's copies").
//!
//! ## What
//!
//! The two functions are defined here under their C names, so every copy
//! the linker resolves in a program that links this crate (Rust code,
//! rustls, ring's and mimalloc's C) comes here:
//!
//! - a copy of at least [`MIN_LEN`] bytes whose destination is 1 to
//!   [`NEAR`] bytes past its source modulo 4 KiB (for `memmove`: and that
//!   can be copied front to back) takes a plain SSE2 loop, 64 bytes per
//!   turn;
//! - every other copy goes to glibc's, through `__memcpy_chk` and
//!   `__memmove_chk` (the same implementations, reached under names this
//!   crate does not define), at the cost of one compare.
//!
//! On other targets the crate defines nothing. `#![no_builtins]` keeps the
//! compiler from turning the loop, or the call to `__memcpy_chk`, back
//! into a call to `memcpy`.

#![cfg_attr(not(test), no_std)]
#![no_builtins]

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
mod x86_64;

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
pub use x86_64::{memcpy, memmove};

/// Copies shorter than this always go to glibc: below its `rep movsb`
/// threshold it copies with vector loops (2,048 is the lowest default of
/// that threshold, for SSE2).
pub const MIN_LEN: usize = 2048;

/// A destination at most this many bytes past its source, modulo 4 KiB,
/// takes the loop. `rep movsb` is slow up to 31 here; 63 leaves a margin.
pub const NEAR: usize = 63;

/// Whether a copy of `len` bytes from `src` to `dst` is of the slow shape.
#[inline(always)]
pub fn slow_shape(dst: usize, src: usize, len: usize) -> bool {
    let ahead = dst.wrapping_sub(src) & 4095;
    len >= MIN_LEN && ahead != 0 && ahead <= NEAR
}
