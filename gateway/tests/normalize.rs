//! The normalization matrix: what the device sees for each combination of
//! browser request and device policy.

use gateway::normalize::*;
use http::{HeaderMap, HeaderValue};

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(*n, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn policy() -> Policy {
    Policy {
        host: "plc-7.local".into(),
        host_port: None,
        allowed_origins: vec![
            "https://plc-7.gw.example".into(),
            "https://gw.example".into(),
        ],
        origin: OriginPolicy::Rewrite,
        subprotocol: SubprotocolPolicy::Negotiate,
        protocols: Vec::new(),
    }
}

fn device_view(h: &HeaderMap, p: &Policy, sub: Option<&str>) -> Vec<(String, String)> {
    let inc = Incoming {
        headers: h,
        client: "198.51.100.7:50000".parse().unwrap(),
        public_host: "plc-7.gw.example",
        scheme: "https",
    };
    device_headers(&inc, p, sub)
        .unwrap()
        .into_iter()
        .map(|(n, v)| (n.as_str().to_string(), String::from_utf8(v).unwrap()))
        .collect()
}

fn get<'a>(v: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    v.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, x)| x.as_str())
        .collect()
}

#[test]
fn origin_allowed_foreign_missing() {
    let allowed = policy().allowed_origins;
    // WebSocket: must be present and allowed (cross-site WebSocket hijacking).
    assert_eq!(
        check_origin(&headers(&[]), &allowed, true),
        Err(Rejection::MissingOrigin)
    );
    assert_eq!(
        check_origin(
            &headers(&[("origin", "https://plc-7.gw.example")]),
            &allowed,
            true
        ),
        Ok(())
    );
    assert_eq!(
        check_origin(
            &headers(&[("origin", "HTTPS://PLC-7.GW.EXAMPLE")]),
            &allowed,
            true
        ),
        Ok(())
    );
    let foreign = check_origin(
        &headers(&[("origin", "https://evil.example")]),
        &allowed,
        true,
    );
    assert_eq!(
        foreign,
        Err(Rejection::ForeignOrigin("https://evil.example".into()))
    );
    assert_eq!(foreign.unwrap_err().status(), 403);
    for bad in [
        "null",
        "https://plc-7.gw.example:444",
        "http://plc-7.gw.example",
        "https://plc-7.gw.example.evil",
    ] {
        assert!(
            check_origin(&headers(&[("origin", bad)]), &allowed, true).is_err(),
            "{bad}"
        );
    }
    let two = headers(&[
        ("origin", "https://gw.example"),
        ("origin", "https://gw.example"),
    ]);
    assert!(
        check_origin(&two, &allowed, true).is_err(),
        "two Origin fields"
    );
    // Plain requests: absent is fine (scripts, same-origin GETs), foreign is not.
    assert_eq!(check_origin(&headers(&[]), &allowed, false), Ok(()));
    assert!(
        check_origin(
            &headers(&[("origin", "https://evil.example")]),
            &allowed,
            false
        )
        .is_err()
    );
}

#[test]
fn origin_toward_the_device() {
    let h = headers(&[("origin", "https://plc-7.gw.example")]);
    let mut p = policy();
    assert_eq!(
        get(&device_view(&h, &p, None), "origin"),
        vec!["http://plc-7.local"]
    );
    p.host_port = Some(8080);
    assert_eq!(
        get(&device_view(&h, &p, None), "origin"),
        vec!["http://plc-7.local:8080"]
    );
    p.origin = OriginPolicy::Keep;
    assert_eq!(
        get(&device_view(&h, &p, None), "origin"),
        vec!["https://plc-7.gw.example"]
    );
    p.origin = OriginPolicy::Strip;
    assert!(get(&device_view(&h, &p, None), "origin").is_empty());
    p.origin = OriginPolicy::Set("http://lws.local".into());
    assert_eq!(
        get(&device_view(&h, &p, None), "origin"),
        vec!["http://lws.local"]
    );
    // No Origin from the browser: none is invented.
    assert!(get(&device_view(&headers(&[]), &policy(), None), "origin").is_empty());
}

#[test]
fn host_with_and_without_port() {
    let h = headers(&[("host", "plc-7.gw.example")]);
    let mut p = policy();
    assert_eq!(get(&device_view(&h, &p, None), "host"), vec!["plc-7.local"]);
    p.host_port = Some(80);
    assert_eq!(
        get(&device_view(&h, &p, None), "host"),
        vec!["plc-7.local"],
        "default port never appended (seed 004)"
    );
    p.host_port = Some(7681);
    assert_eq!(
        get(&device_view(&h, &p, None), "host"),
        vec!["plc-7.local:7681"]
    );
}

