//! The board: pins in one place, clocks, and the `Board` the application drives.

use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

use device_fw::app::{Board, LEDS, Readings};
use embassy_stm32::gpio::Output;

/// Flash offset of the provisioning block: the last 8 KiB sector of the 2 MiB
/// bank (well above the firmware, which `scripts/firmware-size` holds to 256 KiB).
pub(crate) const PROVISION_OFFSET: u32 = 0x1F_E000;
/// The station MAC address prefix (locally administered); the low three
/// bytes come from the device id's hash so boards on one LAN differ.
pub(crate) const MAC_PREFIX: [u8; 3] = [0x02, 0x00, 0xde];

// Pins (NUCLEO-H563ZI, UM3115):
//   Ethernet RMII  REF_CLK PA1, CRS_DV PA7, RXD0 PC4, RXD1 PC5, TX_EN PG11, TXD0 PG13, TXD1 PB15
//   SMA            MDIO PA2, MDC PC1
//   LEDs           LD1 green PB0, LD2 yellow PF4, LD3 red PG4
//   USER button    PC13 (active high)

/// Clocks: HSE 8 MHz from the ST-LINK MCO (digital bypass), PLL1 to 250 MHz,
/// HSI48 for the RNG, the ADC on HSE.
pub(crate) fn config() -> embassy_stm32::Config {
    use embassy_stm32::rcc::*;
    use embassy_stm32::time::Hertz;
    let mut config = embassy_stm32::Config::default();
    config.rcc.hsi = None;
    config.rcc.hsi48 = Some(Default::default());
    config.rcc.hse = Some(Hse {
        freq: Hertz(8_000_000),
        mode: HseMode::BypassDigital,
    });
    config.rcc.pll1 = Some(Pll {
        source: PllSource::HSE,
        prediv: PllPreDiv::DIV2,
        mul: PllMul::MUL125,
        divp: Some(PllDiv::DIV2),
        divq: Some(PllDiv::DIV2),
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV1;
    config.rcc.apb2_pre = APBPrescaler::DIV1;
    config.rcc.apb3_pre = APBPrescaler::DIV1;
    config.rcc.sys = Sysclk::PLL1_P;
    config.rcc.voltage_scale = VoltageScale::Scale0;
    config.rcc.mux.adcdacsel = mux::Adcdacsel::HSE;
    config
}

/// Readings shared between the sensor tasks and the application.
pub(crate) static TEMPERATURE_CENTI: AtomicI32 = AtomicI32::new(0);
pub(crate) static BUTTON: AtomicBool = AtomicBool::new(false);
pub(crate) static PRESSES: AtomicU32 = AtomicU32::new(0);
pub(crate) static SETPOINT_CENTI: AtomicI32 = AtomicI32::new(2150);

/// The three LEDs and the shared readings.
pub(crate) struct NucleoBoard {
    pub(crate) leds: [Output<'static>; LEDS],
}

impl Board for NucleoBoard {
    fn readings(&mut self) -> Readings {
        Readings {
            temperature_centi: TEMPERATURE_CENTI.load(Ordering::Relaxed),
            button: BUTTON.load(Ordering::Relaxed),
            presses: PRESSES.load(Ordering::Relaxed),
        }
    }

    fn set_led(&mut self, index: usize, on: bool) {
        if let Some(led) = self.leds.get_mut(index) {
            if on { led.set_high() } else { led.set_low() }
        }
    }

    fn set_setpoint(&mut self, centi: i32) {
        // The reference board has no heater: the setpoint is stored and reported.
        SETPOINT_CENTI.store(centi, Ordering::Relaxed);
    }
}

/// Temperature in centidegrees from raw 12-bit ADC samples, with the
/// factory calibration (`ts_cal1` at 30 °C, `ts_cal2` at 130 °C, measured at
/// VDDA = 3.3 V) rather than the datasheet's typical slope, and VREFINT to
/// correct for the actual supply.
pub(crate) fn temperature_centi(ts: u16, vrefint: u16, cal: &Calibration) -> i32 {
    if vrefint == 0 || cal.ts_cal2 <= cal.ts_cal1 {
        return 0;
    }
    // Scale the sample to what it would read at the calibration supply.
    let ts = i64::from(ts) * i64::from(cal.vrefint_cal) / i64::from(vrefint);
    let span = i64::from(cal.ts_cal2) - i64::from(cal.ts_cal1);
    (3000 + (ts - i64::from(cal.ts_cal1)) * 10_000 / span) as i32
}

/// Factory calibration values.
pub(crate) struct Calibration {
    pub(crate) ts_cal1: u16,
    pub(crate) ts_cal2: u16,
    pub(crate) vrefint_cal: u16,
}

impl Calibration {
    /// Reads the values the factory wrote to the engineering bytes
    /// (RM0481: TS_CAL1 at 0x08FF_F814, TS_CAL2 at 0x08FF_F818,
    /// VREFINT_CAL at 0x08FF_F810, 16 bits each). embassy-stm32 0.6 does not
    /// expose them for the H5 (its metapac has no `DESIG` calibration
    /// registers for this family), hence the raw reads.
    pub(crate) fn read() -> Self {
        // SAFETY: fixed, always-mapped read-only system memory addresses
        // documented in the reference manual; aligned u16 reads.
        unsafe {
            Self {
                ts_cal1: core::ptr::read_volatile(0x08FF_F814 as *const u16),
                ts_cal2: core::ptr::read_volatile(0x08FF_F818 as *const u16),
                vrefint_cal: core::ptr::read_volatile(0x08FF_F810 as *const u16),
            }
        }
    }
}
