//! `proto` on the emulated Cortex-M33: the no_std checks of
//! [`device_fw::selftest`], then the device role's cost, printed through
//! semihosting; the exit status says whether every check passed.
//!
//! ```text
//! check <name>: ok | FAIL <why>       one line per check
//! transcript <16 hex digits>          compared with the host's by tests/tests/qemu_firmware.rs
//! handshake ... / record ... / stack ...   the figures in BENCHMARKS.md
//! ```
//!
//! Costs are SysTick counts (20 MHz) around the device-role calls only.
//! `scripts/qemu-run check` runs QEMU with `-icount shift=0`: one
//! instruction per nanosecond of virtual time, so one count is 50
//! instructions, exactly, whatever the host's speed. Run without
//! `-icount` the same counts are host-dependent time.

#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[allow(dead_code)] // the firmware's logging and file reads are not used here
mod semihosting;
#[cfg(target_os = "none")]
mod stack;
#[cfg(target_os = "none")]
mod time;

#[cfg(target_os = "none")]
mod run {
    use cortex_m_semihosting::hprintln;
    use device_fw::selftest::{self, Meter, Pair, PairMemory, RECORD};
    use static_cell::StaticCell;

    use crate::{semihosting, stack, time};

    /// Instructions per SysTick count under `-icount shift=0` (1 ns each, 20 MHz).
    const INSNS_PER_COUNT: u64 = 1_000_000_000 / time::CPU_HZ as u64;
    /// The CPU clock the estimates assume (the NUCLEO-H563ZI's).
    const TARGET_MHZ: u64 = 250;

    /// Counts SysTick ticks spent in device-role calls.
    struct Counts(u64);

    impl Meter for Counts {
        fn device<R>(&mut self, f: impl FnOnce() -> R) -> R {
            let t = time::cycles();
            let r = f();
            self.0 += time::cycles() - t;
            r
        }
    }

    fn report(what: &str, counts: u64, per: u64) {
        let insns = counts * INSNS_PER_COUNT / per.max(1);
        // Cortex-M33 at about one instruction per cycle.
        let us = insns / TARGET_MHZ;
        hprintln!("{what}: {insns} instructions (~{us} us at {TARGET_MHZ} MHz)");
    }

    pub(crate) fn main() -> ! {
        let mut passed = true;
        for (name, check) in selftest::CHECKS {
            match check() {
                Ok(()) => hprintln!("check {name}: ok"),
                Err(why) => {
                    passed = false;
                    hprintln!("check {name}: FAIL {why}");
                }
            }
        }
        match selftest::transcript() {
            Ok(d) => hprintln!("transcript {d:016x}"),
            Err(why) => {
                passed = false;
                hprintln!("transcript FAIL {why}");
            }
        }

        static MEM: StaticCell<PairMemory> = StaticCell::new();
        let mem = MEM.init(PairMemory::new());

        // One full device-role handshake: build the session and message 1,
        // take message 2, send the HELLO record. Five runs, the lowest.
        let mut best = u64::MAX;
        for seed in 1..=5 {
            let mut m = Counts(0);
            let mut pair = Pair::new(mem, [0x22; 32], seed, &mut m);
            pair.settle(&mut m);
            if !pair.device.is_established() {
                passed = false;
                hprintln!("handshake FAIL: not established");
            }
            best = best.min(m.0);
        }
        report("handshake (device role)", best, 1);

        // Records of RECORD bytes on the wire, 64 KiB of payload each way.
        const TOTAL: usize = 64 * 1024;
        stack::paint();
        let (mut pair, id) = match selftest::established(mem) {
            Ok(p) => p,
            Err(why) => {
                hprintln!("records FAIL: {why}");
                semihosting::exit(false)
            }
        };
        let before = pair.device.stats();
        let mut rx = Counts(0);
        selftest::transfer(&mut pair, id, TOTAL, true, &mut rx);
        let mid = pair.device.stats();
        let mut tx = Counts(0);
        selftest::transfer(&mut pair, id, TOTAL, false, &mut tx);
        let after = pair.device.stats();
        let received = mid.records_received - before.records_received;
        let sent = after.records_sent - mid.records_sent;
        hprintln!(
            "records: {received} received, {sent} sent ({RECORD} B records, {TOTAL} B payload each way)"
        );
        report(
            "record received (device role, per 1 KiB record)",
            rx.0,
            received,
        );
        report("record sent (device role, per 1 KiB record)", tx.0, sent);
        hprintln!(
            "stack: {} of {} bytes at most for a handshake and 64 KiB each way (both roles, one stack)",
            stack::high_water(),
            stack::size()
        );
        hprintln!(
            "{}",
            if passed {
                "all checks passed"
            } else {
                "CHECKS FAILED"
            }
        );
        semihosting::exit(passed)
    }
}

#[cfg(target_os = "none")]
#[cortex_m_rt::entry]
fn main() -> ! {
    stack::paint();
    let Some(p) = cortex_m::Peripherals::take() else {
        semihosting::exit(false)
    };
    time::init(p.SYST);
    run::main()
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("qemu-an505-check runs on the emulated Cortex-M33: scripts/qemu-run check");
    std::process::exit(2);
}
