//! `hubvault-sim --tls` (and `sim::Options::tls`): every port serves HTTPS with one generated
//! certificate for the real-looking host names, the CA is written to a file, and clients that
//! trust only that file get in while others are refused. The hub's firewall still sees the
//! caller's bound source address and the dropped-connection fault still cuts connections.
//! (hubvault's own client against it is checked in hubvault's tests, `sim_interop`.)

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use hubvault_sim::{self as sim, HubOptions, Options, Running, TlsConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

const API: &str = "api-version=2021-04-12";
const HUB_HOST: &str = "hub-a.azure-devices.net";

/// `SharedAccessSignature sr=…&sig=…&se=…&skn=…` (docs/azure.md), signed here, not by hubvault.
fn sas(host: &str, key_b64: &str, policy: &str) -> String {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut mac = Hmac::<Sha256>::new_from_slice(&B64.decode(key_b64).unwrap()).unwrap();
    mac.update(format!("{}\n{expiry}", enc(host)).as_bytes());
    let sig = B64.encode(mac.finalize().into_bytes());
    format!(
        "SharedAccessSignature sr={}&sig={}&se={expiry}&skn={policy}",
        enc(host),
        enc(&sig)
    )
}

struct Sim {
    running: Running,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    ca_path: std::path::PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// hub-a (5 devices), ARM, Key Vault and dps-a, all over TLS; the CA written into a temp dir.
async fn start_tls() -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("sim-ca.pem");
    let options = Options {
        hubs: vec![HubOptions {
            name: "hub-a".into(),
            devices: 5,
        }],
        tls: Some(TlsConfig {
            ca_file: Some(ca_path.clone()),
            extra_hosts: Vec::new(),
        }),
        ..Options::default()
    };
    let (options, _dps) = sim::with_services(options, Some("dps-a"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let running = sim::run(options, async move {
        let _ = rx.await;
    })
    .await
    .expect("simulator starts with tls");
    Sim {
        running,
        stop: Some(tx),
        _dir: dir,
        ca_path,
    }
}

impl Sim {
    fn hub(&self) -> &sim::RunningHub {
        self.running.hub("hub-a").unwrap()
    }

    fn token(&self) -> String {
        let cs = self.hub().connection_string("iothubowner").unwrap();
        let key = cs.split("SharedAccessKey=").nth(1).unwrap();
        sas(HUB_HOST, key, "iothubowner")
    }

    /// A client that trusts only the CA file the simulator wrote.
    fn trusting(&self) -> reqwest::ClientBuilder {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca_path).unwrap()).unwrap();
        reqwest::Client::builder().tls_certs_only([ca])
    }

    async fn stats(&self, client: &reqwest::Client) -> reqwest::Result<reqwest::Response> {
        client
            .get(format!("{}/statistics/devices?{API}", self.hub().endpoint))
            .header("Authorization", self.token())
            .send()
            .await
    }

    async fn control(&self, method: Method, path: &str, body: Value) {
        let resp = self
            .trusting()
            .build()
            .unwrap()
            .request(method, format!("{}{path}", self.running.control))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "control {path}: {}",
            resp.status()
        );
    }
}

