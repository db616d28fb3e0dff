//! Large transfers in both directions at once through tiny windows and the
//! smallest records, every read and write split at random: byte-exact, no
//! stall (the failure of seed 002 cannot happen here).

mod common;

use common::*;
use proto::wire::Params;
use proto::{Config, MsgKind, StreamId, StreamKind};

/// The byte at `offset` of stream `s` in direction `d`: cheap, position-dependent.
fn pattern(s: usize, d: usize, offset: u64) -> u8 {
    let x = offset
        .wrapping_mul(0x9e37_79b9)
        .wrapping_add((s as u64) << 8 | d as u64);
    (x ^ (x >> 13) ^ (x >> 29)) as u8
}

struct Flow {
    sent: u64,
    received: u64,
    fin_received: bool,
    fin_sent: bool,
}

fn tiny(max_record: u16, stream_window: u32, conn_window: u32) -> Params {
    Params {
        max_record,
        max_streams: 8,
        stream_window,
        conn_window,
    }
}

fn run_bulk(seed: u64, streams: usize, per_flow: u64, kind: StreamKind) {
    let dev = Config {
        params: tiny(512, 700, 1500),
        ..Config::DEVICE
    };
    let gw = Config {
        params: tiny(512, 900, 2100),
        ..Config::GATEWAY
    };
    let mut sim = Sim::new(seed, dev, gw);
    sim.max_chunk = 1400;
    sim.connect();

    let ids: Vec<StreamId> = (0..streams)
        .map(|_| {
            sim.gateway
                .open(kind, if kind == StreamKind::Raw { 1 } else { 0 })
                .unwrap()
        })
        .collect();
    // flows[s][0]: gateway → device, flows[s][1]: device → gateway
    let mut flows: Vec<[Flow; 2]> = (0..streams)
        .map(|_| {
            let f = || Flow {
                sent: 0,
                received: 0,
                fin_received: false,
                fin_sent: false,
            };
            [f(), f()]
        })
        .collect();
    let mut device_knows = vec![false; streams];
    let mut chunk = vec![0u8; 4096];
    let mut idle_steps = 0;
    let mut steps = 0u64;
    loop {
        steps += 1;
        let mut progress = false;
        for (s, id) in ids.iter().enumerate() {
            for (d, side) in [(0, Side::Gateway), (1, Side::Device)] {
                let f = &mut flows[s][d];
                if f.fin_sent || (side == Side::Device && !device_knows[s]) {
                    continue;
                }
                let left = per_flow - f.sent;
                let n = (sim.rng.upto(2000) as u64).min(left) as usize;
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(s, d, f.sent + i as u64);
                }
                let fin = n as u64 == left;
                let sess = sim.session(side);
                match sess.send(*id, MsgKind::Bytes, &chunk[..n], false, fin) {
                    Ok(k) => {
                        f.sent += k as u64;
                        f.fin_sent = fin && k == n;
                        progress |= k > 0 || f.fin_sent;
                    }
                    Err(proto::StreamError::Blocked) => {}
                    Err(e) => panic!("send on {id} failed: {e}"),
                }
            }
        }
        sim.flush();
        for side in [Side::Device, Side::Gateway] {
            let d = if side == Side::Device { 0 } else { 1 };
            for ev in sim.deliver(side) {
                match ev {
                    Ev::Data {
                        stream,
                        data,
                        fin,
                        msg,
                        ..
                    } => {
                        assert_eq!(msg, MsgKind::Bytes);
                        let s = ids.iter().position(|i| *i == stream).unwrap();
                        let f = &mut flows[s][d];
                        for (i, b) in data.iter().enumerate() {
                            let want = pattern(s, d, f.received + i as u64);
                            assert_eq!(
                                *b,
                                want,
                                "stream {stream} dir {d} offset {}",
                                f.received + i as u64
                            );
                        }
                        f.received += data.len() as u64;
                        f.fin_received |= fin;
                        progress |= !data.is_empty() || fin;
                        sim.session(side).consume(stream, data.len());
                    }
                    Ev::Opened { stream, .. } if side == Side::Device => {
                        device_knows[ids.iter().position(|i| *i == stream).unwrap()] = true;
                    }
                    Ev::Credit { .. } | Ev::Rtt(_) => {}
                    other => panic!("unexpected event on {side:?}: {other:?}"),
                }
            }
        }
        // One millisecond of simulated time per step: keepalives run, nothing times out.
        sim.advance(1);
        if flows.iter().flatten().all(|f| f.fin_received) {
            break;
        }
        idle_steps = if progress { 0 } else { idle_steps + 1 };
        assert!(
            idle_steps < 1000,
            "stalled after {steps} steps: {:?}",
            flows
                .iter()
                .map(|f| [f[0].received, f[1].received])
                .collect::<Vec<_>>()
        );
    }
    for f in flows.iter().flatten() {
        assert_eq!(f.received, per_flow);
    }
    assert_eq!(sim.gateway.open_streams(), 0);
    assert_eq!(sim.device.open_streams(), 0);
    assert!(sim.gateway.is_established() && sim.device.is_established());
}

/// 100 MB each way at once over four raw streams (25 MB per stream and direction).
#[test]
fn hundred_megabytes_each_way_tiny_windows_random_splits() {
    run_bulk(0xb01c, 4, 25_000_000, StreamKind::Raw);
}

/// The same machinery with several seeds and small volumes, to vary schedules.
#[test]
fn many_schedules() {
    for seed in 0..20 {
        run_bulk(
            seed,
            1 + (seed as usize % 4),
            20_000 + seed * 777,
            StreamKind::Raw,
        );
    }
}
