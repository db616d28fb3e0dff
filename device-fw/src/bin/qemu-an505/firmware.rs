//! Start-up and tasks.

use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::NVIC;
use device_fw::app::Controller;
use device_fw::budget::DeviceLinkMemory;
use device_fw::link::{Identity, LinkConfig, run};
use device_fw::provision::{MAX_LEN, Provisioning};
use embassy_executor::Spawner;
use embassy_net::StackResources;
use embassy_time::Timer;
use proto::{PublicKey, SecretKey};
use static_cell::StaticCell;

use crate::board::SimBoard;
use crate::lan9118::{self, Lan9118};
use crate::net::{Board, NetPlatform, SOCKET_BUFFER};
use crate::rng::JitterRng;
use crate::{semihosting, stack, time};

/// The provisioning block, a host file in QEMU's working directory (the
/// same bytes the NUCLEO-H563ZI keeps in flash; device-fw/README.md).
const PROVISION_FILE: &str = "devlink.prov";
/// An optional 32-byte seed for the RNG (see `rng.rs`).
const SEED_FILE: &str = "devlink.seed";
/// Locally administered MAC prefix, used if QEMU's NIC has no address.
const MAC_PREFIX: [u8; 3] = [0x02, 0x00, 0xde];

#[derive(Clone, Copy)]
struct EthIrq;

// SAFETY: 48 is an interrupt this board has (the LAN9118's).
unsafe impl InterruptNumber for EthIrq {
    fn number(self) -> u16 {
        lan9118::IRQ
    }
}

/// Without a board crate every interrupt comes here (cortex-m-rt's
/// default vector table); the only one enabled is the LAN9118's.
#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == lan9118::IRQ as i16 {
        lan9118::on_interrupt();
    } else {
        panic!("unexpected exception or interrupt {irqn}");
    }
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

/// Logs the stack's high-water mark whenever it changes (the QEMU test and
/// BENCHMARKS.md read it from here).
#[embassy_executor::task]
async fn stack_task() -> ! {
    let mut reported = 0;
    loop {
        let used = stack::high_water();
        if used != reported {
            reported = used;
            log::info!("stack high-water {} of {} bytes", used, stack::size());
        }
        Timer::after_secs(1).await;
    }
}

/// Without a provisioning block there is nothing to connect to.
fn unprovisioned(why: &dyn core::fmt::Display) -> ! {
    log::error!("not provisioned: {why}; see device-fw/README.md (QEMU mps2-an505)");
    semihosting::exit(false)
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    stack::paint();
    let p = cortex_m::Peripherals::take().unwrap_or_else(|| panic!("peripherals taken"));
    time::init(p.SYST);
    semihosting::init_log();
    log::info!(
        "devlink firmware {} on QEMU mps2-an505 starting",
        env!("CARGO_PKG_VERSION")
    );

    static PROVISION: StaticCell<[u8; MAX_LEN]> = StaticCell::new();
    let block = PROVISION.init([0u8; MAX_LEN]);
    let Some(len) = semihosting::read_file(PROVISION_FILE, &mut block[..]) else {
        unprovisioned(&"no host file devlink.prov in QEMU's working directory")
    };
    let prov = match Provisioning::parse(&block[..len]) {
        Ok(prov) => prov,
        Err(e) => unprovisioned(&e),
    };
    log::info!(
        "device {} for gateway {:?}:{}",
        prov.device_id,
        prov.gateway_ip,
        prov.gateway_port
    );

    let mut seed = [0u8; 32];
    let seed_len = semihosting::read_file(SEED_FILE, &mut seed).unwrap_or(0);
    let mut rng = JitterRng::new(&seed[..seed_len], &prov.device_key);
    let mut net_seed = [0u8; 8];
    rng.fill_bytes(&mut net_seed);

    let id_hash = device_fw::provision::crc32(prov.device_id.as_bytes()).to_be_bytes();
    let fallback = [
        MAC_PREFIX[0],
        MAC_PREFIX[1],
        MAC_PREFIX[2],
        id_hash[1],
        id_hash[2],
        id_hash[3],
    ];
    let device = match Lan9118::new(fallback) {
        Ok(d) => d,
        Err(e) => {
            log::error!("Ethernet: {e}");
            semihosting::exit(false)
        }
    };
    log::info!("LAN9118 up, MAC {:02x?}", device.mac());
    // SAFETY: the handler only touches the LAN9118's interrupt status and
    // an AtomicWaker; no critical section relies on this line being masked.
    unsafe { NVIC::unmask(EthIrq) };

    static RESOURCES: StaticCell<StackResources<3>> = StaticCell::new();
    let (net, runner) = embassy_net::new(
        device,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        u64::from_le_bytes(net_seed),
    );
    spawner.spawn(net_task(runner).unwrap_or_else(|_| panic!("net task")));
    spawner.spawn(stack_task().unwrap_or_else(|_| panic!("stack task")));

    net.wait_config_up().await;
    if let Some(c) = net.config_v4() {
        log::info!("network up: {}", c.address);
    }

    static RX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    static TX: StaticCell<[u8; SOCKET_BUFFER]> = StaticCell::new();
    static MEMORY: StaticCell<DeviceLinkMemory> = StaticCell::new();
    let [a, b, c, d] = prov.gateway_ip;
    let mut platform = NetPlatform {
        stack: net,
        rx: RX.init([0; SOCKET_BUFFER]),
        tx: TX.init([0; SOCKET_BUFFER]),
        gateway: (embassy_net::Ipv4Address::new(a, b, c, d), prov.gateway_port),
        board: Entropy {
            rng,
            boot_us: semihosting::host_time() * 1_000_000,
        },
    };
    let identity = Identity {
        key: SecretKey::from_bytes(prov.device_key),
        gateway: PublicKey(prov.gateway_key),
    };
    let mut app = Controller::new(SimBoard::new(), prov.device_id, env!("CARGO_PKG_VERSION"));
    let memory = MEMORY.init(DeviceLinkMemory::new());
    // Start-up (moving the network stack and buffers into their statics)
    // is done: measure the running link, its network task and interrupts.
    stack::paint();
    log::info!("stack repainted: high-water from here on is the running link's");
    run(
        &mut platform,
        &mut app,
        &identity,
        &LinkConfig::DEFAULT,
        memory,
    )
    .await
}

/// This board's randomness and clock.
struct Entropy {
    rng: JitterRng,
    /// The host's clock at boot, µs since 1970 (semihosting SYS_TIME).
    boot_us: u64,
}

impl Board for Entropy {
    fn fill_random(&mut self, buf: &mut [u8]) {
        self.rng.fill_bytes(buf);
    }

    fn timestamp(&mut self) -> u64 {
        // The host's clock at boot plus uptime: increasing across reboots
        // as long as the host's clock is, so no StaleTimestamp round trip.
        self.boot_us + embassy_time::Instant::now().as_micros()
    }
}
