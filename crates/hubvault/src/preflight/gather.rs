//! Gathering preflight facts: hub reads, ARM reads, a staging probe. Each fact becomes a
//! [`Finding`]; the interpretation of rules, quotas and conflicts stays in the pure functions of
//! the parent module.
//!
//! Must not: change the hub. The permission probe posts a job request without a job type, which
//! the hub rejects (400) after checking the caller's rights, so nothing is created; should a hub
//! ever accept it, the job is cancelled at once.

use std::net::IpAddr;

use super::{Check, Finding, Report, conflicts_finding, firewall_finding, quota_finding};
use crate::arm::{ArmClient, HUB_DEVICE_CAP, NetworkRules, Verdict};
use crate::diagnostic::Diagnostic as _;
use crate::hub::{self, HubClient, JobProperties, PollPolicy};
use crate::staging::Staging;
use crate::store::sas::SasPermissions;

/// The hub's ARM resource and a client to read it.
pub struct ArmAccess<'a> {
    pub client: &'a ArmClient,
    pub resource_id: &'a str,
}

/// What to check. Optional parts are skipped when absent.
pub struct Checks<'a> {
    /// How messages name the hub (`hub-b`).
    pub hub: &'a str,
    pub client: &'a HubClient,
    pub arm: Option<ArmAccess<'a>>,
    /// The caller's public address as the hub sees it (`--caller-ip`).
    pub caller_ip: Option<IpAddr>,
    pub staging: Option<&'a Staging>,
    /// The hub is reached through a configured endpoint (the simulator), so staging on this
    /// machine is reachable by it; a real hub cannot reach loopback or `file://` storage.
    pub hub_is_local: bool,
    /// Import/export jobs will run: the credential needs `RegistryWrite`.
    pub needs_jobs: bool,
    /// Another job holding the slot: wait for it instead of reporting it.
    pub wait_for_slot: bool,
    pub poll: PollPolicy,
    /// Devices the plan creates, when known (0 when not).
    pub plan_creates: Option<u64>,
    /// The hub's device quota; `None`: the cap of its tier read through ARM ([`device_cap`]).
    pub device_quota: Option<u64>,
    /// Ids of a `--mode create` plan that already exist on the hub.
    pub conflicts: Option<&'a [String]>,
}

impl<'a> Checks<'a> {
    /// Checks of `client` with every optional part off.
    pub fn new(hub: &'a str, client: &'a HubClient) -> Self {
        Checks {
            hub,
            client,
            arm: None,
            caller_ip: None,
            staging: None,
            hub_is_local: false,
            needs_jobs: true,
            wait_for_slot: false,
            poll: PollPolicy::default(),
            plan_creates: None,
            device_quota: None,
            conflicts: None,
        }
    }
}

/// Run every check and collect the findings.
pub async fn run(checks: &Checks<'_>) -> Report {
    let mut findings = Vec::new();
    let firewall = firewall(checks, &mut findings).await;
    let reachable = credentials(checks, firewall.as_ref(), &mut findings).await;
    if reachable {
        if checks.needs_jobs {
            findings.push(permissions(checks).await);
            findings.push(job_slot(checks).await);
        }
        let creates = checks.plan_creates.unwrap_or(0);
        let (quota, source) = device_cap(checks).await;
        findings.push(match checks.client.statistics().await {
            Ok(s) => quota_finding(checks.hub, s.total_device_count, creates, quota, &source),
            Err(e) => failed(Check::DeviceQuota, &e),
        });
        if let Some(ids) = checks.conflicts {
            findings.push(conflicts_finding(checks.hub, ids));
        }
    }
    if let Some(staging) = checks.staging {
        findings.extend(staging_findings(checks, staging).await);
    }
    Report::new(findings)
}

