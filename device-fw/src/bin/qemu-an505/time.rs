//! embassy-time on the Cortex-M33's SysTick.
//!
//! SysTick counts the CPU clock (QEMU's mps2-tz SYSCLK, 20 MHz on AN505)
//! and interrupts once a millisecond; the handler counts milliseconds and
//! runs the timer queue. [`now`](Driver::now) adds the fraction of the
//! current millisecond, so the clock has microsecond resolution (the
//! 1 MHz tick embassy-time defaults to), while alarms fire on the next
//! millisecond boundary at the latest.
//!
//! Under QEMU the counter follows the virtual clock: real time normally,
//! one nanosecond per instruction with `-icount shift=0` (how
//! [`cycles`] turns into instruction counts in `check.rs`).

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// The clock SysTick counts, Hz: the processor clock, which QEMU's IoT Kit
/// takes from the board's MAINCLK (`mps2-tz.c`: 20 MHz on AN505). The
/// firmware's log timestamps track the host's clock, which checks it.
pub(crate) const CPU_HZ: u32 = 20_000_000;
/// Counts per millisecond interrupt, minus one (SysTick counts down to 0).
const RELOAD: u32 = CPU_HZ / 1000 - 1;
const PER_US: u32 = CPU_HZ / 1_000_000;

struct SysTickDriver {
    /// Milliseconds since `init`.
    ms: Mutex<Cell<u64>>,
    /// The earliest wake-up the queue asked for, in ticks (µs).
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ms: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

/// Starts the clock: SysTick on the CPU clock, one interrupt per millisecond.
pub(crate) fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Whole milliseconds and the counts elapsed in the current one, read
/// consistently: a wrap between the two reads shows as a pending SysTick
/// exception (the handler cannot run inside the critical section).
fn split(cs: CriticalSection<'_>) -> (u64, u32) {
    let before = SYST::get_current();
    let wrapped = SCB::is_pendst_pending();
    let after = SYST::get_current();
    let ms = DRIVER.ms.borrow(cs).get();
    if wrapped {
        (ms + 1, RELOAD - after)
    } else {
        (ms, RELOAD - before)
    }
}

/// CPU clock counts since `init` (20 per microsecond).
pub(crate) fn cycles() -> u64 {
    critical_section::with(|cs| {
        let (ms, counts) = split(cs);
        ms * u64::from(RELOAD + 1) + u64::from(counts)
    })
}

impl SysTickDriver {
    fn now_cs(&self, cs: CriticalSection<'_>) -> u64 {
        let (ms, counts) = split(cs);
        ms * 1000 + u64::from(counts / PER_US)
    }

    /// Wakes every expired timer and remembers the next expiry.
    fn run_queue(&self, cs: CriticalSection<'_>) {
        let now = self.now_cs(cs);
        let next = self.queue.borrow(cs).borrow_mut().next_expiration(now);
        self.alarm.borrow(cs).set(next);
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now_cs(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            if self.queue.borrow(cs).borrow_mut().schedule_wake(at, waker) {
                self.run_queue(cs);
            }
        });
    }
}

#[cortex_m_rt::exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ms = DRIVER.ms.borrow(cs);
        ms.set(ms.get() + 1);
        if DRIVER.now_cs(cs) >= DRIVER.alarm.borrow(cs).get() {
            DRIVER.run_queue(cs);
        }
    });
}
