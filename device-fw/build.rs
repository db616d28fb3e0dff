//! Compresses the web UI at build time and derives its ETag, so the device
//! serves it straight from flash.

use std::io::Write;
use std::path::Path;

fn main() {
    let src = Path::new("ui/index.html");
    println!("cargo:rerun-if-changed={}", src.display());
    let html = std::fs::read(src).expect("read ui/index.html");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&html).expect("compress");
    let gz = gz.finish().expect("compress");
    // FNV-1a over the uncompressed page: a strong validator for both encodings.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &html {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let out = std::env::var("OUT_DIR").expect("OUT_DIR");
    let out = Path::new(&out);
    std::fs::write(out.join("index.html"), &html).expect("write");
    std::fs::write(out.join("index.html.gz"), &gz).expect("write");
    std::fs::write(out.join("etag.txt"), format!("\"{h:016x}\"")).expect("write");
    qemu_memory_layout(out);
}

/// The QEMU mps2-an505 board brings its own `memory.x` for cortex-m-rt (the
/// NUCLEO-H563ZI's comes from embassy-stm32's `memory-x` feature).
fn qemu_memory_layout(out: &Path) {
    let qemu = std::env::var_os("CARGO_FEATURE_BOARD_QEMU_AN505").is_some();
    let bare = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "none");
    if !(qemu && bare) {
        return;
    }
    assert!(
        std::env::var_os("CARGO_FEATURE_BOARD_NUCLEO_H563ZI").is_none(),
        "board-qemu-an505 and board-nucleo-h563zi each bring a memory layout: \
         build one board at a time (--no-default-features --features board-qemu-an505)"
    );
    let layout = Path::new("src/bin/qemu-an505/memory.x");
    println!("cargo:rerun-if-changed={}", layout.display());
    std::fs::copy(layout, out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
}