/// The hub's device cap and where it comes from: `checks.device_quota` when set, else the cap
/// of the hub's tier (ARM `sku`: 500 on F1, 1,000,000 otherwise), else — ARM not configured
/// or unreadable — the 1,000,000 every paid tier has.
pub async fn device_cap(checks: &Checks<'_>) -> (u64, String) {
    if let Some(q) = checks.device_quota {
        return (q, "the configured quota".into());
    }
    let Some(arm) = checks.arm.as_ref() else {
        return (
            HUB_DEVICE_CAP,
            "IoT Hub's cap per hub; configure [arm] to read the hub's tier".into(),
        );
    };
    match arm.client.hub_sku(arm.resource_id).await {
        Ok(Some(sku)) => (
            sku.device_cap(),
            format!("the cap of its {} tier", sku.name),
        ),
        Ok(None) => (
            HUB_DEVICE_CAP,
            "IoT Hub's cap per hub; ARM named no tier".into(),
        ),
        Err(e) => {
            tracing::warn!("the hub's tier could not be read through ARM: {e}");
            (
                HUB_DEVICE_CAP,
                "IoT Hub's cap per hub; the tier could not be read through ARM".into(),
            )
        }
    }
}

/// The caller and the hub's verdict on it, when ARM told us the rules.
struct FirewallFact {
    caller: IpAddr,
    verdict: Verdict,
}

async fn firewall(checks: &Checks<'_>, findings: &mut Vec<Finding>) -> Option<FirewallFact> {
    let arm = checks.arm.as_ref()?;
    let rules: NetworkRules = match arm.client.hub_network_rules(arm.resource_id).await {
        Ok(r) => r,
        Err(e) => {
            findings.push(Finding::fail(
                Check::IpFirewall,
                e.code(),
                format!(
                    "cannot read {}'s network rules through ARM: {e}",
                    checks.hub
                ),
                "grant the ARM identity Reader on the hub, or check [arm] endpoint and token",
            ));
            return None;
        }
    };
    let Some(caller) = checks.caller_ip else {
        findings.push(Finding::pass(
            Check::IpFirewall,
            format!(
                "{}: rules read through ARM, but this caller's public address is unknown; pass --caller-ip to compare",
                checks.hub
            ),
        ));
        return None;
    };
    findings.push(firewall_finding(checks.hub, &rules, caller));
    Some(FirewallFact {
        caller,
        verdict: rules.verdict(caller),
    })
}

/// The credential check; returns whether the hub answered at all (later hub checks need it).
async fn credentials(
    checks: &Checks<'_>,
    firewall: Option<&FirewallFact>,
    findings: &mut Vec<Finding>,
) -> bool {
    let hub = checks.hub;
    let Err(err) = checks.client.statistics().await else {
        findings.push(Finding::pass(
            Check::Credentials,
            format!("{hub} accepted the credential (registry read)"),
        ));
        return true;
    };
    findings.push(match (&err, firewall) {
        (hub::Error::Unauthorized { code, .. }, Some(fact)) => match &fact.verdict {
            Verdict::Blocked { .. } => Finding::fail(
                Check::Credentials,
                &code.to_string(),
                format!(
                    "{hub} rejected this caller ({code}) because its IP firewall blocks {} (see ip-firewall); the key could not be checked",
                    fact.caller
                ),
                "allow this address on the hub (or run from an allowed network), then run preflight again",
            ),
            Verdict::Allowed { reason } => Finding::fail(
                Check::Credentials,
                "bad_credential",
                format!(
                    "{hub} rejected the credential ({code}) although its IP firewall lets {} in ({reason}): the key is wrong, expired or was regenerated",
                    fact.caller
                ),
                "use a current connection string (az iot hub connection-string show --hub-name …) in hubvault.toml or the environment",
            ),
        },
        (hub::Error::Unauthorized { code, .. }, None) => Finding::fail(
            Check::Credentials,
            &code.to_string(),
            format!(
                "{hub} rejected this caller ({code}); most likely its IP firewall or disabled public network access excludes this machine's address — a wrong or expired key gives the same code"
            ),
            "allow this machine's public address on the hub (or run from an allowed network); configure [arm] and the hub's resource-id so preflight can read the rules and tell a firewall block from a wrong key",
        ),
        (hub::Error::PermissionMissing { code, detail, .. }, _) => Finding::fail(
            Check::Credentials,
            &code.to_string(),
            format!("{hub} accepted the credential but it may not read the registry ({detail})"),
            "use a policy with RegistryRead (e.g. iothubowner) or grant an IoT Hub data reader role",
        ),
        (e, _) => failed(Check::Credentials, e),
    });
    false
}

