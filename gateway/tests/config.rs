//! The configuration: a full file typed into runtime values with defaults
//! applied, and every class of error reported with its file, line and
//! column, all at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::config::{
    self, Config, ConfigError, ConfigErrors, ErrorKind, Exposure, Position, ServiceChoice, Upstream,
};
use gateway::edge::listener::SocketOptions;
use gateway::keys;
use gateway::normalize::{OriginPolicy, SubprotocolPolicy};
use proto::PublicKey;

mod common;

use common::TempDir;

trait Load {
    /// Writes `text` as gateway.toml (with a key and certificates) and loads it.
    fn load(&self, text: &str) -> Result<Config, ConfigErrors>;
}

impl Load for TempDir {
    fn load(&self, text: &str) -> Result<Config, ConfigErrors> {
        if !self.path().join("gateway.key").exists() {
            self.key();
        }
        if !self.path().join("tls").exists() {
            self.certs();
        }
        config::load(self.write("gateway.toml", text))
    }
}

fn hex(b: u8) -> String {
    keys::to_hex(&[b; 32])
}

/// `(line, column)` of each error, in the order reported.
fn positions(e: &ConfigErrors) -> Vec<(usize, usize)> {
    e.iter()
        .map(|e| {
            let p = e.at.position.expect("a position");
            (p.line, p.column)
        })
        .collect()
}

fn only(e: ConfigErrors) -> ConfigError {
    assert_eq!(e.len(), 1, "expected one error:\n{e}");
    e.0.into_iter().next().unwrap()
}

const MINIMAL: &str = r#"[gateway]
domain = "gw.example.com"

[[listen]]
address = "127.0.0.1:0"

[tls]
certificates = [{ cert = "tls/fullchain.pem", key = "tls/privkey.pem" }]
"#;

#[test]
fn a_minimal_file_gets_every_default() {
    let dir = TempDir::new("minimal");
    let public = dir.key();
    let c = dir.load(MINIMAL).unwrap();
    assert_eq!(c.gateway.domain, "gw.example.com");
    assert_eq!(c.gateway.data_dir, dir.path());
    assert_eq!(c.gateway.key_file, dir.path().join("gateway.key"));
    assert_eq!(c.gateway.public_key, public);
    assert_eq!(c.gateway.key.expose().public_key(), public);
    assert_eq!(c.gateway.devices_file, None);
    assert_eq!(c.gateway.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.gateway.threads, 0);
    assert_eq!(c.listeners.len(), 1);
    let l = c.listeners[0];
    assert_eq!(l.address, "127.0.0.1:0".parse().unwrap());
    assert!(l.tls);
    assert_eq!(l.socket, SocketOptions::default());
    assert_eq!(l.socket.mss, 1360);
    assert_eq!(c.tls.certificates.len(), 1);
    assert!(
        c.tls.certificates[0]
            .pair
            .names
            .contains(&"*.gw.example.com".to_string())
    );
    assert_eq!(c.tls.handshake_timeout, Duration::from_secs(10));
    assert_eq!(c.http, config::Http::default());
    assert_eq!(c.http.max_header_bytes, 16384);
    assert_eq!(c.http.response_timeout, Duration::from_secs(30));
    assert_eq!(c.websocket, config::WebSocket::default());
    assert_eq!(c.websocket.max_message, 1 << 20);
    assert_eq!(c.link.address, "[::]:7000".parse().unwrap());
    // proto's gateway defaults with 1 MiB stream and 4 MiB session
    // windows, accepting AES-256-GCM records where this machine has AES
    // instructions; the same as the in-process defaults.
    assert_eq!(
        c.link.session,
        proto::Config {
            ciphers: proto::Ciphers::hardware(),
            params: proto::Params {
                stream_window: 1 << 20,
                conn_window: 4 << 20,
                ..proto::Config::GATEWAY.params
            },
            ..proto::Config::GATEWAY
        }
    );
    assert_eq!(
        c.link.session,
        gateway::link::LinkSettings::default().session
    );
    assert_eq!(
        (c.link.max_handshakes, c.link.max_handshakes_per_address),
        (4096, 1024)
    );
    assert_eq!(c.link.socket.mss, 1360);
    assert_eq!(c.metrics.address, "127.0.0.1:9100".parse().unwrap());
    assert_eq!(c.metrics.max_device_series, 1000);
    assert!(c.devices.is_empty());
}

const FULL: &str = r#"[gateway]
domain = "GW.Example.com"
data_dir = "."
key_file = "gateway.key"
public_port = 443
drain_timeout = "30s"
threads = 2

[[listen]]
address = "[::]:8443"
mss = 1200
tcp_keepalive = "30s"
backlog = 128

