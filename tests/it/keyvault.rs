//! Keys in Azure Key Vault, through the real binary against the simulator's vault, reached the way
//! production reaches Azure: the real `azure_identity` managed-identity credential (the
//! simulator's App Service-style token endpoint) and the official Key Vault secrets client.
//! The identity is created inside the vault and never touches disk; backup needs only its
//! recipient; restore and verify read it; every way Key Vault can say no gets its own error; a
//! host that can write backups must not be able to read the identity; connection strings and the
//! signing key live in the vault too; no secret reaches any output.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::support::{Out, Workdir, World, assert_no_secrets};

const VAULT: &str = hubvault_sim::KEYVAULT_URL;
const IDENTITY: &str = "https://hubvault-sim.vault.azure.net/secrets/hubvault-identity";

/// hub-a with devices, an empty hub-b, the simulated vault; a work folder whose config names the
/// identity by its secret URL and reaches the vault with the managed-identity credential.
struct Kv {
    world: World,
    wd: Workdir,
    http: reqwest::Client,
}

impl Kv {
    async fn new() -> Kv {
        let world = World::builder()
            .hubs(&[("hub-a", 6), ("hub-b", 0)])
            .arm(false)
            .keyvault(true)
            .start()
            .await;
        let wd = Workdir::new();
        wd.config(&world).write();
        let text = std::fs::read_to_string(wd.config_path()).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("identity = ") {
                    format!("identity = \"{IDENTITY}\"\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(
            wd.config_path(),
            format!(
                "{text}\n[keyvault]\nurl = \"{VAULT}\"\nendpoint = \"{}\"\ncredential = \"managed-identity\"\n",
                world.running.keyvault.as_deref().unwrap()
            ),
        )
        .unwrap();
        wd.set_env(
            "IDENTITY_ENDPOINT",
            &world.running.managed_identity_endpoint(),
        );
        let kv = Kv {
            world,
            wd,
            http: reqwest::Client::new(),
        };
        let default = kv.control("GET", "/identities", None).await[0]["header"]
            .as_str()
            .unwrap()
            .to_owned();
        kv.wd.set_env("IDENTITY_HEADER", &default);
        kv
    }

    async fn control(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.world.running.control);
        let req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            "POST" => self.http.post(url),
            other => panic!("{other}"),
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let resp = req.send().await.unwrap();
        assert!(
            resp.status().is_success(),
            "{method} {path}: {}",
            resp.status()
        );
        resp.json().await.unwrap_or(Value::Null)
    }

    /// RBAC on: `restore-host` alone holds `Key Vault Secrets User`, on the identity secret only.
    async fn only_restore_host_reads_the_identity(&self) {
        self.control(
            "PUT",
            "/keyvault/role-assignments",
            Some(
                json!([{"principal": "restore-host", "role": "Key Vault Secrets User",
                         "scope": "/secrets/hubvault-identity"}]),
            ),
        )
        .await;
    }

    /// Run as the managed identity `name` from now on (created if new); returns its header.
    async fn become_principal(&self, name: &str) {
        let listed = self.control("GET", "/identities", None).await;
        let header = match listed
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
        {
            Some(i) => i["header"].as_str().unwrap().to_owned(),
            None => self
                .control("POST", "/identities", Some(json!({"name": name})))
                .await["header"]
                .as_str()
                .unwrap()
                .to_owned(),
        };
        self.wd.set_env("IDENTITY_HEADER", &header);
    }

    async fn run(&self, args: &[&str]) -> Out {
        self.wd.hubvault().args(args).run().await
    }

    /// A token for the vault from the simulator's token endpoint (as `principal`'s header).
    async fn token(&self) -> String {
        let header = self.control("GET", "/identities", None).await[0]["header"]
            .as_str()
            .unwrap()
            .to_owned();
        let resp: Value = self
            .http
            .get(self.world.running.managed_identity_endpoint())
            .query(&[
                ("api-version", "2019-08-01"),
                ("resource", "https://vault.azure.net"),
            ])
            .header("x-identity-header", header)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resp["access_token"].as_str().unwrap().to_owned()
    }

