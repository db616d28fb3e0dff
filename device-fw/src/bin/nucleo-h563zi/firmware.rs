//! Start-up and tasks.

use core::sync::atomic::Ordering;

use device_fw::app::Controller;
use device_fw::budget::DeviceLinkMemory;
use device_fw::link::{Identity, LinkConfig, run};
use device_fw::provision::{MAX_LEN, Provisioning};
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_stm32::adc::{Adc, SampleTime};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::exti::{self, ExtiInput};
use embassy_stm32::flash::Flash;
use embassy_stm32::gpio::{Level, Output, Pull, Speed};
use embassy_stm32::mode::Async;
use embassy_stm32::peripherals::{ADC1, ETH, ETH_SMA};
use embassy_stm32::rng::{self, Rng};
use embassy_stm32::{Peri, bind_interrupts, eth, interrupt, peripherals};
use embassy_time::Timer;
use proto::{PublicKey, SecretKey};
use static_cell::StaticCell;
use {defmt_rtt as _, panic_probe as _};

use crate::board::{self, Calibration, NucleoBoard};
use crate::net::{Board, NetPlatform, SOCKET_BUFFER};

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<peripherals::RNG>;
    EXTI13 => exti::InterruptHandler<interrupt::typelevel::EXTI13>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::task]
async fn button_task(mut button: ExtiInput<'static, Async>) -> ! {
    loop {
        button.wait_for_rising_edge().await;
        board::BUTTON.store(true, Ordering::Relaxed);
        board::PRESSES.fetch_add(1, Ordering::Relaxed);
        button.wait_for_falling_edge().await;
        board::BUTTON.store(false, Ordering::Relaxed);
    }
}

#[embassy_executor::task]
async fn sensor_task(adc: Peri<'static, ADC1>) -> ! {
    let mut adc = Adc::new(adc);
    let mut ts = adc.enable_temperature();
    let mut vref = adc.enable_vrefint();
    let cal = Calibration::read();
    // The sensor's start-up time (datasheet: tens of µs) before the first sample.
    Timer::after_millis(1).await;
    loop {
        // The sensor needs a long sampling time (datasheet: ≥ 5 µs).
        let t = adc.blocking_read(&mut ts, SampleTime::CYCLES640_5);
        let v = adc.blocking_read(&mut vref, SampleTime::CYCLES640_5);
        board::TEMPERATURE_CENTI.store(board::temperature_centi(t, v, &cal), Ordering::Relaxed);
        Timer::after_secs(1).await;
    }
}

/// Without a valid provisioning block there is nothing to connect to:
/// say why and blink the red LED.
async fn unprovisioned(mut red: Output<'static>, why: device_fw::provision::ProvisionError) -> ! {
    loop {
        log::error!("not provisioned: {why}; see device-fw/README.md");
        for _ in 0..5 {
            red.toggle();
            Timer::after_millis(500).await;
        }
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let p = embassy_stm32::init(board::config());
    crate::logger::init();
    log::info!("devlink firmware {} starting", env!("CARGO_PKG_VERSION"));

    let leds = [
        Output::new(p.PB0, Level::Low, Speed::Low),
        Output::new(p.PF4, Level::Low, Speed::Low),
        Output::new(p.PG4, Level::Low, Speed::Low),
    ];

    static PROVISION: StaticCell<[u8; MAX_LEN]> = StaticCell::new();
    let block = PROVISION.init([0u8; MAX_LEN]);
    let mut flash = Flash::new_blocking(p.FLASH);
    if let Err(e) = flash.blocking_read(board::PROVISION_OFFSET, &mut block[..]) {
        // Only a range error, checked before any byte is copied: the block
        // stays zeroed and is refused below as "not a provisioning block".
        defmt::error!("reading the provisioning sector failed: {}", e);
    }
    let prov = match Provisioning::parse(&block[..]) {
        Ok(prov) => prov,
        Err(e) => {
            let [_, _, red] = leds;
            unprovisioned(red, e).await
        }
    };
    log::info!(
        "device {} for gateway {:?}:{}",
        prov.device_id,
        prov.gateway_ip,
        prov.gateway_port
    );

    let mut rng = Rng::new(p.RNG, Irqs);
    let mut seed = [0u8; 8];
    rng.fill_bytes(&mut seed);

    let id_hash = device_fw::provision::crc32(prov.device_id.as_bytes()).to_be_bytes();
    let mac = [
        board::MAC_PREFIX[0],
        board::MAC_PREFIX[1],
        board::MAC_PREFIX[2],
        id_hash[1],
        id_hash[2],
        id_hash[3],
    ];
    static PACKETS: StaticCell<PacketQueue<4, 4>> = StaticCell::new();
    let device = Ethernet::new(
        PACKETS.init(PacketQueue::<4, 4>::new()),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB15,
        p.PG11,
        mac,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );
    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        device,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        u64::from_le_bytes(seed),
    );
    spawner.spawn(net_task(runner).unwrap_or_else(|_| defmt::panic!("net task")));
    let button = ExtiInput::new(p.PC13, p.EXTI13, Pull::Down, Irqs);
    spawner.spawn(button_task(button).unwrap_or_else(|_| defmt::panic!("button task")));
    spawner.spawn(sensor_task(p.ADC1).unwrap_or_else(|_| defmt::panic!("sensor task")));

    stack.wait_config_up().await;
    log::info!("network up");

    static RX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    static TX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    static MEMORY: StaticCell<DeviceLinkMemory> = StaticCell::new();
    let [a, b, c, d] = prov.gateway_ip;
    let mut platform = NetPlatform {
        stack,
        rx: RX.init([0; SOCKET_BUFFER]),
        tx: TX.init([0; SOCKET_BUFFER]),
        gateway: (embassy_net::Ipv4Address::new(a, b, c, d), prov.gateway_port),
        board: Entropy(rng),
    };
    let identity = Identity {
        key: SecretKey::from_bytes(prov.device_key),
        gateway: PublicKey(prov.gateway_key),
    };
    let mut app = Controller::new(
        NucleoBoard { leds },
        prov.device_id,
        env!("CARGO_PKG_VERSION"),
    );
    let memory = MEMORY.init(DeviceLinkMemory::new());
    run(
        &mut platform,
        &mut app,
        &identity,
        &LinkConfig::DEFAULT,
        memory,
    )
    .await
}

/// This board's randomness (the hardware RNG) and clock.
struct Entropy(Rng<'static, peripherals::RNG>);

impl Board for Entropy {
    fn fill_random(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }

    fn timestamp(&mut self) -> u64 {
        // No real-time clock: microseconds of uptime. After a reboot the
        // gateway answers StaleTimestamp with the last value it accepted and
        // the runtime continues above it (one extra round trip per boot).
        embassy_time::Instant::now().as_micros()
    }
}
