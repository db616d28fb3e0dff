//! Firmware for the NUCLEO-H563ZI: the sample controller application on
//! the link runtime, over Ethernet (embassy-net, DHCP).
//!
//! ```text
//! main ── clocks, provisioning, RNG, Ethernet ──▶ tasks:
//!   net      embassy-net runner (DHCPv4)
//!   button   counts USER button presses (EXTI)
//!   sensor   internal temperature through ADC1, once a second
//!   link     device_fw::link::run(Controller<NucleoBoard>) (in main)
//! ```
//!
//! Build: `cargo build -p device-fw --profile firmware --target thumbv8m.main-none-eabihf`.
//! On any other target this binary is only a stub.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod board;
#[cfg(target_os = "none")]
mod firmware;
#[cfg(target_os = "none")]
mod logger;
#[cfg(target_os = "none")]
#[path = "../embassy/net.rs"]
mod net;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "nucleo-h563zi is firmware: build it with \
         `cargo build -p device-fw --profile firmware --target thumbv8m.main-none-eabihf`"
    );
    std::process::exit(2);
}
