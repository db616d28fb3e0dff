//! An `embassy-net-driver` for the SMSC LAN9118 as QEMU models it
//! (`hw/net/lan9118.c`; the AN505 FPGA has a LAN9220, software compatible).
//!
//! ```text
//!  0x00 RX data FIFO   0x20 TX data FIFO   0x40 RX status FIFO
//!  0x58 INT_STS  0x5C INT_EN  0x54 IRQ_CFG  0x64 BYTE_TEST  0x6C RX_CFG
//!  0x70 TX_CFG   0x74 HW_CFG  0x7C RX_FIFO_INF  0xA4/0xA8 MAC CSR command/data
//! ```
//!
//! Programmed I/O, one frame at a time: a received frame is one RX status
//! word (length in bits 29:16, including the 4-byte FCS) and that many
//! bytes, rounded up to words, in the RX data FIFO; a frame to send is TX
//! command A (first and last segment, length), command B (tag, length) and
//! the data words. The controller raises its interrupt (active high,
//! push-pull) when the RX status FIFO holds a frame (`RSFL`); the handler
//! acknowledges it and wakes the embassy-net runner.
//!
//! Not modelled by QEMU and so not handled here: FIFO overruns, TX status
//! (the status FIFO may overrun: `TXSAO` allows it), PHY link changes (the
//! link is reported up; QEMU's user network is always up).

use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_sync::waitqueue::AtomicWaker;

/// The register block: QEMU's `hw/arm/mps2-tz.c` maps the AN505's "eth"
/// port of AHB PPC expansion 0 at 0x42000000. The core runs Secure with
/// the SAU off, so this address is accessed as Secure and the PPC (its
/// ports Secure after reset) lets it through; the secure alias 0x52000000
/// reaches the same device.
pub(crate) const BASE: usize = 0x4200_0000;
/// Its interrupt line: `mps2-tz.c` wires it to expansion IRQ 16, which the
/// IoT Kit presents to the NVIC as interrupt 32 + 16.
pub(crate) const IRQ: u16 = 48;
/// Largest Ethernet frame without FCS.
const MTU: usize = 1514;

const RX_DATA: usize = 0x00;
const TX_DATA: usize = 0x20;
const RX_STATUS: usize = 0x40;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5C;
const BYTE_TEST: usize = 0x64;
const FIFO_INT: usize = 0x68;
const RX_CFG: usize = 0x6C;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7C;
const MAC_CSR_CMD: usize = 0xA4;
const MAC_CSR_DATA: usize = 0xA8;

const IRQ_EN: u32 = 1 << 8;
const IRQ_POL_HIGH: u32 = 1 << 4;
const IRQ_PUSH_PULL: u32 = 1 << 0;
const INT_RSFL: u32 = 1 << 3;
const HW_CFG_SRST: u32 = 1 << 0;
const TX_CFG_ON: u32 = 1 << 1;
const TX_CFG_SAO: u32 = 1 << 2;
const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;
const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_CR_RXEN: u32 = 1 << 2;
const MAC_CR_TXEN: u32 = 1 << 3;
const MAC_CR_FDPX: u32 = 1 << 20;
const RX_STATUS_ERROR: u32 = 1 << 15;
const TX_FIRST: u32 = 1 << 13;
const TX_LAST: u32 = 1 << 12;

static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// The register block. All `unsafe` of the driver is in its two methods.
#[derive(Clone, Copy)]
struct Regs(usize);

impl Regs {
    fn read(self, offset: usize) -> u32 {
        // SAFETY: `self.0` is the LAN9118's register block (a device region,
        // always mapped on this board); every offset used is a 32-bit
        // register of it, aligned.
        unsafe { core::ptr::read_volatile((self.0 + offset) as *const u32) }
    }

    fn write(self, offset: usize, value: u32) {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((self.0 + offset) as *mut u32, value) }
    }

    fn mac_wait(self) {
        while self.read(MAC_CSR_CMD) & CSR_BUSY != 0 {}
    }

    fn mac_read(self, reg: u32) -> u32 {
        self.mac_wait();
        self.write(MAC_CSR_CMD, CSR_BUSY | CSR_READ | reg);
        self.mac_wait();
        self.read(MAC_CSR_DATA)
    }

    fn mac_write(self, reg: u32, value: u32) {
        self.mac_wait();
        self.write(MAC_CSR_DATA, value);
        self.write(MAC_CSR_CMD, CSR_BUSY | reg);
        self.mac_wait();
    }
}

/// Why the controller could not be started.
pub(crate) enum InitError {
    /// `BYTE_TEST` did not read `0x87654321`: no LAN9118 at the address.
    NotFound(u32),
}