/// Whether the credential may run import/export jobs (`RegistryWrite`).
async fn permissions(checks: &Checks<'_>) -> Finding {
    let hub = checks.hub;
    match checks.client.create_job(&JobProperties::default()).await {
        Err(hub::Error::BadRequest { .. } | hub::Error::JobSlotBusy { .. }) => Finding::pass(
            Check::Permissions,
            format!("{hub}: the credential may run import/export jobs (RegistryWrite)"),
        ),
        Err(hub::Error::PermissionMissing { code, .. }) => Finding::fail(
            Check::Permissions,
            &code.to_string(),
            format!(
                "{hub}: the credential lacks RegistryWrite, which import/export jobs (backup, restore, clone) need"
            ),
            "use a policy with RegistryWrite (iothubowner or registryReadWrite) or grant the IoT Hub Data Contributor role",
        ),
        Ok(job) => {
            let _ = checks.client.cancel_job(job.id()).await;
            Finding::pass(
                Check::Permissions,
                format!("{hub}: the credential may run import/export jobs"),
            )
        }
        Err(e) => failed(Check::Permissions, &e),
    }
}

async fn job_slot(checks: &Checks<'_>) -> Finding {
    let hub = checks.hub;
    let running = match checks.client.active_job().await {
        Ok(None) => {
            return Finding::pass(
                Check::JobSlot,
                format!("{hub}: no import/export job is running"),
            );
        }
        Ok(Some(job)) => job,
        Err(e) => return failed(Check::JobSlot, &e),
    };
    let id = running.id().to_owned();
    let kind = running
        .job_type
        .map_or_else(|| "a".to_owned(), |t| format!("{t:?}").to_ascii_lowercase());
    if checks.wait_for_slot {
        return match checks.client.wait_for_job(&id, &checks.poll, |_| {}).await {
            Ok(_) => Finding::pass(
                Check::JobSlot,
                format!("{hub}: waited for {kind} job {id} to finish; the slot is free"),
            ),
            Err(e) => failed(Check::JobSlot, &e),
        };
    }
    Finding::fail(
        Check::JobSlot,
        "job_slot_busy",
        format!(
            "{hub} runs {kind} job {id} ({:?}); only one import/export job may run per hub",
            running.status()
        ),
        format!("wait for job {id} to finish (pass --wait), or cancel it"),
    )
}

/// We can write, read and delete in staging, and mint the hub's SAS; a real hub can reach it.
async fn staging_findings(checks: &Checks<'_>, staging: &Staging) -> Vec<Finding> {
    let mut out = Vec::new();
    let probe = staging.object("preflight-probe");
    let store = staging.store();
    let result = async {
        store
            .put(&probe, bytes::Bytes::from_static(b"hubvault preflight"))
            .await?;
        let back = store.get_bytes(&probe).await;
        store.delete(&probe).await?;
        back
    }
    .await;
    out.push(match result {
        Ok(_) => Finding::pass(
            Check::Staging,
            format!("{}: write, read and delete work", staging.location()),
        ),
        Err(e) => Finding::fail(
            Check::Staging,
            e.code(),
            format!("staging storage is not usable by hubvault: {e}"),
            "check the staging container exists and the credential (account key or SAS with r, w, d, l) is valid",
        ),
    });
    if let Err(e) = staging.job_container_uri(SasPermissions::export_output()) {
        out.push(Finding::fail(
            Check::StagingSas,
            e.code(),
            format!("cannot hand the hub a SAS for staging: {e}"),
            "give [staging] an account-key connection string, or --staging a container URL with SAS",
        ));
    }
    if !checks.hub_is_local
        && let Some(why) = staging.unreachable_by_cloud()
    {
        out.push(Finding::fail(
            Check::StagingReachableByHub,
            "staging_unreachable",
            format!("{} cannot reach staging at {}: {why}", checks.hub, staging.location()),
            "use a storage account in Azure that the hub can reach (public endpoint or trusted-service access)",
        ));
    }
    out
}

fn failed(check: Check, e: &hub::Error) -> Finding {
    let fix = match e {
        hub::Error::FailingOver { .. } => {
            "wait for the hub's failover to complete (the Azure portal or `az iot hub show` shows its state), then run again"
        }
        _ => "see the message; run preflight again once fixed",
    };
    Finding::fail(check, e.code(), e.to_string(), fix)
}
