//! Randomness on a board without a TRNG. **Not cryptographically secure.**
//!
//! The AN505 has no random number generator, so this one is derived:
//!
//! ```text
//! seed  = BLAKE2s("devlink an505 rng" | provisioned seed | device key
//!                 | host time (semihosting) | 64 SysTick jitter samples)
//! block = BLAKE2s(seed | counter | SysTick now)       32 bytes each
//! after every fill: seed = BLAKE2s(seed | "ratchet")
//! ```
//!
//! The provisioned seed is the optional host file `devlink.seed` (the test
//! writes 32 bytes from the OS); without it, the device key and the jitter
//! are all there is. Under QEMU the SysTick "jitter" is the host's timing
//! as seen through the emulator, and with `-icount` it is deterministic.
//! Good enough to make ephemeral keys differ per boot in an emulator; a
//! real board must use its TRNG (the NUCLEO-H563ZI does).

use blake2::{Blake2s256, Digest};

use crate::{semihosting, time};

pub(crate) struct JitterRng {
    seed: [u8; 32],
    counter: u64,
}

/// Timer samples whose low bits depend on how long each step took.
fn jitter(h: &mut Blake2s256, samples: usize) {
    for i in 0..samples {
        // Uneven busy work between samples.
        for _ in 0..(i % 7) * 13 {
            cortex_m::asm::nop();
        }
        h.update(time::cycles().to_le_bytes());
    }
}

impl JitterRng {
    /// Seeds from `provisioned` (may be empty), the device key, the host's
    /// clock and timer jitter.
    pub(crate) fn new(provisioned: &[u8], device_key: &[u8; 32]) -> Self {
        let mut h = Blake2s256::new();
        h.update(b"devlink an505 rng");
        h.update(provisioned);
        h.update(device_key);
        h.update(semihosting::host_time().to_le_bytes());
        jitter(&mut h, 64);
        Self {
            seed: h.finalize().into(),
            counter: 0,
        }
    }

    pub(crate) fn fill_bytes(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(32) {
            self.counter += 1;
            let mut h = Blake2s256::new();
            h.update(self.seed);
            h.update(self.counter.to_le_bytes());
            h.update(time::cycles().to_le_bytes());
            let block: [u8; 32] = h.finalize().into();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
        let mut h = Blake2s256::new();
        h.update(self.seed);
        h.update(b"ratchet");
        self.seed = h.finalize().into();
    }
}
