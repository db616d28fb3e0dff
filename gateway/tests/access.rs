//! Access control end to end: login, sessions and their cookies, CSRF,
//! throttling without user enumeration, API tokens, cross-site WebSocket
//! hijacking, expiry, revocation of live WebSockets, and the audit log.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::harness::{
    DOMAIN, Dev, Gw, WsClient, body, close_code, empty, get, link_config, request, tcp_echo,
};
use device_fw::host::Forward;
use futures_util::{SinkExt as _, StreamExt as _};
use gateway::auth::password;
use tokio_tungstenite::tungstenite::Message;

/// Everything logged on the `audit` target by this test binary.
fn audit_log() -> &'static Mutex<Vec<u8>> {
    static LOG: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOG.get_or_init(|| {
        struct W;
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                audit_log().lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let _ = tracing_subscriber::fmt()
            .with_env_filter("audit=info")
            .with_writer(|| W)
            .with_ansi(false)
            .try_init();
        Mutex::new(Vec::new())
    })
}

/// Whether one audit line holds every needle.
fn audited_line(needles: &[&str]) -> bool {
    String::from_utf8_lossy(&audit_log().lock().unwrap())
        .lines()
        .any(|l| needles.iter().all(|n| l.contains(n)))
}

fn audited(event: &str) -> bool {
    audited_line(&[&format!("event=\"{event}\"")])
}

fn host(id: &str) -> String {
    format!("{id}.{DOMAIN}")
}

struct Setup {
    gw: Gw,
    port: u16,
    token_a: String,
}

const ANN_PASSWORD: &str = "correct horse battery";

/// Devices `a` and `b` (private) and `open` (public); user ann may open
/// `a` through group `line`; a token may open `a` only.
async fn setup(extra: &str) -> Setup {
    let _ = audit_log();
    let token_a = password::new_token();
    let sections = format!(
        "[auth]\n{extra}\n\n[[group]]\nname = \"line\"\ndevices = [\"a\"]\n\n\
         [[user]]\nname = \"ann\"\npassword_hash = \"{}\"\ndevices = [\"group:line\"]\n\n\
         [[user]]\nname = \"root\"\npassword_hash = \"{}\"\ndevices = [\"*\"]\n\n\
         [[token]]\nname = \"ci\"\nsha256 = \"{}\"\ndevices = [\"a\"]\n",
        password::hash(ANN_PASSWORD),
        password::hash("root password"),
        password::token_digest(&token_a),
    );
    let gw = Gw::start(
        &sections,
        &[
            Dev("a", "public = false"),
            Dev("b", "public = false"),
            Dev("open", ""),
        ],
    )
    .await;
    let port = gw.addr.port();
    Setup { gw, port, token_a }
}

fn set_cookies(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn cookie_value(set: &[String], name: &str) -> Option<String> {
    set.iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap().to_string())
}

fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let i = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[i..i + page[i..].find('"').unwrap()].to_string()
}

impl Setup {
    fn origin(&self) -> String {
        format!("https://{DOMAIN}:{}", self.port)
    }

