//! The host, through semihosting (`-semihosting-config enable=on,target=native`):
//! the `log` facade on QEMU's standard output, files from QEMU's working
//! directory, the host's clock and the exit status.

use core::fmt::Write as _;

use cortex_m_semihosting::{debug, hprintln, syscall, syscall1};

struct HostLog;

impl log::Log for HostLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let us = embassy_time::Instant::now().as_micros();
        hprintln!(
            "{:>6}.{:06} {:<5} {}",
            us / 1_000_000,
            us % 1_000_000,
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {}
}

static LOGGER: HostLog = HostLog;

/// Routes the `log` facade (the library's logs) to the host.
pub(crate) fn init_log() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}

/// Reads up to `buf.len()` bytes of the host file `name` (relative to
/// QEMU's working directory); the count read, or `None` if it cannot be opened.
pub(crate) fn read_file(name: &str, buf: &mut [u8]) -> Option<usize> {
    let mut path: heapless::String<64> = heapless::String::new();
    write!(path, "{name}\0").ok()?;
    const MODE_RB: usize = 1;
    // SAFETY: SYS_OPEN reads `name.len()` bytes of the NUL-terminated path;
    // SYS_READ writes at most `buf.len()` bytes into `buf`; SYS_CLOSE takes
    // the handle only. The pointers outlive the calls.
    unsafe {
        let fd = syscall!(OPEN, path.as_ptr(), MODE_RB, name.len()) as isize;
        if fd < 0 {
            return None;
        }
        let left = syscall!(READ, fd as usize, buf.as_mut_ptr(), buf.len());
        syscall!(CLOSE, fd as usize);
        Some(buf.len().saturating_sub(left))
    }
}

/// The host's wall clock, seconds since 1970.
pub(crate) fn host_time() -> u64 {
    // SAFETY: SYS_TIME takes no argument.
    unsafe { syscall1!(TIME, 0) as u64 }
}

/// Ends the emulation with a status QEMU passes on (0 or 1).
pub(crate) fn exit(success: bool) -> ! {
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    hprintln!("panic: {}", info);
    exit(false)
}
