//! The simulated controller hardware: three LEDs (logged when they change),
//! a temperature that drifts, a button pressed for one second in every ten.

use core::sync::atomic::{AtomicI32, Ordering};

use device_fw::app::{Board, LEDS, Readings};

/// Where the setpoint ends up (no heater on an emulator).
static SETPOINT_CENTI: AtomicI32 = AtomicI32::new(2150);

pub(crate) struct SimBoard {
    leds: [bool; LEDS],
}

impl SimBoard {
    pub(crate) const fn new() -> Self {
        Self {
            leds: [false; LEDS],
        }
    }
}

/// A triangle wave: 20.00 °C to 23.00 °C and back every 60 s.
fn temperature_centi(ms: u64) -> i32 {
    let phase = (ms % 60_000) as i32;
    let up = if phase < 30_000 {
        phase
    } else {
        60_000 - phase
    };
    2000 + up / 100
}

impl Board for SimBoard {
    fn readings(&mut self) -> Readings {
        let ms = embassy_time::Instant::now().as_millis();
        let secs = ms / 1000;
        Readings {
            temperature_centi: temperature_centi(ms),
            button: secs % 10 == 9,
            presses: (secs / 10) as u32,
        }
    }

    fn set_led(&mut self, index: usize, on: bool) {
        if let Some(led) = self.leds.get_mut(index)
            && *led != on
        {
            *led = on;
            log::info!("LED{} {}", index + 1, if on { "on" } else { "off" });
        }
    }

    fn set_setpoint(&mut self, centi: i32) {
        SETPOINT_CENTI.store(centi, Ordering::Relaxed);
        log::info!("setpoint {}.{:02} °C", centi / 100, centi % 100);
    }
}