    /// Logs in; returns the response's status, headers and session cookie.
    async fn login(
        &self,
        user: &str,
        pass: &str,
    ) -> (u16, http::HeaderMap, Option<String>, Duration) {
        let mut c = self.gw.client(1, DOMAIN).await;
        let (p, b) = c
            .fetch(
                get(1, DOMAIN, "/login?next=%2Fd%2Fa%2F")
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(p.status, 200);
        let page = String::from_utf8_lossy(&b).into_owned();
        let csrf = hidden(&page, "csrf");
        assert_eq!(
            cookie_value(&set_cookies(&p.headers), "devlink_login").as_deref(),
            Some(csrf.as_str())
        );
        let form = format!(
            "user={user}&password={}&csrf={csrf}&next=%2Fd%2Fa%2F",
            pass.replace(' ', "+")
        );
        let started = Instant::now();
        let (p, _) = c
            .fetch(
                request(1, "POST", DOMAIN, "/login")
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("origin", self.origin())
                    .header("cookie", format!("devlink_login={csrf}"))
                    .body(body(form))
                    .unwrap(),
            )
            .await;
        let took = started.elapsed();
        let session = cookie_value(&set_cookies(&p.headers), "devlink_session");
        (p.status.as_u16(), p.headers, session, took)
    }
}

#[tokio::test]
async fn anonymous_requests_never_reach_the_device() {
    let s = setup("").await;
    let dev = s.gw.echo("a", &[], link_config(4096, 16384, 1024)).await;
    let mut c = s.gw.client(2, &host("a")).await;
    // A browser navigating: to the login page, with the way back.
    let (p, _) = c
        .fetch(
            get(2, &format!("{}:{}", host("a"), s.port), "/page?x=1")
                .header("accept", "text/html")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 303);
    let to = p.headers["location"].to_str().unwrap();
    assert_eq!(
        to,
        format!(
            "https://{DOMAIN}:{}/login?next=https%3A%2F%2Fa.{DOMAIN}%3A{}%2Fpage%3Fx%3D1",
            s.port, s.port
        )
    );
    // Scripts and WebSockets: 401.
    let (p, b) = c
        .fetch(get(2, &host("a"), "/head").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 401);
    assert!(p.headers.contains_key("www-authenticate"));
    assert!(String::from_utf8_lossy(&b).contains("login_required"));
    let o = format!("https://{}:{}", host("a"), s.port);
    let r =
        s.gw.ws(1, &host("a"), "/ws", &[("origin", &o)])
            .await
            .err()
            .unwrap();
    assert_eq!(r.status, 401);
    let r =
        s.gw.ws(2, &host("a"), "/ws", &[("origin", &o)])
            .await
            .err()
            .unwrap();
    assert_eq!(r.status, 401);
    // The landing page too.
    let mut g = s.gw.client(1, DOMAIN).await;
    let (p, _) = g
        .fetch(
            get(1, DOMAIN, "/")
                .header("accept", "text/html")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        dev.requests.load(Ordering::Relaxed),
        0,
        "the device was contacted"
    );
    // A public device needs nothing.
    let _open = s.gw.echo("open", &[], link_config(4096, 16384, 1024)).await;
    let (p, _) = c
        .fetch(get(2, &host("open"), "/head").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 200);
    s.gw.stop().await;
}

#[tokio::test]
async fn login_sets_a_safe_cookie_that_opens_allowed_devices_only() {
    let s = setup("").await;
    let dev = s.gw.echo("a", &[], link_config(4096, 16384, 1024)).await;
    let _b = s.gw.echo("b", &[], link_config(4096, 16384, 1024)).await;
    let (status, headers, session, _) = s.login("ann", ANN_PASSWORD).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/d/a/");
    let set = set_cookies(&headers);
    let cookie = set
        .iter()
        .find(|c| c.starts_with("devlink_session="))
        .unwrap();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        &format!("Domain={DOMAIN}"),
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(cookie.contains(attr), "{attr} missing: {cookie}");
    }
    let session = session.unwrap();
    assert!(session.len() >= 22, "a 128-bit id: {session}");
    assert!(audited_line(&[
        "event=\"login\"",
        "who=\"ann\"",
        "client=127.0.0.1:"
    ]));

