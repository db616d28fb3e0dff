//! GB/s of glibc's copy and this crate's for the shapes a proxy makes:
//! `cargo bench -p memcopy --bench shapes` (BENCHMARKS.md, "glibc's rep
//! movsb and the gateway's copies"). Each figure is the median of five
//! runs of a copy repeated over 256 MiB, from a hot source to a hot
//! destination, at a distance from the source modulo 4 KiB.

use std::hint::black_box;
use std::time::Instant;

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu"))]
fn main() {
    unsafe extern "C" {
        // glibc's copy, under a name this crate does not define.
        fn __memcpy_chk(dst: *mut u8, src: *const u8, len: usize, dst_len: usize) -> *mut u8;
    }
    type Copy = unsafe extern "C" fn(*mut u8, *const u8, usize, usize) -> *mut u8;
    // Read through a volatile load: called by name with no bound, the
    // optimizer would make it a call to `memcpy`, which is memcopy's.
    static GLIBC: Copy = __memcpy_chk;
    let glibc_copy = unsafe { std::ptr::read_volatile(&GLIBC) };
    let mut src = vec![7u8; (1 << 20) + 8192];
    let mut dst = vec![0u8; (1 << 20) + 8192];
    let page = |v: &mut Vec<u8>| (4096 - v.as_ptr() as usize % 4096) % 4096;
    let (s0, d0) = (page(&mut src), page(&mut dst));
    println!("| length | destination past source (mod 4 KiB) | glibc GB/s | memcopy GB/s |");
    println!("|---|---|---|---|");
    for len in [1024, 2200, 4096, 16_384, 65_536, 262_144] {
        for ahead in [0usize, 2, 5, 16, 31, 48, 64, 1000] {
            let s = src[s0..].as_ptr();
            let d = dst[d0 + ahead..].as_mut_ptr();
            let rate = |f: &dyn Fn()| {
                let turns = (256 << 20) / len;
                let mut runs: Vec<f64> = (0..5)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..turns {
                            f();
                        }
                        (turns * len) as f64 / t.elapsed().as_secs_f64() / 1e9
                    })
                    .collect();
                runs.sort_by(f64::total_cmp);
                runs[2]
            };
            // SAFETY: both ranges lie within their buffers (1 MiB + 4 KiB
            // past a page boundary at most).
            let glibc = rate(&|| unsafe {
                black_box(glibc_copy(black_box(d), black_box(s), len, usize::MAX));
            });
            // SAFETY: as above.
            let ours = rate(&|| unsafe {
                black_box(memcopy::memcpy(black_box(d), black_box(s), len));
            });
            println!("| {len} | {ahead} | {glibc:.1} | {ours:.1} |");
        }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", target_env = "gnu")))]
fn main() {
    println!("memcopy defines nothing on this target");
}