[[listen]]
address = "127.0.0.1:8080"
tls = false

[tls]
certificates = [{ cert = "tls/fullchain.pem", key = "tls/privkey.pem" }]
handshake_timeout = "5s"

[http]
header_timeout = "3s"
idle_timeout = "2m"
response_timeout = "45s"
max_header_bytes = "32KiB"
max_headers = 64
h2_max_concurrent_streams = 50
h2_max_pending_resets = 10
h2_max_local_error_resets = 500
hsts_max_age = "1d"
websocket_over_http2 = false

[websocket]
max_message = 262144
max_frame = "16 KiB"
write_buffer = "1MiB"
ping_interval = "30s"

[link]
address = "0.0.0.0:7100"
mss = 1300
handshake_timeout = "5s"
keepalive = "10s"
idle_timeout = "30s"
stall_timeout = "off"
max_record = "4KiB"
max_streams = 8
stream_window = "64KiB"
conn_window = "512KiB"
max_handshakes = 50
max_handshakes_per_address = 5

[metrics]
address = "127.0.0.1:9200"
max_device_series = 50

[[device]]
id = "plc-7"
public_key = "PUB1"

[[device]]
id = "hvac-2"
name = "HVAC"
public = true
public_key = "PUB2"
allowed_origins = ["HTTPS://hvac-2.gw.example.com:443/", "https://intranet.example.com:8443"]
[device.normalize]
host = "HVAC-2.local"
port = 7681
origin = { set = "http://hvac-2.local:7681" }
subprotocol = { map = { "mirror" = "lws-mirror-protocol" } }
[[device.service]]
name = "lws"
[[device.service]]
name = "modbus"
path = "/modbus/"
expose = "websocket"

[[device]]
id = "meter-3"
upstream = { direct = { address = "10.20.0.5:443", tls = true, pinned_cert_sha256 = "PIN", mss = 1280 } }
[device.normalize]
origin = "strip"
subprotocol = "strip"
"#;

fn full_text() -> String {
    let pin: Vec<String> = (0..32).map(|i| format!("{i:02X}")).collect();
    FULL.replace("PUB1", &hex(1))
        .replace("PUB2", &hex(2))
        .replace("PIN", &pin.join(":"))
}

