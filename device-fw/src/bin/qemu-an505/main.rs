//! Firmware for QEMU's `mps2-an505` (a Cortex-M33 on Arm's IoT Kit): the
//! sample controller application on the link runtime, unchanged, over the
//! board's LAN9118 Ethernet and QEMU's user network. Only the board layer
//! below differs from the NUCLEO-H563ZI's.
//!
//! ```text
//! main ── SysTick clock, provisioning (host file), RNG, LAN9118 ──▶ tasks:
//!   net      embassy-net runner (DHCPv4 from QEMU's user network)
//!   stack    logs the painted stack's high-water mark as it grows
//!   link     device_fw::link::run(Controller<SimBoard>) (in main)
//! ```
//!
//! | module | what |
//! |---|---|
//! | `memory.x` | code at 0x10000000, RAM at 0x38000000 (the secure aliases) |
//! | `time` | embassy-time driver on SysTick (1 kHz interrupt, µs clock) |
//! | `lan9118` | `embassy-net-driver` for the LAN9118 at 0x42000000, IRQ 48 |
//! | `semihosting` | logs, host files, host clock, exit status |
//! | `rng` | randomness derived from a provisioned seed and timer jitter (not secure) |
//! | `board` | simulated LEDs, temperature and button |
//! | `net` | the link runtime's `Platform` over embassy-net |
//! | `stack` | stack painting and its high-water mark |
//!
//! Build and run: `scripts/qemu-run build`, `scripts/qemu-run firmware DIR`
//! (device-fw/README.md). On any other target this binary is only a stub.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod board;
#[cfg(target_os = "none")]
mod firmware;
#[cfg(target_os = "none")]
mod lan9118;
#[cfg(target_os = "none")]
#[path = "../embassy/net.rs"]
mod net;
#[cfg(target_os = "none")]
mod rng;
#[cfg(target_os = "none")]
mod semihosting;
#[cfg(target_os = "none")]
mod stack;
#[cfg(target_os = "none")]
mod time;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "qemu-an505 is firmware: build and run it with scripts/qemu-run \
         (see device-fw/README.md)"
    );
    std::process::exit(2);
}