impl core::fmt::Display for InitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotFound(v) => write!(
                f,
                "no LAN9118 at {BASE:#010x} (BYTE_TEST read {v:#010x}, expected 0x87654321)"
            ),
        }
    }
}

/// The controller and its one-frame buffers.
pub(crate) struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    rx: [u8; MTU + 4 + 3],
    tx: [u8; MTU],
}

impl Lan9118 {
    /// Resets the controller and starts it with the MAC address QEMU gave
    /// the NIC (`-nic user,mac=…`, loaded from its EEPROM), or `fallback`
    /// if it has none.
    pub(crate) fn new(fallback: [u8; 6]) -> Result<Self, InitError> {
        let regs = Regs(BASE);
        let test = regs.read(BYTE_TEST);
        if test != 0x8765_4321 {
            return Err(InitError::NotFound(test));
        }
        regs.write(HW_CFG, HW_CFG_SRST);
        while regs.read(HW_CFG) & HW_CFG_SRST != 0 {}

        let lo = regs.mac_read(MAC_ADDRL).to_le_bytes();
        let hi = regs.mac_read(MAC_ADDRH).to_le_bytes();
        let mut mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        if mac == [0; 6] || mac == [0xff; 6] {
            mac = fallback;
            regs.mac_write(
                MAC_ADDRL,
                u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            );
            regs.mac_write(MAC_ADDRH, u32::from_le_bytes([mac[4], mac[5], 0, 0]));
        }
        // Own address and broadcast (DHCP), full duplex.
        regs.mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_FDPX);
        regs.write(TX_CFG, TX_CFG_ON | TX_CFG_SAO);
        regs.write(RX_CFG, 0);
        // RX status level 0: interrupt as soon as one frame is in.
        regs.write(FIFO_INT, 0x4800_0000);
        regs.write(INT_STS, u32::MAX);
        regs.write(INT_EN, INT_RSFL);
        regs.write(IRQ_CFG, IRQ_EN | IRQ_POL_HIGH | IRQ_PUSH_PULL);
        Ok(Self {
            regs,
            mac,
            rx: [0; MTU + 4 + 3],
            tx: [0; MTU],
        })
    }

    /// The station address in use.
    pub(crate) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Moves the next good frame into `rx`; its length without the FCS.
    fn pop_frame(&mut self) -> Option<usize> {
        loop {
            let frames = (self.regs.read(RX_FIFO_INF) >> 16) & 0xff;
            if frames == 0 {
                return None;
            }
            let status = self.regs.read(RX_STATUS);
            let len = ((status >> 16) & 0x3fff) as usize;
            let words = len.div_ceil(4);
            let keep = status & RX_STATUS_ERROR == 0 && (18..=MTU + 4).contains(&len);
            for i in 0..words {
                let w = self.regs.read(RX_DATA).to_le_bytes();
                if keep {
                    self.rx[i * 4..i * 4 + 4].copy_from_slice(&w);
                }
            }
            if keep {
                return Some(len - 4);
            }
        }
    }
}

/// The controller's interrupt: acknowledge and wake the runner.
pub(crate) fn on_interrupt() {
    Regs(BASE).write(INT_STS, INT_RSFL);
    RX_WAKER.wake();
}

pub(crate) struct RxToken<'a>(&'a mut [u8]);

impl embassy_net_driver::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

pub(crate) struct TxToken<'a> {
    regs: Regs,
    buf: &'a mut [u8; MTU],
}

impl embassy_net_driver::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let r = f(&mut self.buf[..len]);
        let l = len as u32;
        self.regs.write(TX_DATA, TX_FIRST | TX_LAST | l);
        self.regs.write(TX_DATA, (l << 16) | l);
        for chunk in self.buf[..len].chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(TX_DATA, u32::from_le_bytes(w));
        }
        r
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a>
        = RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context<'_>) -> Option<(RxToken<'_>, TxToken<'_>)> {
        // Register before looking, so a frame landing in between still wakes us.
        RX_WAKER.register(cx.waker());
        let len = self.pop_frame()?;
        Some((
            RxToken(&mut self.rx[..len]),
            TxToken {
                regs: self.regs,
                buf: &mut self.tx,
            },
        ))
    }

    fn transmit(&mut self, _cx: &mut Context<'_>) -> Option<TxToken<'_>> {
        // QEMU sends a frame as soon as its last word is written: the TX
        // FIFO never fills.
        Some(TxToken {
            regs: self.regs,
            buf: &mut self.tx,
        })
    }

    fn link_state(&mut self, _cx: &mut Context<'_>) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