#[test]
fn a_full_file_types_every_value() {
    let dir = TempDir::new("full");
    let c = dir.load(&full_text()).unwrap();
    assert_eq!(c.gateway.domain, "gw.example.com");
    assert_eq!(c.gateway.public_port, Some(443));
    assert_eq!(c.gateway.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.gateway.threads, 2);
    assert_eq!(c.listeners[0].address, "[::]:8443".parse().unwrap());
    assert_eq!(
        c.listeners[0].socket,
        SocketOptions {
            mss: 1200,
            keepalive: Duration::from_secs(30),
            backlog: 128
        }
    );
    assert!(!c.listeners[1].tls);
    assert_eq!(c.tls.handshake_timeout, Duration::from_secs(5));
    assert_eq!(
        c.http,
        config::Http {
            header_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(120),
            response_timeout: Duration::from_secs(45),
            max_header_bytes: 32768,
            max_headers: 64,
            h2_max_concurrent_streams: 50,
            h2_max_pending_resets: 10,
            h2_max_local_error_resets: 500,
            hsts_max_age: Some(Duration::from_secs(86400)),
            websocket_over_http2: false,
        }
    );
    assert_eq!(
        c.websocket,
        config::WebSocket {
            max_message: 262144,
            max_frame: 16384,
            write_buffer: 1 << 20,
            ping_interval: Duration::from_secs(30),
        }
    );
    assert_eq!(c.link.address, "0.0.0.0:7100".parse().unwrap());
    assert_eq!(c.link.socket.mss, 1300);
    assert_eq!(
        c.link.session,
        proto::Config {
            params: proto::wire::Params {
                max_record: 4096,
                max_streams: 8,
                stream_window: 65536,
                conn_window: 524288,
            },
            keepalive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            stall_timeout: None,
            ciphers: proto::Ciphers::hardware(),
        }
    );
    assert_eq!(
        (c.link.max_handshakes, c.link.max_handshakes_per_address),
        (50, 5)
    );
    assert_eq!(c.metrics.address, "127.0.0.1:9200".parse().unwrap());
    assert_eq!(c.metrics.max_device_series, 50);

    assert_eq!(c.devices.len(), 3);
    let plc = c.devices.get("plc-7").unwrap();
    assert_eq!(plc.name, "plc-7");
    assert!(!plc.public);
    assert_eq!(plc.upstream, Upstream::Link);
    assert_eq!(plc.public_key, Some(PublicKey([1; 32])));
    assert_eq!(plc.policy.host, "plc-7");
    assert_eq!(plc.policy.host_port, None);
    assert_eq!(plc.policy.origin, OriginPolicy::Rewrite);
    assert_eq!(plc.policy.subprotocol, SubprotocolPolicy::Negotiate);
    // The gateway's own origins: public_port 443 for the TLS listener, the
    // plain listener's own port.
    assert_eq!(
        plc.policy.allowed_origins,
        [
            "https://plc-7.gw.example.com",
            "https://gw.example.com",
            "http://plc-7.gw.example.com:8080",
            "http://gw.example.com:8080",
        ]
    );
    assert_eq!(plc.service_for("/x"), ServiceChoice::FirstHttp);
    assert_eq!(c.devices.by_key(&PublicKey([1; 32])).unwrap().id, "plc-7");

    let hvac = c.devices.get("hvac-2").unwrap();
    assert_eq!(hvac.name, "HVAC");
    assert!(hvac.public);
    assert_eq!(
        hvac.policy.allowed_origins,
        [
            "https://hvac-2.gw.example.com",
            "https://intranet.example.com:8443"
        ]
    );
    assert_eq!(hvac.policy.host, "hvac-2.local");
    assert_eq!(hvac.policy.host_port, Some(7681));
    assert_eq!(
        hvac.policy.origin,
        OriginPolicy::Set("http://hvac-2.local:7681".into())
    );
    assert_eq!(
        hvac.policy.subprotocol,
        SubprotocolPolicy::Map(vec![("mirror".into(), "lws-mirror-protocol".into())])
    );
    let ServiceChoice::Route(modbus) = hvac.service_for("/modbus/x") else {
        panic!("no route")
    };
    assert_eq!(
        (modbus.name.as_str(), modbus.path.as_str()),
        ("modbus", "/modbus")
    );
    assert_eq!(modbus.expose, Exposure::WebSocket);
    let ServiceChoice::Route(lws) = hvac.service_for("/index.html") else {
        panic!("no route")
    };
    assert_eq!((lws.name.as_str(), lws.expose), ("lws", Exposure::Http));

    let meter = c.devices.get("meter-3").unwrap();
    assert_eq!(meter.public_key, None);
    let Upstream::Direct(d) = &meter.upstream else {
        panic!("not direct")
    };
    assert_eq!(d.address, "10.20.0.5:443".parse().unwrap());
    assert_eq!(d.socket.mss, 1280);
    let tls = d.tls.as_ref().unwrap();
    assert_eq!(tls.server_name, "meter-3");
    assert_eq!(tls.pinned_cert_sha256, core::array::from_fn(|i| i as u8));
    assert_eq!(meter.policy.origin, OriginPolicy::Strip);
    assert_eq!(meter.policy.subprotocol, SubprotocolPolicy::Strip);

    let summary = c.summary();
    assert!(
        summary.contains("3 device(s) (2 on the link, 1 direct, 1 public)"),
        "{summary}"
    );
    assert!(
        summary.contains("device link on 0.0.0.0:7100 (mss 1300)"),
        "{summary}"
    );
}

#[test]
fn debug_output_never_shows_the_private_key() {
    let dir = TempDir::new("secret");
    let c = dir.load(MINIMAL).unwrap();
    let private = keys::to_hex(&c.gateway.key.expose().to_bytes());
    let debug = format!("{c:?}");
    assert!(debug.contains("key: Secret(..)"), "{debug}");
    assert!(!debug.contains(&private));
    assert!(!format!("{c:#?}").contains(&private));
}

#[test]
fn relative_paths_resolve_against_data_dir_and_it_against_the_file() {
    let dir = TempDir::new("paths");
    let data = TempDir::new("paths-data");
    let key = keys::generate().unwrap();
    keys::write_key_file(&data.path().join("k.hex"), &key, false).unwrap();
    let text = format!(
        "[gateway]\ndomain = \"localhost\"\ndata_dir = \"../{}\"\nkey_file = \"k.hex\"\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n",
        data.path().file_name().unwrap().to_str().unwrap()
    );
    let c = dir.load(&text).unwrap();
    assert_eq!(c.gateway.public_key, key.public_key());
    assert!(c.tls.certificates.is_empty());
    // Loaded through a relative path: resolved against its directory.
    let cwd = std::env::current_dir().unwrap();
    let rel = pathdiff(&dir.path().join("gateway.toml"), &cwd);
    let c2 = config::load(&rel).unwrap();
    assert_eq!(c2.gateway.public_key, key.public_key());
}