#[test]
fn subprotocol_lists() {
    let dev = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let offered = offered_subprotocols(&headers(&[
        ("sec-websocket-protocol", "chat, dumb-increment-protocol"),
        ("sec-websocket-protocol", "x y,,"),
    ]));
    assert_eq!(
        offered,
        dev(&["chat", "dumb-increment-protocol"]),
        "invalid tokens skipped"
    );
    let lws = dev(&[
        "dumb-increment-protocol",
        "lws-mirror-protocol",
        "lws-status",
    ]);
    // Seed 001: only a protocol the device knows goes to it; the browser gets one it offered.
    let c = choose_subprotocol(&offered, &lws, &SubprotocolPolicy::Negotiate);
    assert_eq!(
        (c.browser.as_deref(), c.device.as_deref()),
        (
            Some("dumb-increment-protocol"),
            Some("dumb-increment-protocol")
        )
    );
    // Nothing in common: no protocol either way, never an error.
    let c = choose_subprotocol(&dev(&["chat"]), &lws, &SubprotocolPolicy::Negotiate);
    assert_eq!(c, SubprotocolChoice::default());
    assert_eq!(
        choose_subprotocol(&[], &lws, &SubprotocolPolicy::Negotiate),
        SubprotocolChoice::default()
    );
    // Seed 003: a device that rejects any subprotocol header.
    let c = choose_subprotocol(
        &dev(&["readings.v1"]),
        &dev(&["readings.v1"]),
        &SubprotocolPolicy::Strip,
    );
    assert_eq!(
        (c.browser.as_deref(), c.device),
        (Some("readings.v1"), None)
    );
    // Rewrite: the browser's name maps to the device's.
    let map = SubprotocolPolicy::Map(vec![("chat".into(), "lws-mirror-protocol".into())]);
    let c = choose_subprotocol(&dev(&["chat"]), &lws, &map);
    assert_eq!(
        (c.browser.as_deref(), c.device.as_deref()),
        (Some("chat"), Some("lws-mirror-protocol"))
    );
    // The device view carries exactly the chosen one.
    let h = headers(&[
        ("sec-websocket-protocol", "chat, dumb-increment-protocol"),
        ("sec-websocket-key", "abc"),
    ]);
    let v = device_view(&h, &policy(), Some("dumb-increment-protocol"));
    assert_eq!(
        get(&v, "sec-websocket-protocol"),
        vec!["dumb-increment-protocol"]
    );
    assert!(get(&v, "sec-websocket-key").is_empty());
    assert!(get(&device_view(&h, &policy(), None), "sec-websocket-protocol").is_empty());
}

#[test]
fn hop_by_hop_and_forwarding_fields() {
    let h = headers(&[
        ("connection", "keep-alive, x-secret-hop"),
        ("x-secret-hop", "1"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("te", "trailers"),
        ("forwarded", "for=1.2.3.4"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-real-ip", "1.2.3.4"),
        ("accept", "text/html"),
        ("cookie", "a=1"),
        ("content-length", "5"),
    ]);
    let v = device_view(&h, &policy(), None);
    for gone in [
        "connection",
        "x-secret-hop",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "x-real-ip",
    ] {
        assert!(get(&v, gone).is_empty(), "{gone} must not reach the device");
    }
    assert_eq!(
        get(&v, "forwarded"),
        vec!["for=198.51.100.7;proto=https;host=\"plc-7.gw.example\""]
    );
    assert_eq!(
        get(&v, "x-forwarded-for"),
        vec!["198.51.100.7"],
        "client-sent values are replaced, not appended"
    );
    assert_eq!(get(&v, "x-forwarded-proto"), vec!["https"]);
    assert_eq!(get(&v, "x-forwarded-host"), vec!["plc-7.gw.example"]);
    assert_eq!(get(&v, "accept"), vec!["text/html"]);
    assert_eq!(get(&v, "content-length"), vec!["5"]);
    assert_eq!(v[0].0, "host", "Host first");
    // IPv6 clients are quoted and bracketed in Forwarded.
    let inc = Incoming {
        headers: &h,
        client: "[2001:db8::1]:443".parse().unwrap(),
        public_host: "gw.example",
        scheme: "https",
    };
    let v6 = device_headers(&inc, &policy(), None).unwrap();
    let fwd = v6.iter().find(|(n, _)| n == "forwarded").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fwd.1),
        "for=\"[2001:db8::1]\";proto=https;host=\"gw.example\""
    );
}

#[test]
fn heads_encode_for_the_device_and_limits_hold() {
    let h = headers(&[("accept", "*/*")]);
    let fields = {
        let inc = Incoming {
            headers: &h,
            client: "127.0.0.1:1".parse().unwrap(),
            public_host: "gw",
            scheme: "https",
        };
        device_headers(&inc, &policy(), None).unwrap()
    };
    let bytes = encode_request_head("GET", "/api/status?x=1", &fields).unwrap();
    let parsed = proto::wire::RequestHead::parse(&bytes).unwrap();
    assert_eq!((parsed.method, parsed.target), ("GET", "/api/status?x=1"));
    assert_eq!(parsed.headers.get("host"), Some(&b"plc-7.local"[..]));
    assert_eq!(
        encode_request_head("GET", "http://evil/", &fields),
        Err(Rejection::BadTarget)
    );
    let mut many = HeaderMap::new();
    for i in 0..200 {
        many.append(
            http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
            HeaderValue::from_static("1"),
        );
    }
    let inc = Incoming {
        headers: &many,
        client: "127.0.0.1:1".parse().unwrap(),
        public_host: "gw",
        scheme: "https",
    };
    let err = device_headers(&inc, &policy(), None).unwrap_err();
    assert_eq!(err.status(), 431);
}
