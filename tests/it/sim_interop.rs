//! hubvault against what its simulator writes and serves: the `hubvault.toml` that
//! `hubvault-sim --write-config` writes is read by hubvault and reaches every hub, over plain
//! HTTP and over `--tls` with the written CA. (The simulator's own conformance is tested in its
//! package, without hubvault.)

use std::path::Path;

use hubvault::Diagnostic as _;
use hubvault::config::Config;
use hubvault::hub::HubClient;

use crate::support::{SimProcess, blocking};

/// hubvault, configured by nothing but the written file, reaches hub-a (3 devices).
fn reaches_hub_a(config: &Path) -> Config {
    let parsed = Config::parse(&std::fs::read_to_string(config).unwrap(), config)
        .expect("hubvault reads the written config");
    let resolved = hubvault::services::resolve_hub("hub-a", &parsed).unwrap();
    let stats = blocking(HubClient::new(resolved.target).unwrap().statistics()).unwrap();
    assert_eq!(stats.total_device_count, 3);
    parsed
}

#[test]
fn hubvault_reads_the_config_the_simulator_writes_and_reaches_its_hubs() {
    let sim = SimProcess::start(&[
        "--listen",
        "127.0.0.1:0",
        "--hub",
        "hub-a",
        "--hub",
        "hub-b",
        "--devices",
        "hub-a=3",
    ]);
    let parsed = reaches_hub_a(&sim.config());
    assert_eq!(parsed.hubs.len(), 2);
}

#[test]
fn over_tls_hubvault_trusts_the_written_ca_and_reaches_its_hubs() {
    let sim = SimProcess::start(&[
        "--tls",
        "--hub",
        "hub-a",
        "--dps",
        "dps-a",
        "--devices",
        "hub-a=3",
    ]);
    let (config, dir) = (sim.config(), sim.dir());
    let parsed = reaches_hub_a(&config);
    let ca = dir.join("sim-ca.pem");
    assert_eq!(parsed.hubs["hub-a"].ca_file.as_deref(), Some(ca.as_path()));
    // Without the CA, hubvault's client refuses the simulator's certificate.
    let mut target = hubvault::services::resolve_hub("hub-a", &parsed)
        .unwrap()
        .target;
    target.ca_file = None;
    target.retry = hubvault::hub::RetryPolicy::none();
    let err = blocking(HubClient::new(target).unwrap().statistics()).unwrap_err();
    assert_eq!(err.code(), "hub_transport", "{err}");
}

/// The `[keyvault]` section `--write-config` writes, with the managed identity `--info` names,
/// is all hubvault needs to make an identity in the simulator's vault and read it back: the real
/// `azure_identity` managed-identity credential and the official secrets client, over plain HTTP
/// and over `--tls` with the written CA.
#[test]
fn hubvault_makes_and_reads_an_identity_in_the_simulators_key_vault() {
    for tls in [false, true] {
        let mut args = vec!["--hub", "hub-a"];
        if tls {
            args.push("--tls");
        }
        let sim = SimProcess::start(&args);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(sim.dir().join("sim.json")).unwrap())
                .unwrap();
        let url = info["keyvault"]["url"].as_str().unwrap();
        let wd = crate::support::Workdir::bare();
        wd.set_env(
            "IDENTITY_ENDPOINT",
            info["managed_identity"]["endpoint"].as_str().unwrap(),
        );
        wd.set_env(
            "IDENTITY_HEADER",
            info["managed_identity"]["header"].as_str().unwrap(),
        );
        let config = sim.config();
        let run = |args: &[&str]| {
            wd.hubvault()
                .arg("--config")
                .arg(&config)
                .args(args)
                .run_blocking()
        };
        let made = run(&[
            "--json",
            "key",
            "init",
            "--key-vault",
            url,
            "--secret",
            "hubvault-identity",
        ])
        .expect_code(0)
        .json();
        let shown = run(&[
            "--json",
            "key",
            "show-recipient",
            "--identity",
            &format!("{url}/secrets/hubvault-identity"),
        ])
        .expect_code(0)
        .json();
        assert_eq!(shown["recipients"][0], made["recipient"], "tls {tls}");
    }
}
