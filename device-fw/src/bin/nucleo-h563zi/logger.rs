//! The library logs through the `log` facade; on the board it goes to defmt (RTT).

struct Defmt;

impl log::Log for Defmt {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = defmt::Display2Format(record.args());
        match record.level() {
            log::Level::Error => defmt::error!("{}", text),
            log::Level::Warn => defmt::warn!("{}", text),
            log::Level::Info => defmt::info!("{}", text),
            log::Level::Debug => defmt::debug!("{}", text),
            log::Level::Trace => defmt::trace!("{}", text),
        }
    }

    fn flush(&self) {}
}

static LOGGER: Defmt = Defmt;

pub(crate) fn init() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
