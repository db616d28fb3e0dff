//! What the sample application needs from the hardware (or its simulation).

/// A snapshot of the controller's inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readings {
    /// Temperature in hundredths of a degree Celsius.
    pub temperature_centi: i32,
    /// Whether the user button is pressed now.
    pub button: bool,
    /// How many times the button was pressed since boot.
    pub presses: u32,
}

/// Number of LEDs the application drives.
pub const LEDS: usize = 3;

/// The board under the sample application.
pub trait Board {
    /// Current inputs.
    fn readings(&mut self) -> Readings;
    /// Switches LED `index` (< [`LEDS`]).
    fn set_led(&mut self, index: usize, on: bool);
    /// Applies a new setpoint, in hundredths of a degree (a heater or fan
    /// output on a real controller; stored only, on the reference board).
    fn set_setpoint(&mut self, centi: i32);
}