    let jar = format!("devlink_session={session}");
    for (h, path) in [(host("a"), "/head"), (DOMAIN.to_string(), "/d/a/head")] {
        let mut c = s.gw.client(2, &h).await;
        let (p, b) = c
            .fetch(
                get(2, &h, path)
                    .header("cookie", format!("theme=dark; {jar}; lang=en"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(p.status, 200, "{h}{path}");
        // The device gets its own cookies, never the gateway's session.
        let seen = String::from_utf8_lossy(&b);
        assert!(
            seen.contains("[\"cookie\",\"theme=dark; lang=en\"]"),
            "{seen}"
        );
        assert!(!seen.contains("devlink_session"), "{seen}");
    }
    assert_eq!(dev.requests.load(Ordering::Relaxed), 2);
    let mut c = s.gw.client(2, &host("b")).await;
    let (p, _) = c
        .fetch(
            get(2, &host("b"), "/head")
                .header("cookie", &jar)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 403);
    assert_eq!(p.headers["x-gateway-error"], "access_denied");
    assert!(audited("access_denied"));

    // The landing page lists what ann may open (and public devices), with a logout form.
    let mut g = s.gw.client(1, DOMAIN).await;
    let (p, b) = g
        .fetch(
            get(1, DOMAIN, "/")
                .header("cookie", &jar)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200);
    let page = String::from_utf8_lossy(&b).into_owned();
    assert!(
        page.contains("/d/a/") && page.contains("/d/open/") && !page.contains("/d/b/"),
        "{page}"
    );
    assert!(page.contains("online, firmware echo-test"), "{page}");
    let csrf = hidden(&page, "csrf");
    // Logging out needs that token.
    let (p, _) = g
        .fetch(
            request(1, "POST", DOMAIN, "/logout")
                .header("cookie", &jar)
                .header("origin", s.origin())
                .body(body("csrf=wrong"))
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 403);
    let (p, _) = g
        .fetch(
            request(1, "POST", DOMAIN, "/logout")
                .header("cookie", &jar)
                .header("origin", s.origin())
                .body(body(format!("csrf={csrf}")))
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 303);
    assert!(
        set_cookies(&p.headers)
            .iter()
            .any(|c| c.starts_with("devlink_session=;") && c.contains("Max-Age=0"))
    );
    assert!(audited("logout"));
    let mut c = s.gw.client(2, &host("a")).await;
    let (p, _) = c
        .fetch(
            get(2, &host("a"), "/head")
                .header("cookie", &jar)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 401, "the session survived logout");
    s.gw.stop().await;
}

#[tokio::test]
async fn forms_and_cookie_requests_need_csrf_proof() {
    let s = setup("").await;
    let dev = s.gw.echo("a", &[], link_config(4096, 16384, 1024)).await;
    let mut c = s.gw.client(1, DOMAIN).await;
    let post = |form: String, cookie: Option<String>, origin: Option<String>| {
        let mut b = request(1, "POST", DOMAIN, "/login")
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(c) = cookie {
            b = b.header("cookie", c);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(body(form)).unwrap()
    };
    let good = format!(
        "user=ann&password={}&csrf=tok",
        ANN_PASSWORD.replace(' ', "+")
    );
    let (p, _) = c.fetch(post(good.clone(), None, None)).await;
    assert_eq!(p.status, 403, "no CSRF cookie");
    let (p, _) = c
        .fetch(post(good.clone(), Some("devlink_login=other".into()), None))
        .await;
    assert_eq!(p.status, 403, "mismatched CSRF token");
    let (p, _) = c
        .fetch(post(
            good.clone(),
            Some("devlink_login=tok".into()),
            Some("https://evil.example".into()),
        ))
        .await;
    assert_eq!(p.status, 403, "foreign Origin");
    let (p, _) = c
        .fetch(post(
            good,
            Some("devlink_login=tok".into()),
            Some(s.origin()),
        ))
        .await;
    assert_eq!(p.status, 303, "the same form, done right");
    let session = cookie_value(&set_cookies(&p.headers), "devlink_session").unwrap();

    // A state change on a device, authorized by the cookie, must say where it comes from.
    let jar = format!("devlink_session={session}");
    let mut d = s.gw.client(1, &host("a")).await;
    let (p, _) = d
        .fetch(
            request(1, "POST", &host("a"), "/echo")
                .header("cookie", &jar)
                .body(body("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 403);
    assert_eq!(p.headers["x-gateway-error"], "origin_required");
    let (p, _) = d
        .fetch(
            request(1, "POST", &host("a"), "/echo")
                .header("cookie", &jar)
                .header("origin", "https://evil.example")
                .body(body("x"))
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 403);
    assert_eq!(dev.requests.load(Ordering::Relaxed), 0);
    let own = format!("https://{}:{}", host("a"), s.port);
    let (p, b) = d
        .fetch(
            request(1, "POST", &host("a"), "/echo")
                .header("cookie", &jar)
                .header("origin", own)
                .body(body("x"))
                .unwrap(),
        )
        .await;
    assert_eq!((p.status.as_u16(), &b[..]), (200, &b"x"[..]));

    // Cross-site WebSocket hijacking: a valid cookie, a foreign Origin.
    for v in [1u8, 2] {
        let r =
            s.gw.ws(
                v,
                &host("a"),
                "/ws",
                &[("cookie", &jar), ("origin", "https://evil.example")],
            )
            .await;
        assert_eq!(r.err().unwrap().status, 403);
    }
    assert_eq!(
        dev.requests.load(Ordering::Relaxed),
        1,
        "the hijack reached the device"
    );
    s.gw.stop().await;
}

#[tokio::test]
async fn failures_look_alike_and_are_throttled() {
    let s = setup("login_attempts = 3\nlogin_window = \"1m\"").await;
    let (wrong, _, _, t_wrong) = s.login("ann", "nope").await;
    let (unknown, _, _, t_unknown) = s.login("nobody", "nope").await;
    assert_eq!((wrong, unknown), (401, 401));
    // Both ran argon2id; neither is an order of magnitude faster.
    let (lo, hi) = (t_wrong.min(t_unknown), t_wrong.max(t_unknown));
    assert!(
        hi < lo * 5 + Duration::from_millis(50),
        "wrong password {t_wrong:?}, unknown user {t_unknown:?}"
    );
    assert!(audited("login_failed"));
    // ann's third failure, then even the right password waits.
    let (third, _, _, _) = s.login("ann", "nope").await;
    assert_eq!(third, 401);
    let (blocked, headers, session, _) = s.login("ann", ANN_PASSWORD).await;
    assert_eq!(blocked, 429);
    assert!(headers.contains_key("retry-after"));
    assert!(session.is_none());
    // The source address is throttled as well (3 failures from here already).
    let (other, _, _, _) = s.login("root", "root password").await;
    assert_eq!(other, 429);
    // Operators see it in the metrics.
    let text = s.gw.server().metrics.render();
    for (outcome, n) in [("ok", 0), ("failed", 3), ("throttled", 2), ("csrf", 0)] {
        let line = format!("gateway_logins_total{{outcome=\"{outcome}\"}} {n}");
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    s.gw.stop().await;
}

#[tokio::test]
async fn tokens_open_their_devices_only() {
    let s = setup("").await;
    let _a = s.gw.echo("a", &[], link_config(4096, 16384, 1024)).await;
    let _b = s.gw.echo("b", &[], link_config(4096, 16384, 1024)).await;
    let bearer = format!("Bearer {}", s.token_a);
    let mut c = s.gw.client(2, DOMAIN).await;
    let (p, b) = c
        .fetch(
            get(2, DOMAIN, "/d/a/head")
                .header("authorization", &bearer)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200);
    assert!(
        !String::from_utf8_lossy(&b).contains("dlt_"),
        "the token reached the device"
    );
    assert!(audited("token_used"));
    let (p, _) = c
        .fetch(
            get(2, DOMAIN, "/d/b/head")
                .header("authorization", &bearer)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 403);
    let (p, _) = c
        .fetch(
            get(2, DOMAIN, "/d/a/head")
                .header("authorization", "Bearer dlt_forged")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 401);
    assert_eq!(p.headers["x-gateway-error"], "invalid_token");
    // Scripts list what they may open.
    let (p, b) = c
        .fetch(
            get(2, DOMAIN, "/api/devices")
                .header("authorization", &bearer)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200);
    let list = String::from_utf8_lossy(&b);
    assert!(
        list.contains("\"id\":\"a\"") && !list.contains("\"id\":\"b\""),
        "{list}"
    );
    s.gw.stop().await;
}

#[tokio::test]
async fn sessions_expire_when_idle() {
    let s = setup("session_idle = \"1s\"").await;
    let _a = s.gw.echo("a", &[], link_config(4096, 16384, 1024)).await;
    let (_, _, session, _) = s.login("ann", ANN_PASSWORD).await;
    let jar = format!("devlink_session={}", session.unwrap());
    let mut c = s.gw.client(2, &host("a")).await;
    let (p, _) = c
        .fetch(
            get(2, &host("a"), "/head")
                .header("cookie", &jar)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (p, _) = c
        .fetch(
            get(2, &host("a"), "/head")
                .header("cookie", &jar)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 401);
    s.gw.stop().await;
}

/// The code of the Close `ws` receives within a second (other messages
/// before it are skipped).
async fn closed_within_a_second(ws: &mut WsClient) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(1), close_code(ws))
        .await
        .expect("not closed within 1 s")
}

/// The same for a raw service exposed as a WebSocket (`bridge::tunnel`):
/// its task waits on the revocation beside the traffic.
#[tokio::test]
async fn revoking_a_token_closes_a_raw_services_websocket() {
    // The device's raw service: a TCP echo.
    let target = tcp_echo(None).await;
    let token = password::new_token();
    let sections = format!(
        "[auth]\n\n[[token]]\nname = \"ci\"\nsha256 = \"{}\"\ndevices = [\"a\"]\n",
        password::token_digest(&token),
    );
    let gw = Gw::start(
        &sections,
        &[Dev(
            "a",
            "public = false\n\n[[device.service]]\nname = \"mb\"\npath = \"/modbus\"\nexpose = \"websocket\"\n",
        )],
    )
    .await;
    let _dev = gw.forwarding(
        "a",
        vec![Forward {
            service: "mb".into(),
            target,
        }],
        link_config(4096, 16384, 1024),
    );
    gw.wait_online("a").await;
    let own = format!("https://{}:{}", host("a"), gw.addr.port());
    let bearer = format!("Bearer {token}");
    for v in [1u8, 2] {
        let (mut ws, _) = gw
            .ws(
                v,
                &host("a"),
                "/modbus",
                &[("authorization", &bearer), ("origin", &own)],
            )
            .await
            .unwrap_or_else(|r| panic!("h{v}: {r:?}"));
        ws.send(Message::binary(b"hi".to_vec())).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(b"hi".to_vec())
        );
        // A reload without the token, then with it again for the next round.
        let bridge = &gw.server().bridge;
        let auth = gateway::config::load(gw.dir.path().join("gateway.toml"))
            .unwrap()
            .auth;
        let mut revoked = auth.clone();
        revoked.tokens.clear();
        let origin = format!("https://{DOMAIN}:{}", gw.addr.port());
        assert_eq!(bridge.set_access(revoked, vec![origin.clone()]), 1);
        assert_eq!(closed_within_a_second(&mut ws).await, Some(1008));
        assert_eq!(bridge.set_access(auth, vec![origin]), 0);
    }
    gw.stop().await;
}

#[tokio::test]
async fn revoking_a_user_or_token_closes_their_websockets_within_a_second() {
    let s = setup("").await;
    let _a = s.gw.echo("a", &[], link_config(4096, 16384, 1024)).await;
    let (_, _, session, _) = s.login("ann", ANN_PASSWORD).await;
    let jar = format!("devlink_session={}", session.unwrap());
    let own = format!("https://{}:{}", host("a"), s.port);
    let bearer = format!("Bearer {}", s.token_a);
    let (mut by_user, _) =
        s.gw.ws(1, &host("a"), "/ws", &[("cookie", &jar), ("origin", &own)])
            .await
            .unwrap();
    let (mut by_token, _) =
        s.gw.ws(
            2,
            &host("a"),
            "/ws",
            &[("authorization", &bearer), ("origin", &own)],
        )
        .await
        .unwrap();
    for ws in [&mut by_user, &mut by_token] {
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
    }
    // A reload without ann and without the token.
    let bridge = &s.gw.server().bridge;
    let mut auth = gateway::config::load(s.gw.dir.path().join("gateway.toml"))
        .unwrap()
        .auth;
    auth.users.retain(|u| u.name != "ann");
    auth.tokens.clear();
    let started = Instant::now();
    let closed = bridge.set_access(auth, vec![s.origin()]);
    assert_eq!(closed, 2);
    for ws in [&mut by_user, &mut by_token] {
        assert_eq!(closed_within_a_second(ws).await, Some(1008));
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    // The session is gone too.
    let mut c = s.gw.client(2, &host("a")).await;
    let (p, _) = c
        .fetch(
            get(2, &host("a"), "/head")
                .header("cookie", &jar)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(p.status, 401);
    s.gw.stop().await;
}

#[test]
fn user_configuration_errors_name_their_line() {
    let dir = common::TempDir::new("users");
    dir.certs();
    dir.key();
    let good = password::hash("x");
    dir.write(
        "users.toml",
        &format!(
            "[[user]]\nname = \"zed\"\npassword_hash = \"{good}\"\ndevices = [\"group:nope\"]\n"
        ),
    );
    let text = "[gateway]\ndomain = \"gw.example.com\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [tls]\ncertificates = [{ cert = \"tls/fullchain.pem\", key = \"tls/privkey.pem\" }]\n\
         [auth]\nusers_file = \"users.toml\"\n\
         [[user]]\nname = \"ann\"\npassword_hash = \"plain-text\"\n\
         [[user]]\nname = \"ann\"\n\
         [[token]]\nname = \"t\"\nsha256 = \"abc\"\ndevices = []\n";
    let file = dir.write("gateway.toml", text);
    let errors = gateway::config::load(&file).unwrap_err().to_string();
    let f = file.display().to_string();
    for needle in [
        format!("{f}:11:17: invalid password_hash"),
        format!("{f}:13:8: invalid user name \"ann\": defined twice"),
        format!("{f}:16:10: invalid sha256 \"abc\""),
        "users.toml:4:12: invalid device \"group:nope\"".to_string(),
    ] {
        assert!(errors.contains(&needle), "{needle} missing from:\n{errors}");
    }
    assert!(
        !errors.contains("plain-text"),
        "a password hash value was echoed"
    );
}

/// A CA and a client certificate with common name `cn`, in DER.
fn client_ca(cn: &str) -> (String, Vec<u8>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test client CA");
    ca.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, cn);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.der().to_vec(), key.serialize_der())
}

#[tokio::test]
async fn a_client_certificate_logs_its_user_in() {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let (ca_pem, cert, key) = client_ca("ann@plant");
    let dir = common::TempDir::new("mtls-ca");
    let ca_file = dir.write("clients.pem", &ca_pem);
    let s = setup(&format!("client_ca = \"{}\"", ca_file.display())).await;
    let mut auth = gateway::config::load(s.gw.dir.path().join("gateway.toml"))
        .unwrap()
        .auth;
    for u in &mut auth.users {
        if u.name == "ann" {
            u.client_cert_cn = Some("ann@plant".into());
        }
    }
    // ann's entry names the certificate (as `client_cert_cn` in the file would).
    s.gw.server().bridge.set_access(auth, vec![s.origin()]);
    let dev = s.gw.echo("a", &[], link_config(4096, 16384, 1024)).await;

    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(s.gw.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![CertificateDer::from(cert)],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
    )
    .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(s.gw.addr).await.unwrap();
    let io = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from(host("a")).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, common::harness::ReqBody>(
        hyper_util::rt::TokioIo::new(io),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let resp = send
        .send_request(get(1, &host("a"), "/head").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the certificate did not log ann in");
    assert_eq!(dev.requests.load(Ordering::Relaxed), 1);
    // Without a certificate the same request needs a login.
    let mut c = s.gw.client(1, &host("a")).await;
    let (p, _) = c
        .fetch(get(1, &host("a"), "/head").body(empty()).unwrap())
        .await;
    assert_eq!(p.status, 401);
    s.gw.stop().await;
}
