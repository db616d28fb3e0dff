//! `deploy/`: the Prometheus configuration and alert rules pass promtool
//! (syntax and the rules' unit tests), and the systemd unit keeps its
//! hardening and runs the commands this build has.

mod external;

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(promtool: &Path, args: &[&str], dir: &Path) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prometheus_configuration_and_alert_rules_pass_promtool() {
    let Some(bin) = external::program("promtool") else {
        return;
    };
    let dir = deploy().join("prometheus");
    promtool(&bin, &["check", "config", "prometheus.yml"], &dir);
    promtool(&bin, &["check", "rules", "alerts.yml"], &dir);
    promtool(&bin, &["test", "rules", "alerts_test.yml"], &dir);
}

#[test]
fn alert_rules_use_metrics_the_gateway_exports() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    let exported: Vec<&str> = gateway::metrics::collect::FAMILIES
        .iter()
        .map(|f| f.name)
        .collect();
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("gateway_")
            && word != "gateway_tls_certificate_expiry_timestamp_seconds"
        {
            assert!(
                exported.contains(&word),
                "alerts.yml uses {word}, which is not exported"
            );
        }
    }
}

#[test]
fn the_systemd_unit_is_hardened_and_runs_this_cli() {
    let unit = std::fs::read_to_string(deploy().join("systemd/devlink-gateway.service")).unwrap();
    let has = |line: &str| unit.lines().any(|l| l.trim() == line);
    for line in [
        "User=devlink-gateway",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "LimitNOFILE=65536",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "StateDirectory=devlink-gateway",
        "ConfigurationDirectory=devlink-gateway",
    ] {
        assert!(has(line), "{line} missing from the unit");
    }
    // The commands it runs exist and accept those arguments.
    for l in unit.lines().filter(|l| l.starts_with("ExecStart")) {
        let cmd = l.split_once('=').unwrap().1;
        let args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        let sub = args[0];
        let out = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "gateway {sub} --help");
    }
    if let Ok(out) = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(deploy().join("systemd/devlink-gateway.service"))
        .output()
    {
        // Only where systemd runs; the binary path need not exist here.
        eprintln!(
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every metric a dashboard or the compose set-up queries is one the
/// gateway exports (histograms by their `_bucket` series; the ACME ones
/// exist when `[acme]` is configured).
#[test]
fn the_grafana_dashboard_and_compose_files_fit_the_gateway() {
    let dashboard = std::fs::read_to_string(deploy().join("grafana/devlink-gateway.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut exported: Vec<String> = gateway::metrics::collect::FAMILIES
        .iter()
        .map(|f| f.name.to_string())
        .collect();
    exported.extend(
        [
            "gateway_http_request_duration_seconds",
            "gateway_tls_handshake_duration_seconds",
            "gateway_link_rtt_seconds",
        ]
        .map(|h| format!("{h}_bucket")),
    );
    exported.extend(
        gateway::acme::AcmeStats::default()
            .collectors()
            .iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| d.fq_name.clone())
                    .collect::<Vec<_>>()
            }),
    );
    let panels = json["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    let mut checked = 0;
    for p in panels {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("gateway_") {
                    assert!(
                        exported.iter().any(|e| e == word),
                        "the dashboard queries {word}, which is not exported"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10);
    let compose = std::fs::read_to_string(deploy().join("compose/compose.yaml")).unwrap();
    for needle in [
        "deploy/container/Containerfile",
        "NET_BIND_SERVICE",
        "grafana/provisioning",
        "prometheus.yml",
    ] {
        assert!(compose.contains(needle), "compose.yaml lacks {needle}");
    }
    let image = std::fs::read_to_string(deploy().join("container/Containerfile")).unwrap();
    assert!(
        image.contains("USER 10001"),
        "the image must not run as root"
    );
    assert!(image.contains("--locked -p gateway"));
}

#[test]
fn the_compose_prometheus_configuration_passes_promtool() {
    let Some(bin) = external::program("promtool") else {
        return;
    };
    // As mounted in the container: the rules next to the configuration.
    let dir = std::env::temp_dir().join(format!("compose-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        deploy().join("compose/prometheus.yml"),
        dir.join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(
        deploy().join("prometheus/alerts.yml"),
        dir.join("alerts.yml"),
    )
    .unwrap();
    promtool(&bin, &["check", "config", "prometheus.yml"], &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
