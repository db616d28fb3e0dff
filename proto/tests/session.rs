//! Session behaviour end to end between the two roles.

mod common;

use common::*;
use proto::{Code, Config, MsgKind, StreamKind};

#[test]
fn handshake_then_http_exchange() {
    let mut sim = Sim::new(1, Config::DEVICE, Config::GATEWAY);
    sim.connect();
    assert!(!sim.gateway.has_open_streams());
    let id = sim.gateway.open(StreamKind::Http, 0).unwrap();
    assert!(sim.gateway.has_open_streams());
    let head = request_head("GET", "/status");
    assert_eq!(
        sim.gateway.send(id, MsgKind::Head, &head, true, true),
        Ok(head.len())
    );
    let (de, _) = sim.settle();
    assert!(de.contains(&Ev::Opened {
        stream: id,
        kind: StreamKind::Http,
        service: 0
    }));
    let got: Vec<u8> = de
        .iter()
        .filter_map(|e| match e {
            Ev::Data { data, .. } => Some(data.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(got, head);
    sim.device.consume(id, head.len());
    let resp = [0x00, 200, 0, 0];
    sim.device
        .send(id, MsgKind::Head, &resp, true, false)
        .unwrap();
    sim.device
        .send(id, MsgKind::Bytes, b"{\"ok\":true}", false, true)
        .unwrap();
    let (_, ge) = sim.settle();
    let fins = ge
        .iter()
        .filter(|e| matches!(e, Ev::Data { fin: true, .. }))
        .count();
    assert_eq!(fins, 1, "{ge:?}");
    assert_eq!(sim.gateway.open_streams(), 0);
    assert_eq!(sim.device.open_streams(), 0);
    assert!(!sim.gateway.has_open_streams() && !sim.device.has_open_streams());
    let _ = Code::NO_ERROR;
}