    /// A request straight to the vault's data plane (what `az keyvault` would send).
    async fn vault(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let url = format!(
            "{}{path}?api-version=2025-07-01",
            self.world.running.keyvault.as_deref().unwrap()
        );
        let resp = self
            .http
            .request(method, url)
            .bearer_auth(self.token().await)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `backup --from-export` of hub-a's registry, sealed to `recipient` only.
    async fn backup(&self, recipient: &str) -> String {
        let export = self.wd.join(&format!("export-{}", rand::random::<u32>()));
        self.world.write_export("hub-a", &export).await;
        let doc = self
            .wd
            .hubvault()
            .args([
                "--json",
                "backup",
                "--hub-name",
                "hub-a",
                "--recipient",
                recipient,
            ])
            .arg("--from-export")
            .arg(&export)
            .run()
            .await
            .expect_code(0)
            .json();
        doc["snapshot"].as_str().unwrap().to_owned()
    }

    /// `verify SNAPSHOT --read-data --identity IDENTITY`.
    async fn verify_with(&self, id: &str, identity: &str) -> Out {
        self.run(&[
            "--json",
            "verify",
            id,
            "--read-data",
            "--identity",
            identity,
        ])
        .await
    }

    async fn key_init(&self) -> String {
        let doc = self
            .run(&[
                "--json",
                "key",
                "init",
                "--key-vault",
                VAULT,
                "--secret",
                "hubvault-identity",
            ])
            .await
            .expect_code(0)
            .json();
        doc["recipient"].as_str().unwrap().to_owned()
    }
}

/// The headline: `key init --key-vault` makes the identity inside the vault (never on disk) and
/// prints its recipient; the secret, read by the official Key Vault client, is that identity;
/// a backup sealed to the recipient alone is verified and restored with the Key Vault identity,
/// and the restored hub equals the source.
#[tokio::test]
async fn an_identity_made_in_key_vault_opens_what_its_recipient_sealed() {
    let kv = Kv::new().await;
    let recipient = kv.key_init().await;
    assert!(recipient.starts_with("age1"), "{recipient}");
    assert!(
        !kv.wd.join(".config/hubvault/identity.txt").exists(),
        "the identity never touches disk"
    );

    // The official client reads an age identity whose recipient is the printed one.
    let secret = official_client_read(&kv, "hubvault-identity").await;
    let identity: age::x25519::Identity = secret
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(identity.to_public().to_string(), recipient);
    kv.world.add_secret(
        secret
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
            .unwrap(),
    );

    let id = kv.backup(&recipient).await;
    let verify = kv
        .run(&["-vvv", "--json", "verify", "--all", "--read-data"])
        .await;
    assert_eq!(verify.code, 0, "{}", verify.text());
    let restore = kv
        .run(&[
            "-vvv", "--json", "restore", &id, "--to", "hub-b", "--engine", "bulk", "--mode",
            "upsert",
        ])
        .await;
    assert_eq!(restore.code, 0, "{}", restore.text());
    assert_eq!(
        devices(&kv.world.registry("hub-b").await),
        devices(&kv.world.registry("hub-a").await)
    );
    let secrets = kv.world.secrets(&["hub-a", "hub-b"]).await;
    let header = kv.control("GET", "/identities", None).await[0]["header"]
        .as_str()
        .unwrap()
        .to_owned();
    for (what, out) in [("verify", &verify), ("restore", &restore)] {
        assert_no_secrets(&out.text(), &secrets, what);
        // Tokens the simulator issues start so; the identity header is the host's secret.
        assert!(
            !out.text().contains("hubvault-sim-mi."),
            "{what} shows a token"
        );
        assert!(
            !out.text().contains(&header),
            "{what} shows IDENTITY_HEADER"
        );
    }
}

/// Device ids with their primary keys, sorted: what a restore must carry over.
fn devices(registry: &[Value]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = registry
        .iter()
        .filter(|d| d.get("moduleId").is_none())
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["authentication"]["symmetricKey"]["primaryKey"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The secret's latest value through `azure_security_keyvault_secrets::SecretClient`, with the
/// real managed-identity credential, sent to the simulator by a redirecting transport.
async fn official_client_read(kv: &Kv, name: &str) -> String {
    use azure_core::http::{AsyncRawResponse, ClientOptions, HttpClient, Request, Transport};
    use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};

    #[derive(Debug)]
    struct Redirect(url::Url, reqwest::Client);
    #[async_trait::async_trait]
    impl HttpClient for Redirect {
        async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
            let mut r = request.clone();
            let u = r.url_mut();
            u.set_scheme(self.0.scheme()).unwrap();
            u.set_host(self.0.host_str()).unwrap();
            u.set_port(self.0.port()).unwrap();
            self.1.execute_request(&r).await
        }
    }
    let options = SecretClientOptions {
        client_options: ClientOptions {
            transport: Some(Transport::new(Arc::new(Redirect(
                kv.world
                    .running
                    .keyvault
                    .as_deref()
                    .unwrap()
                    .parse()
                    .unwrap(),
                reqwest::Client::new(),
            )))),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = kv.token().await;
    let client = SecretClient::new(VAULT, Arc::new(StaticToken(token)), Some(options)).unwrap();
    client
        .get_secret(name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap()
}

#[derive(Debug)]
struct StaticToken(String);

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for StaticToken {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        Ok(azure_core::credentials::AccessToken::new(
            self.0.clone(),
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// The error document of a run that must exit 2: code, message, fix.
fn error(out: &Out) -> (String, String, String) {
    assert_eq!(out.code, 2, "{}", out.text());
    let e = &out.json()["error"];
    (
        e["code"].as_str().unwrap().to_owned(),
        e["message"].as_str().unwrap().to_owned(),
        e["fix"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Key Vault's access refusals each get their own code and a message naming the vault, the
/// secret and what to do: not found, forbidden by RBAC (naming the role, on that secret only),
/// forbidden by the firewall (naming the client address).
#[tokio::test]
async fn key_vault_access_refusals_are_told_apart_with_what_to_do() {
    let kv = Kv::new().await;
    let recipient = kv.key_init().await;
    let id = kv.backup(&recipient).await;

    let (code, message, fix) = error(
        &kv.verify_with(&id, &format!("{VAULT}/secrets/no-such-secret"))
            .await,
    );
    assert_eq!(code, "keyvault_not_found");
    assert!(
        message.contains("no-such-secret") && message.contains(VAULT),
        "{message}"
    );
    assert!(fix.contains("key init --key-vault"), "{fix}");

    // RBAC: only restore-host may read the identity, and only that secret.
    let (status, _) = kv
        .vault(
            reqwest::Method::PUT,
            "/secrets/other",
            json!({"value": "x"}),
        )
        .await;
    assert_eq!(status, 200);
    kv.only_restore_host_reads_the_identity().await;
    let (code, message, fix) = error(&kv.verify_with(&id, IDENTITY).await);
    assert_eq!(code, "keyvault_forbidden", "{message}");
    assert!(message.contains("hubvault-identity"), "{message}");
    assert!(
        fix.contains("Key Vault Secrets User") && fix.contains("hubvault-identity"),
        "{fix}"
    );
    kv.become_principal("restore-host").await;
    kv.verify_with(&id, IDENTITY).await.expect_code(0);
    let (code, message, _) = error(&kv.verify_with(&id, &format!("{VAULT}/secrets/other")).await);
    assert_eq!(
        code, "keyvault_forbidden",
        "its role is on one secret only: {message}"
    );
    kv.control("PUT", "/keyvault/role-assignments", Some(Value::Null))
        .await;

    // The firewall: only 127.0.0.2 may call; hubvault calls from 127.0.0.1.
    kv.control(
        "PUT",
        "/keyvault/network-acls",
        Some(json!({"defaultAction": "Deny", "ipRules": [{"value": "127.0.0.2"}]})),
    )
    .await;
    let (code, message, fix) = error(&kv.verify_with(&id, IDENTITY).await);
    assert_eq!(code, "keyvault_firewall", "{message}");
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(fix.contains("firewall"), "{fix}");
}

/// A disabled secret (latest or pinned) and a secret that is not an age identity each get their
/// own code; the value of the wrong secret is never shown.
#[tokio::test]
async fn a_disabled_secret_and_a_secret_that_is_no_identity_are_told_apart() {
    let kv = Kv::new().await;
    let recipient = kv.key_init().await;
    let id = kv.backup(&recipient).await;
    let listed = kv
        .control("GET", "/keyvault/secrets/hubvault-identity", None)
        .await;
    let version = listed["versions"][0]["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = kv
        .vault(
            reqwest::Method::PATCH,
            &format!("/secrets/hubvault-identity/{version}"),
            json!({"attributes": {"enabled": false}}),
        )
        .await;
    assert_eq!(status, 200);
    let (code, message, fix) = error(&kv.verify_with(&id, IDENTITY).await);
    assert_eq!(code, "keyvault_disabled", "{message}");
    assert!(fix.contains("enable"), "{fix}");
    let (code, _, _) = error(&kv.verify_with(&id, &format!("{IDENTITY}/{version}")).await);
    assert_eq!(code, "keyvault_disabled", "a pinned disabled version too");

    let (status, _) = kv
        .vault(
            reqwest::Method::PUT,
            "/secrets/not-a-key",
            json!({"value": "hello-this-is-not-a-key"}),
        )
        .await;
    assert_eq!(status, 200);
    let out = kv
        .verify_with(&id, &format!("{VAULT}/secrets/not-a-key"))
        .await;
    let (code, message, _) = error(&out);
    assert_eq!(code, "keyvault_not_a_key", "{message}");
    assert!(
        message.contains("not-a-key") && message.contains("age identity"),
        "{message}"
    );
    assert!(
        !out.text().contains("hello-this-is-not-a-key"),
        "{}",
        out.text()
    );
}

/// `key init` never replaces an identity snapshots may need; `--new-version` adds one, and a
/// URL without a version opens snapshots sealed to the old and the new version alike, while a
/// pinned version opens only its own.
#[tokio::test]
async fn a_new_version_keeps_older_snapshots_open() {
    let kv = Kv::new().await;
    let first = kv.key_init().await;
    let old = kv.backup(&first).await;
    let again = kv
        .run(&[
            "--json",
            "key",
            "init",
            "--key-vault",
            VAULT,
            "--secret",
            "hubvault-identity",
        ])
        .await;
    assert_eq!(again.code, 2, "{}", again.text());
    assert_eq!(again.json()["error"]["code"], "keyvault_secret_exists");
    // Key Vault times versions to the second: the new one must be later to be "newest".
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let doc = kv
        .run(&[
            "--json",
            "key",
            "init",
            "--key-vault",
            VAULT,
            "--secret",
            "hubvault-identity",
            "--new-version",
        ])
        .await
        .expect_code(0)
        .json();
    let second = doc["recipient"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let new = kv.backup(&second).await;

    kv.run(&["verify", "--all", "--read-data"])
        .await
        .expect_code(0);
    let shown = kv
        .run(&["--json", "key", "show-recipient"])
        .await
        .expect_code(0)
        .json();
    assert_eq!(shown["recipients"], json!([second, first]), "newest first");

    let listed = kv
        .control("GET", "/keyvault/secrets/hubvault-identity", None)
        .await;
    let versions: Vec<String> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(versions.len(), 2);
    for (version, opens, fails) in [(&versions[0], &old, &new), (&versions[1], &new, &old)] {
        let pinned = format!("{IDENTITY}/{version}");
        kv.run(&["verify", opens, "--read-data", "--identity", &pinned])
            .await
            .expect_code(0);
        let out = kv
            .run(&[
                "--json",
                "verify",
                fails,
                "--read-data",
                "--identity",
                &pinned,
            ])
            .await;
        assert_ne!(out.code, 0, "{}", out.text());
    }
}

/// Least privilege: a backup host (its own principal, no role on the identity secret) backs up
/// with the recipient alone and its preflight passes the least-privilege check; a host that
/// holds a signing key and can read the identity fails it, exit 1, with what to change.
#[tokio::test]
async fn a_host_that_can_write_backups_must_not_read_the_identity() {
    let kv = Kv::new().await;
    let recipient = kv.key_init().await;
    kv.only_restore_host_reads_the_identity().await;
    kv.become_principal("backup-host").await;
    kv.backup(&recipient).await;
    let check = |doc: &Value| {
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == "least-privilege")
            .cloned()
            .unwrap_or_else(|| panic!("{doc:#}"))
    };
    let out = kv.run(&["--json", "preflight", "--to", "hub-b"]).await;
    let finding = check(&out.json());
    assert_eq!(finding["ok"], true, "{finding:#}");

    kv.become_principal("restore-host").await;
    let out = kv.run(&["--json", "preflight", "--to", "hub-b"]).await;
    assert_eq!(out.code, 1, "{}", out.text());
    let finding = check(&out.json());
    assert_eq!(finding["ok"], false, "{finding:#}");
    assert_eq!(finding["code"], "backup_host_reads_identity");
    assert!(
        finding["fix"]
            .as_str()
            .unwrap()
            .contains("Key Vault Secrets User"),
        "{finding:#}"
    );
}

/// No plaintext connection string or signing key on disk: hub-a's connection string and the
/// signing key are Key Vault secrets; a backup signs with the vault's key, and `diff` reaches
/// hub-a with the vault's connection string and trusts the vault key's signature.
#[tokio::test]
async fn connection_strings_and_the_signing_key_live_in_key_vault() {
    let kv = Kv::new().await;
    let recipient = kv.key_init().await;
    let cs = kv.world.connection_string("hub-a");
    let (status, _) = kv
        .vault(
            reqwest::Method::PUT,
            "/secrets/hub-a-cs",
            json!({"value": cs}),
        )
        .await;
    assert_eq!(status, 200);
    let text = std::fs::read_to_string(kv.wd.config_path()).unwrap();
    let text = text.replace(
        &format!("connection-string = {}", toml::Value::String(cs.clone())),
        &format!("connection-string-secret = \"{VAULT}/secrets/hub-a-cs\""),
    );
    assert!(!text.contains(&cs), "the config holds no connection string");
    std::fs::write(kv.wd.config_path(), text).unwrap();
    std::fs::remove_file(kv.wd.signing_key()).unwrap();
    let signing = format!("{VAULT}/secrets/backup-signing-key");
    let doc = kv
        .run(&[
            "--json",
            "key",
            "init",
            "--signing-only",
            "--signing-key",
            &signing,
        ])
        .await
        .expect_code(0)
        .json();
    let signer = doc["signer"].as_str().unwrap().to_owned();
    kv.wd.set_env("HUBVAULT_SIGNING_KEY", &signing);

    kv.backup(&recipient).await;
    let listed = kv.run(&["--json", "snapshots"]).await.expect_code(0).json();
    assert_eq!(listed[0]["signer"], signer.as_str(), "{listed}");
    assert_eq!(listed[0]["trust"], "signed", "{listed}");
    let out = kv
        .run(&["-vvv", "--json", "diff", "latest", "--hub", "hub-a"])
        .await;
    assert_eq!(
        out.code,
        0,
        "the snapshot equals the live hub: {}",
        out.text()
    );
    assert_no_secrets(&out.text(), &kv.world.secrets(&["hub-a"]).await, "diff");
    assert!(!out.text().contains(&cs));
}

/// `serve`/`run` notifications with the webhook URL in a Key Vault secret
/// (`webhook-url-secret`), read with the managed identity: a hub whose backup fails sends its
/// `failure` event there, and the URL (it carries a token) is printed nowhere.
#[tokio::test]
async fn the_webhook_url_is_read_from_key_vault() {
    let kv = Kv::new().await;
    let hook = crate::serve::Receiver::start().await;
    let url = format!("{}/hook/S3CR3T-T0K3N", hook.url);
    let (status, _) = kv
        .vault(reqwest::Method::PUT, "/secrets/hook", json!({"value": url}))
        .await;
    assert_eq!(status, 200);
    // The firewall shuts hubvault out of hub-a: its backup fails.
    kv.world.allow_only("hub-a", "10.9.9.9").await;
    std::fs::create_dir_all(kv.wd.join("policies")).unwrap();
    std::fs::write(
        kv.wd.join("policies/p.toml"),
        format!(
            "hubs = [\"hub-a\"]\n[retention]\nkeep-last = 5\n[notifications]\n\
             webhook-url-secret = \"{VAULT}/secrets/hook\"\n"
        ),
    )
    .unwrap();
    let recipient = kv.key_init().await;
    let out = kv
        .run(&[
            "--json",
            "run",
            "--policy",
            "policies/p.toml",
            "--recipient",
            &recipient,
        ])
        .await;
    assert_eq!(out.code, 2, "every hub failed: {}", out.text());
    // Sent in the background: wait (bounded) for it.
    let start = std::time::Instant::now();
    while hook.seen().is_empty() && start.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = hook.seen();
    let events: Vec<&str> = seen
        .iter()
        .filter_map(|(_, b)| b["event"].as_str())
        .collect();
    assert_eq!(events, ["failure"], "{seen:?}: {}", out.text());
    assert_eq!(seen[0].0, "/hook/S3CR3T-T0K3N");
    assert!(!out.text().contains("S3CR3T-T0K3N"), "{}", out.text());
}
