//! A simulated board for hosts.

use crate::app::{Board, LEDS, Readings};

/// A simulated board: a slowly drifting temperature, a button that is
/// pressed now and then, LEDs and a setpoint that are only remembered.
#[derive(Debug)]
pub struct SimBoard {
    seed: u64,
    start: std::time::Instant,
    /// LED states as last set.
    pub leds: [bool; LEDS],
    /// Setpoint as last set, in centidegrees.
    pub setpoint: Option<i32>,
}

impl SimBoard {
    /// A board whose readings follow `seed` (devices in a fleet differ).
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            start: std::time::Instant::now(),
            leds: [false; LEDS],
            setpoint: None,
        }
    }
}

impl Board for SimBoard {
    fn readings(&mut self) -> Readings {
        let t = self.start.elapsed().as_secs_f64();
        let phase = (self.seed % 628) as f64 / 100.0;
        let temp = 2150.0 + 180.0 * (t / 30.0 + phase).sin() + 15.0 * (t * 1.7).sin();
        // The button is held for a second every seven, from a seed-dependent offset.
        let cycle = (t + (self.seed % 7) as f64) % 7.0;
        Readings {
            temperature_centi: temp as i32,
            button: cycle < 1.0,
            presses: ((t + (self.seed % 7) as f64) / 7.0) as u32,
        }
    }

    fn set_led(&mut self, index: usize, on: bool) {
        if let Some(l) = self.leds.get_mut(index) {
            *l = on;
        }
    }

    fn set_setpoint(&mut self, centi: i32) {
        self.setpoint = Some(centi);
    }
}