fn addr_of(base_url: &str) -> SocketAddr {
    base_url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("{base_url} is not https"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_client_trusting_only_the_written_ca_reaches_every_service_over_https() {
    let sim = start_tls().await;
    let written = std::fs::read_to_string(&sim.ca_path).expect("the CA file is written");
    assert!(written.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(sim.running.ca_pem.as_deref(), Some(written.as_str()));
    assert_eq!(sim.running.ca_file.as_deref(), Some(sim.ca_path.as_path()));
    let hub = addr_of(&sim.hub().endpoint);
    assert_eq!(hub.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

    // By 127.0.0.1, as the endpoint says.
    let trusting = sim.trusting().build().unwrap();
    let resp = sim.stats(&trusting).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let stats: Value = resp.json().await.unwrap();
    assert_eq!(stats["totalDeviceCount"], 5);

    // By the real host name: the certificate covers it, and the SAS is checked against it.
    let by_name = sim.trusting().resolve(HUB_HOST, hub).build().unwrap();
    let resp = by_name
        .get(format!(
            "https://{HUB_HOST}:{}/statistics/devices?{API}",
            hub.port()
        ))
        .header("Authorization", sim.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // A client with only the system roots is refused at the handshake; the hub keeps serving.
    let stranger = reqwest::Client::new();
    let refused = sim.stats(&stranger).await;
    assert!(
        refused.as_ref().is_err_and(reqwest::Error::is_connect),
        "{refused:?}"
    );
    assert_eq!(sim.stats(&trusting).await.unwrap().status(), StatusCode::OK);

    // ARM, DPS and Key Vault answer on their own ports under their real host names.
    let arm = addr_of(sim.running.arm.as_deref().unwrap());
    let dps = addr_of(sim.running.dps.as_deref().unwrap());
    let kv = addr_of(sim.running.keyvault.as_deref().unwrap());
    let named = sim
        .trusting()
        .resolve("management.azure.com", arm)
        .resolve("dps-a.azure-devices-provisioning.net", dps)
        .resolve("hubvault-sim.vault.azure.net", kv)
        .build()
        .unwrap();
    let rid = &sim.hub().resource_id;
    let arm_base = format!("https://management.azure.com:{}", arm.port());
    let resp = named
        .get(format!("{arm_base}{rid}?api-version=2023-06-30"))
        .bearer_auth("any")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // ARM's async-operation URL keeps the scheme the request came in with.
    let resp = named
        .post(format!("{arm_base}{rid}/failover?api-version=2023-06-30"))
        .bearer_auth("any")
        .json(&json!({"failoverRegion": "East US"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let op = resp.headers()["azure-asyncoperation"].to_str().unwrap();
    assert!(op.starts_with(&format!("{arm_base}/")), "{op}");
    assert_eq!(
        named
            .get(op)
            .bearer_auth("any")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Unauthenticated: the services' own 401s, which proves TLS got through to them.
    let resp = named
        .get(format!(
            "https://dps-a.azure-devices-provisioning.net:{}/enrollments/x?api-version=2021-10-01",
            dps.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = named
        .get(format!(
            "https://hubvault-sim.vault.azure.net:{}/secrets/x?api-version=7.4",
            kv.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn over_tls_the_firewall_sees_the_bound_address_and_drops_still_cut() {
    let sim = start_tls().await;
    let from = |ip: [u8; 4]| {
        sim.trusting()
            .local_address(IpAddr::V4(Ipv4Addr::from(ip)))
            .build()
            .unwrap()
    };
    let (me, other) = (from([127, 0, 0, 1]), from([127, 0, 0, 2]));
    assert_eq!(
        sim.stats(&other).await.unwrap().status(),
        StatusCode::OK,
        "all networks by default"
    );
    sim.control(
        Method::PUT,
        "/hubs/hub-a/firewall",
        json!({"networkRuleSets": {"defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": false,
            "ipRules": [{"filterName": "me", "action": "Allow", "ipMask": "127.0.0.1"}]}}),
    )
    .await;
    let blocked = sim.stats(&other).await.unwrap();
    assert_eq!(blocked.status(), StatusCode::UNAUTHORIZED);
    let body: Value = blocked.json().await.unwrap();
    let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["errorCode"], 401_002);
    assert_eq!(sim.stats(&me).await.unwrap().status(), StatusCode::OK);

    sim.control(
        Method::PATCH,
        "/hubs/hub-a/faults",
        json!({"drop_count": 1}),
    )
    .await;
    // A fresh connection: the drop is armed for the caller whose request it hits.
    let fresh = from([127, 0, 0, 1]);
    let dropped = sim.stats(&fresh).await;
    assert!(dropped.is_err(), "the connection is cut without a response");
    assert_eq!(sim.stats(&fresh).await.unwrap().status(), StatusCode::OK);
}

#[test]
fn the_binary_with_tls_writes_the_ca_next_to_info_and_https_config() {
    let dir = tempfile::tempdir().unwrap();
    let info = dir.path().join("sim.json");
    let config = dir.path().join("hubvault.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hubvault-sim"))
        .args(["--tls", "--hub", "hub-a", "--dps", "dps-a"])
        .args(["--devices", "hub-a=3"])
        .arg("--info")
        .arg(&info)
        .arg("--write-config")
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !std::fs::metadata(&config).is_ok_and(|m| m.len() > 0) {
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("simulator did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(50));
    let ca = dir.path().join("sim-ca.pem");
    let outcome = std::panic::catch_unwind(|| check_written_files(&info, &config, &ca));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn check_written_files(info: &Path, config: &Path, ca: &Path) {
    assert!(
        std::fs::read_to_string(ca)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"),
        "the CA is written next to --info"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(info).unwrap()).unwrap();
    assert_eq!(doc["ca_file"], ca.display().to_string());
    for endpoint in [
        &doc["hubs"]["hub-a"]["endpoint"],
        &doc["dps"]["dps-a"]["endpoint"],
        &doc["arm"]["endpoint"],
        &doc["keyvault"]["endpoint"],
        &doc["control"],
    ] {
        let e = endpoint.as_str().unwrap();
        assert!(e.starts_with("https://127.0.0.1:"), "{e}");
    }
    let parsed: toml::Table = toml::from_str(&std::fs::read_to_string(config).unwrap())
        .expect("the written config is TOML");
    let ca_of = |section: &str, name: &str| {
        parsed[section][name]["ca-file"]
            .as_str()
            .map(std::path::PathBuf::from)
    };
    assert_eq!(ca_of("hubs", "hub-a").as_deref(), Some(ca));
    assert_eq!(ca_of("dps", "dps-a").as_deref(), Some(ca));
    let kv = parsed["keyvault"].as_table().unwrap();
    assert_eq!(
        kv["ca-file"]
            .as_str()
            .map(std::path::PathBuf::from)
            .as_deref(),
        Some(ca)
    );
    assert_eq!(
        kv["endpoint"].as_str(),
        doc["keyvault"]["endpoint"].as_str()
    );
    let mi = doc["managed_identity"]["endpoint"].as_str().unwrap();
    assert!(
        mi.starts_with("https://127.0.0.1:") && mi.ends_with("/msi/token"),
        "{mi}"
    );
}

/// A self-signed device certificate (PEM with its key) and its SHA-1 and SHA-256 thumbprints
/// (upper-case hex of the DER, as `az iot hub device-identity create --pt` takes them).
fn device_cert(cn: &str) -> (String, String, String) {
    use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, SHA256, digest};
    let made = rcgen::generate_simple_self_signed(vec![cn.to_owned()]).unwrap();
    let der = made.cert.der().to_vec();
    let hex = |d: &[u8]| {
        d.iter().fold(String::new(), |mut s, b| {
            let _ = std::fmt::Write::write_fmt(&mut s, format_args!("{b:02X}"));
            s
        })
    };
    let pem = format!("{}{}", made.cert.pem(), made.signing_key.serialize_pem());
    (
        pem,
        hex(digest(&SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref()),
        hex(digest(&SHA256, &der).as_ref()),
    )
}

/// X.509 thumbprint authentication on the device endpoint: over TLS, a device sends with its
/// certificate and no Authorization header (as the device SDKs' HTTPS transport does); the
/// certificate must be one of the device's two thumbprints (SHA-1 or SHA-256, any case), the
/// device enabled; a CA-authenticated device is refused over HTTPS, as IoT Hub refuses it.
#[tokio::test]
async fn a_device_authenticates_with_its_certificate_over_tls() {
    let sim = start_tls().await;
    let (pem_a, sha1_a, _) = device_cert("cam-1");
    let (pem_b, _, sha256_b) = device_cert("cam-2");
    let service = sim.trusting().build().unwrap();
    let put = |id: &'static str, auth: Value, status: &'static str| {
        let (service, sim) = (&service, &sim);
        async move {
            let resp = service
                .put(format!("{}/devices/{id}?{API}", sim.hub().endpoint))
                .header("Authorization", sim.token())
                .json(&json!({"deviceId": id, "status": status, "authentication": auth}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK, "create {id}");
        }
    };
    let self_signed = |p: &str, s: Option<&str>| {
        json!({"type": "selfSigned",
               "x509Thumbprint": {"primaryThumbprint": p, "secondaryThumbprint": s}})
    };
    put("cam-1", self_signed(&sha1_a, None), "enabled").await;
    // The SHA-256 form, lower case, as the secondary thumbprint.
    put(
        "cam-2",
        self_signed("00", Some(&sha256_b.to_lowercase())),
        "enabled",
    )
    .await;
    put("cam-off", self_signed(&sha1_a, None), "disabled").await;
    put("cam-ca", json!({"type": "certificateAuthority"}), "enabled").await;

    let as_device = |pem: &str| {
        sim.trusting()
            .identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let (a, b, none) = (
        as_device(&pem_a),
        as_device(&pem_b),
        sim.trusting().build().unwrap(),
    );
    let send = |client: &reqwest::Client, id: &str| {
        client
            .post(format!(
                "{}/devices/{id}/messages/events?{API}",
                sim.hub().endpoint
            ))
            .body("{\"t\":1}")
            .send()
    };
    assert_eq!(
        send(&a, "cam-1").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&b, "cam-2").await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    for (client, id, why) in [
        (&a, "cam-2", "another device's certificate"),
        (&b, "cam-1", "another device's certificate"),
        (&none, "cam-1", "no certificate and no token"),
        (
            &a,
            "cam-ca",
            "X.509 CA authentication is not accepted over HTTPS",
        ),
        (&a, "dev-0000001", "a SAS device"),
        (&a, "nobody", "no such device"),
    ] {
        assert_eq!(
            send(client, id).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{why}"
        );
    }
    let disabled = send(&a, "cam-off").await.unwrap();
    assert_eq!(disabled.status(), StatusCode::UNAUTHORIZED);
    let body: Value = disabled.json().await.unwrap();
    let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
    assert_eq!(inner["errorCode"], 401_002);
    // A certificate is not a service credential.
    let stats = a
        .get(format!("{}/statistics/devices?{API}", sim.hub().endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), StatusCode::UNAUTHORIZED);
    let counts: Value = sim
        .trusting()
        .build()
        .unwrap()
        .get(format!("{}/hubs/hub-a/messages", sim.running.control))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts, json!({"cam-1": 1, "cam-2": 1}));
}