/// `to` relative to `from` (both absolute), with `..` as needed.
fn pathdiff(to: &Path, from: &Path) -> PathBuf {
    let to: Vec<_> = to.components().collect();
    let from: Vec<_> = from.components().collect();
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

#[test]
fn an_unknown_field_is_named_with_its_line_and_the_expected_ones() {
    let dir = TempDir::new("unknown");
    let text = MINIMAL.replace("address = \"127", "adress = \"127");
    let e = only(dir.load(&text).unwrap_err());
    assert_eq!(e.at.file, dir.path().join("gateway.toml"));
    assert_eq!(e.at.position, Some(Position { line: 5, column: 1 }));
    let msg = e.to_string();
    assert!(
        msg.contains("gateway.toml:5:1: unknown field `adress`, expected one of `address`"),
        "{msg}"
    );
}

#[test]
fn unknown_fields_and_variants_are_refused_everywhere() {
    let dir = TempDir::new("unknown-deep");
    for (snippet, line, col, needle) in [
        ("[http]\nmax_body = 5\n", 11, 1, "unknown field `max_body`"),
        (
            "[http]\nwebsocket_over_http2 = \"no\"\n",
            11,
            24,
            "invalid type: string \"no\", expected a boolean",
        ),
        ("[link]\nmtu = 5\n", 11, 1, "unknown field `mtu`"),
        ("[metrics]\npath = \"/m\"\n", 11, 1, "unknown field `path`"),
        ("[tls]\n", 10, 2, "duplicate key"),
        (
            "[[device]]\nid = \"a\"\npublic_key = \"K\"\n[device.normalize]\norigin = \"forward\"\n",
            14,
            10,
            "unknown variant `forward`",
        ),
        (
            "[[device]]\nid = \"a\"\nupstream = { direct = { address = \"1.2.3.4:80\", tsl = true } }\n",
            12,
            49,
            "unknown field `tsl`",
        ),
        (
            "[[device]]\nid = \"a\"\npublic_key = \"K\"\n[[device.service]]\nname = \"x\"\nexpose = \"tcp\"\n",
            15,
            10,
            "unknown variant `tcp`",
        ),
    ] {
        let text = format!("{MINIMAL}\n{}", snippet.replace('K', &hex(9)));
        let e = only(dir.load(&text).unwrap_err());
        let msg = e.to_string();
        assert!(msg.contains(needle), "{snippet:?}: {msg}");
        assert_eq!(
            e.at.position,
            Some(Position { line, column: col }),
            "{snippet:?}: {msg}"
        );
    }
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let dir = TempDir::new("syntax");
    let text = "[gateway]\ndomain = \"gw.example.com\n";
    let e = only(dir.load(text).unwrap_err());
    assert_eq!(e.at.position.unwrap().line, 2);
    assert!(matches!(e.kind, ErrorKind::Syntax(_)), "{e}");
    let text = "[gateway]\ndomain = \"x\"\n\n[[listen]]\naddress = \"127.0.0.1:0\"\ntls = yes\n";
    let e = only(dir.load(text).unwrap_err());
    assert_eq!(e.at.position, Some(Position { line: 6, column: 7 }), "{e}");
    let text = "[gateway]\ndomain = 5\n";
    let e = only(dir.load(text).unwrap_err());
    assert_eq!(
        e.at.position,
        Some(Position {
            line: 2,
            column: 10
        }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("invalid type: integer `5`, expected a string"),
        "{e}"
    );
    let e = only(
        dir.load("[[listen]]\naddress = \"127.0.0.1:0\"\n")
            .unwrap_err(),
    );
    assert!(e.to_string().contains("missing field `gateway`"), "{e}");
}

/// Every semantic error class, each on its own line, all reported together.
const BAD: &str = r#"[gateway]
domain = "gw.example.com"
drain_timeout = "soon"

[[listen]]
address = "443"

[[listen]]
address = "[::]:8443"
mss = 100

[[listen]]
address = "0.0.0.0:8443"
tls = false

[http]
max_header_bytes = "1KiB"
idle_timeout = "0s"

[websocket]
max_message = "64KiB"
max_frame = "1 MeB"

[link]
keepalive = "1m"
max_record = 100

[metrics]
address = "localhost:9100"

[[device]]
id = "Bad_Id"
public_key = "1234"

[[device]]
id = "dup"
public_key = "KEY1"

[[device]]
id = "dup"
public_key = "KEY1"
allowed_origins = ["ftp://x"]
[device.normalize]
host = "a b"
port = 0
subprotocol = { map = { "ok" = "bad token" } }
[[device.service]]
name = "web"
path = "relative"

[[device]]
id = "nokey"

[[device]]
id = "meter"
upstream = { direct = { address = "10.0.0.5:443", tls = true } }
"#;

#[test]
fn every_semantic_error_is_reported_at_its_line() {
    let dir = TempDir::new("bad");
    let e = dir.load(&BAD.replace("KEY1", &hex(7))).unwrap_err();
    let all = e.to_string();
    let expect: &[(usize, usize, &str)] = &[
        (3, 17, "invalid duration \"soon\""),
        (6, 11, "invalid socket address \"443\": expected IP:PORT"),
        (
            9,
            11,
            "listener [::]:8443 has tls = true but [tls] certificates is empty",
        ),
        (10, 7, "mss = 100 is out of range 536..=8960"),
        (
            13,
            11,
            "listener 0.0.0.0:8443 conflicts with listener [::]:8443 (GW:9:11)",
        ),
        (
            17,
            20,
            "max_header_bytes = \"1KiB\" is out of range 8 KiB..=1 MiB",
        ),
        (18, 16, "invalid duration \"0s\": must be above zero"),
        (22, 13, "invalid size \"1 MeB\": unknown unit \"MeB\""),
        (
            25,
            13,
            "keepalive (1m) must be shorter than idle_timeout (45s)",
        ),
        (26, 14, "max_record = 100 is out of range 512..=65535"),
        (29, 11, "invalid socket address \"localhost:9100\""),
        (32, 6, "invalid device id \"Bad_Id\""),
        (
            33,
            14,
            "invalid public_key: expected 64 hex digits, found 4 characters",
        ),
        (
            40,
            6,
            "duplicate device id \"dup\" (first defined at GW:36:6)",
        ),
        (41, 14, "is already used by device \"dup\" (GW:37:14)"),
        (
            42,
            20,
            "invalid allowed origin \"ftp://x\": the scheme must be http or https",
        ),
        (44, 8, "invalid host \"a b\""),
        (45, 8, "port = 0 is out of range 1..=65535"),
        (46, 15, "invalid subprotocol \"bad token\""),
        (
            49,
            8,
            "invalid service path \"relative\": must start with '/'",
        ),
        (
            52,
            6,
            "device \"nokey\" uses upstream \"link\" and needs a public_key",
        ),
        (
            56,
            35,
            "device \"meter\": a direct upstream with tls = true needs pinned_cert_sha256",
        ),
    ];
    let gw = dir.path().join("gateway.toml").display().to_string();
    for (i, (line, col, needle)) in expect.iter().enumerate() {
        let Some(err) = e.0.get(i) else {
            panic!("missing error {i} ({needle}):\n{all}");
        };
        let msg = err.to_string().replace(&gw, "GW");
        assert!(
            msg.starts_with(&format!("GW:{line}:{col}: ")) && msg.contains(needle),
            "error {i}: expected {line}:{col} {needle:?}, got {msg}\nall:\n{all}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{all}");
    assert_eq!(positions(&e).len(), expect.len());
}

#[test]
fn a_missing_key_file_says_how_to_make_one() {
    let dir = TempDir::new("nokey");
    dir.certs();
    let text = MINIMAL.replace("[gateway]\n", "[gateway]\nkey_file = \"missing.key\"\n");
    let e = only(config::load(dir.write("gateway.toml", &text)).unwrap_err());
    assert_eq!(
        e.at.position,
        Some(Position {
            line: 2,
            column: 12
        })
    );
    let msg = e.to_string();
    assert!(
        msg.contains("missing.key: not found (make one with `gateway keygen --out"),
        "{msg}"
    );
    // A malformed one: the reason, at the same place.
    dir.write("missing.key", "not a key\n");
    let e = only(config::load(dir.path().join("gateway.toml")).unwrap_err());
    assert!(e.to_string().contains("expected 64 hex digits"), "{e}");
    // The default file name, not written: the whole file is named.
    let dir = TempDir::new("nokey-default");
    dir.certs();
    let e = only(config::load(dir.write("gateway.toml", MINIMAL)).unwrap_err());
    assert_eq!(e.at.position, None);
    assert!(e.to_string().contains("gateway.key: not found"), "{e}");
}

#[test]
fn a_device_with_the_gateways_own_key_is_refused() {
    let dir = TempDir::new("ownkey");
    let public = dir.key();
    let text = format!("{MINIMAL}\n[[device]]\nid = \"d\"\npublic_key = \"{public}\"\n");
    let e = only(dir.load(&text).unwrap_err());
    assert_eq!(
        e.at.position,
        Some(Position {
            line: 12,
            column: 14
        })
    );
    assert!(
        e.to_string()
            .contains("already used by the gateway's own key"),
        "{e}"
    );
}

#[test]
fn certificate_problems_name_the_entry() {
    let dir = TempDir::new("certs");
    dir.certs();
    let text = MINIMAL.replace("tls/privkey.pem", "tls/other.pem");
    let ca = gateway::edge::tls::local_ca(&["x.example".to_string()]).unwrap();
    dir.write("tls/other.pem", &ca.key_pem);
    let e = only(dir.load(&text).unwrap_err());
    assert_eq!(
        e.at.position,
        Some(Position {
            line: 8,
            column: 26
        })
    );
    assert!(e.to_string().contains("does not match"), "{e}");
    let text = MINIMAL.replace("tls/fullchain.pem", "tls/nope.pem");
    let e = only(dir.load(&text).unwrap_err());
    assert!(e.to_string().contains("certificate "), "{e}");
    assert!(e.to_string().contains("nope.pem"), "{e}");
}

#[test]
fn acme_challenge_types() {
    let dir = TempDir::new("acme-challenge");
    let acme =
        |extra: &str| format!("{MINIMAL}\n[acme]\ndirectory = \"https://ca.example/dir\"\n{extra}");
    let c = dir.load(&acme("")).unwrap();
    assert_eq!(c.acme.unwrap().challenge, config::acme::Challenge::Http01);
    let c = dir.load(&acme("challenge = \"tls-alpn-01\"\n")).unwrap();
    assert_eq!(
        c.acme.unwrap().challenge,
        config::acme::Challenge::TlsAlpn01
    );
    let e = only(dir.load(&acme("challenge = \"dns-01\"\n")).unwrap_err());
    assert_eq!(e.at.position.map(|p| p.line), Some(12));
    assert!(
        e.to_string().contains("\"http-01\" or \"tls-alpn-01\""),
        "{e}"
    );
}

#[test]
fn handshake_caps_must_admit_someone() {
    let dir = TempDir::new("handshakes");
    let e = only(
        dir.load(&format!(
            "{MINIMAL}\n[link]\nmax_handshakes = 10\nmax_handshakes_per_address = 0\n"
        ))
        .unwrap_err(),
    );
    assert_eq!(e.at.position.map(|p| p.line), Some(12));
    assert!(
        e.to_string()
            .contains("max_handshakes_per_address = 0 is out of range 1..=1000000"),
        "{e}"
    );
}

#[test]
fn the_handshake_line_is_bounded_and_may_be_off() {
    let dir = TempDir::new("handshake-line");
    let e = only(
        dir.load(&format!("{MINIMAL}\n[link]\nmax_handshakes_waiting = -1\n"))
            .unwrap_err(),
    );
    assert_eq!(e.at.position.map(|p| p.line), Some(11));
    assert!(
        e.to_string()
            .contains("max_handshakes_waiting = -1 is out of range 0..=1000000"),
        "{e}"
    );
    let c = dir
        .load(&format!("{MINIMAL}\n[link]\nmax_handshakes_waiting = 0\n"))
        .unwrap();
    assert_eq!(c.link.max_handshakes_waiting, 0, "0 turns the line off");
}

#[test]
fn no_listener_is_an_error() {
    let dir = TempDir::new("nolisten");
    let e = only(dir.load("[gateway]\ndomain = \"x.org\"\n").unwrap_err());
    assert_eq!(e.at.position, None);
    assert!(e.to_string().contains("no [[listen]] section"), "{e}");
}

#[test]
fn the_domain_must_be_a_dns_name() {
    let dir = TempDir::new("domain");
    for bad in [
        "10.0.0.1",
        "gw.example.com:443",
        "https://gw.example.com",
        "-x.org",
    ] {
        let text = MINIMAL.replace("gw.example.com", bad);
        let e = only(dir.load(&text).unwrap_err());
        assert_eq!(
            e.at.position,
            Some(Position {
                line: 2,
                column: 10
            }),
            "{e}"
        );
        assert!(e.to_string().contains("invalid domain"), "{e}");
    }
}

#[test]
fn direct_upstream_checks() {
    let dir = TempDir::new("direct");
    let text = format!(
        "{MINIMAL}\n[[device]]\nid = \"m\"\nupstream = {{ direct = {{ address = \"10.0.0.5:80\", pinned_cert_sha256 = \"{}\" }} }}\n",
        hex(3)
    );
    let e = only(dir.load(&text).unwrap_err());
    assert!(
        e.to_string()
            .contains("pinned_cert_sha256 needs tls = true"),
        "{e}"
    );
    assert_eq!(e.at.position.unwrap().line, 12);
    let text = format!(
        "{MINIMAL}\n[[device]]\nid = \"m\"\n[device.upstream.direct]\naddress = \"10.0.0.5:80\"\n"
    );
    let c = dir.load(&text).unwrap();
    let d = c.devices.get("m").unwrap();
    assert!(matches!(&d.upstream, Upstream::Direct(d) if d.tls.is_none()));
}

const DEVICES: &str = r#"# written by device-sim
[[device]]
id = "sim-0000"
public_key = "KEY5"

[[device]]
id = "sim-0001"
public_key = "KEY6"
"#;

#[test]
fn the_devices_file_is_merged() {
    let dir = TempDir::new("devfile");
    dir.write(
        "devices.toml",
        &DEVICES.replace("KEY5", &hex(5)).replace("KEY6", &hex(6)),
    );
    let text = MINIMAL.replace(
        "[gateway]\n",
        "[gateway]\ndevices_file = \"devices.toml\"\n",
    ) + &format!(
        "\n[[device]]\nid = \"plc-7\"\npublic_key = \"{}\"\n",
        hex(1)
    );
    let c = dir.load(&text).unwrap();
    let ids: Vec<&str> = c.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["plc-7", "sim-0000", "sim-0001"]);
    assert_eq!(
        c.devices.by_key(&PublicKey([6; 32])).unwrap().id,
        "sim-0001"
    );
    assert_eq!(
        c.gateway.devices_file,
        Some(dir.path().join("devices.toml"))
    );
}

#[test]
fn devices_file_errors_name_that_file() {
    let dir = TempDir::new("devfile-bad");
    let main_text = MINIMAL.replace(
        "[gateway]\n",
        "[gateway]\ndevices_file = \"devices.toml\"\n",
    ) + &format!(
        "\n[[device]]\nid = \"plc-7\"\npublic_key = \"{}\"\n",
        hex(1)
    ) + "\n[[device]]\nid = \"BAD\"\npublic_key = \"00\"\n";
    let devices = dir.path().join("devices.toml");
    let main = dir.path().join("gateway.toml");

    // Semantic errors in both files, all reported, main file first.
    let dev_text = format!(
        "[[device]]\nid = \"plc-7\"\npublic_key = \"{}\"\n\n[[device]]\nid = \"x\"\npublic_key = \"{}\"\n",
        hex(8),
        hex(1)
    );
    dir.write("devices.toml", &dev_text);
    let e = dir.load(&main_text).unwrap_err();
    let all = e.to_string();
    assert_eq!(e.len(), 4, "{all}");
    assert_eq!(e.0[0].at.file, main);
    assert_eq!(e.0[0].at.position.unwrap().line, 16);
    assert_eq!(e.0[1].at.file, main);
    assert_eq!(e.0[1].at.position.unwrap().line, 17);
    assert_eq!(e.0[2].at.file, devices);
    assert_eq!(e.0[2].at.position, Some(Position { line: 2, column: 6 }));
    assert!(
        e.0[2].to_string().starts_with(&format!(
            "{}:2:6: duplicate device id \"plc-7\" (first defined at {}:12:6)",
            devices.display(),
            main.display()
        )),
        "{all}"
    );
    assert_eq!(e.0[3].at.file, devices);
    assert_eq!(
        e.0[3].at.position,
        Some(Position {
            line: 7,
            column: 14
        })
    );
    assert!(
        e.0[3]
            .to_string()
            .contains("already used by device \"plc-7\""),
        "{all}"
    );

    // A syntax error in the devices file: that file, its line.
    dir.write("devices.toml", "[[device]]\nid = \"a\"\ncolour = \"red\"\n");
    let e = dir.load(&main_text).unwrap_err();
    let last = e.0.last().unwrap();
    assert_eq!(last.at.file, devices);
    assert_eq!(last.at.position, Some(Position { line: 3, column: 1 }));
    assert!(
        last.to_string().contains("unknown field `colour`"),
        "{last}"
    );
    // Other sections are not allowed in a devices file.
    dir.write("devices.toml", "[gateway]\ndomain = \"x\"\n");
    let e = dir.load(&main_text).unwrap_err();
    assert!(
        e.0.last()
            .unwrap()
            .to_string()
            .contains("unknown field `gateway`"),
        "{e}"
    );

    // Problems with the key do not hide the devices file's.
    std::fs::rename(dir.path().join("gateway.key"), dir.path().join("k.bak")).unwrap();
    let e = config::load(dir.path().join("gateway.toml")).unwrap_err();
    assert!(matches!(e.0[0].kind, ErrorKind::KeyFile { .. }), "{e}");
    assert_eq!(e.0.last().unwrap().at.file, devices, "{e}");
    std::fs::rename(dir.path().join("k.bak"), dir.path().join("gateway.key")).unwrap();

    // A missing devices file: the main file's devices_file line.
    std::fs::remove_file(dir.path().join("devices.toml")).unwrap();
    let e = dir.load(&main_text).unwrap_err();
    let err = e
        .iter()
        .find(|e| matches!(e.kind, ErrorKind::Read { .. }))
        .unwrap();
    assert_eq!(err.at.file, main);
    assert_eq!(
        err.at.position,
        Some(Position {
            line: 2,
            column: 16
        })
    );
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn load_str_works_without_a_config_file_on_disk() {
    let dir = TempDir::new("str");
    dir.key();
    dir.certs();
    let c = config::load_str(dir.path().join("virtual.toml"), MINIMAL).unwrap();
    assert_eq!(c.path, dir.path().join("virtual.toml"));
    let e = config::load(dir.path().join("absent.toml")).unwrap_err();
    assert!(only(e).to_string().contains("cannot read"));
}

#[test]
fn http3_defaults_values_and_errors_with_their_lines() {
    let dir = TempDir::new("http3");
    let c = dir.load(MINIMAL).unwrap();
    assert_eq!(c.http3, config::Http3::default());
    assert!(c.http3.enabled);
    assert_eq!(c.http3.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.http3.max_mtu, 1452);
    assert_eq!(c.http3.conn_window, 4 << 20);

    let c = dir
        .load(&format!(
            "{MINIMAL}\n[http3]\nenabled = false\nidle_timeout = \"10s\"\nmax_concurrent_streams = 8\n\
             stream_window = \"64KiB\"\nconn_window = \"256KiB\"\nsend_window = \"1MiB\"\nmax_mtu = 1200\n"
        ))
        .unwrap();
    assert_eq!(
        c.http3,
        config::Http3 {
            enabled: false,
            idle_timeout: Duration::from_secs(10),
            max_concurrent_streams: 8,
            stream_window: 64 << 10,
            conn_window: 256 << 10,
            send_window: 1 << 20,
            max_mtu: 1200,
        }
    );

    // MINIMAL has 8 lines, then a blank one and `[http3]` on line 10.
    let e = dir
        .load(&format!(
            "{MINIMAL}\n[http3]\nmax_mtu = 1100\nstream_window = \"2MiB\"\nconn_window = \"1MiB\"\nidle_timeout = \"1h\"\n"
        ))
        .unwrap_err();
    let lines: Vec<usize> = positions(&e).into_iter().map(|(l, _)| l).collect();
    assert_eq!(lines, [11, 13, 14], "{e}");
    let text = e.to_string();
    assert!(text.contains("max_mtu"), "{text}");
    assert!(text.contains("conn_window"), "{text}");
    assert!(text.contains("idle_timeout"), "{text}");
}

/// A device link's session window smaller than its stream window is
/// refused at the session window's line (or the stream window's, when only
/// that one is set above the default session window); equal ones load.
#[test]
fn link_stream_windows_must_fit_the_session_window() {
    let dir = TempDir::new("link-windows");
    // MINIMAL has 8 lines, then a blank one and `[link]` on line 10.
    let link = |body: &str| format!("{MINIMAL}\n[link]\n{body}");
    let e = dir
        .load(&link("stream_window = \"2MiB\"\nconn_window = \"1MiB\"\n"))
        .unwrap_err();
    let lines: Vec<usize> = positions(&e).into_iter().map(|(l, _)| l).collect();
    assert_eq!(lines, [12], "{e}");
    assert!(
        e.to_string()
            .contains("conn_window (1048576 bytes) is smaller than stream_window (2097152 bytes)"),
        "{e}"
    );
    // The default session window is 4 MiB.
    let e = dir.load(&link("stream_window = \"8MiB\"\n")).unwrap_err();
    let lines: Vec<usize> = positions(&e).into_iter().map(|(l, _)| l).collect();
    assert_eq!(lines, [11], "{e}");
    let c = dir
        .load(&link("stream_window = \"2MiB\"\nconn_window = \"2MiB\"\n"))
        .unwrap();
    assert_eq!(
        (
            c.link.session.params.stream_window,
            c.link.session.params.conn_window
        ),
        (2 << 20, 2 << 20)
    );
}

#[test]
fn runtime_threads_are_bounded() {
    let dir = TempDir::new("threads");
    for (bad, why) in [
        ("5000", "threads = 5000 is out of range 0..=1024"),
        ("-1", "threads = -1 is out of range 0..=1024"),
        ("\"two\"", "invalid type: string \"two\", expected i64"),
    ] {
        let text = MINIMAL.replace("[gateway]\n", &format!("[gateway]\nthreads = {bad}\n"));
        let e = only(dir.load(&text).unwrap_err());
        assert_eq!(e.at.position.map(|p| p.line), Some(2), "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let c = dir
        .load(&MINIMAL.replace("[gateway]\n", "[gateway]\nthreads = 1\n"))
        .unwrap();
    assert_eq!(c.gateway.threads, 1);
}
