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
}
