//! Preflight: what would stop a restore, clone or backup, found before any long step.
//!
//! Findings are data (`Vec<Finding>`), not errors: a failed check is a finding with a `fix`, and
//! the command exits 1 when any finding is not ok. The checks that only interpret facts (firewall
//! verdict, quota arithmetic, id conflicts) are pure functions here; gathering the facts (hub
//! reads, ARM reads, a storage probe) is done by [`run`].
//!
//! Why the firewall check is careful: IoT Hub answers a firewall-blocked caller and a bad key with
//! the same `401002 Unauthorized` (docs/azure.md). Preflight compares the hub's rules (read
//! through ARM, when configured) with the caller's public address (`--caller-ip`, since behind NAT
//! the local socket address is not what the hub sees) before blaming either.

pub mod dps;
mod gather;

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::arm::{NetworkRules, Verdict};

pub use gather::{ArmAccess, Checks, device_cap, run};

/// What a preflight checks. The kebab-case names are part of the `--json` contract.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    IpFirewall,
    Credentials,
    Permissions,
    JobSlot,
    DeviceQuota,
    Staging,
    StagingSas,
    StagingReachableByHub,
    IdConflicts,
    /// A host that can write backups (it holds a signing key) must not be able to read the
    /// identity that opens them.
    LeastPrivilege,
    /// DPS: individual enrollments and symmetric-key groups under the service's limits.
    EnrollmentLimits,
    /// DPS: the hubs the enrollments name are linked to the instance.
    LinkedHubs,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::IpFirewall => "ip-firewall",
            Check::Credentials => "credentials",
            Check::Permissions => "permissions",
            Check::JobSlot => "job-slot",
            Check::DeviceQuota => "device-quota",
            Check::Staging => "staging",
            Check::StagingSas => "staging-sas",
            Check::StagingReachableByHub => "staging-reachable-by-hub",
            Check::IdConflicts => "id-conflicts",
            Check::LeastPrivilege => "least-privilege",
            Check::EnrollmentLimits => "enrollment-limits",
            Check::LinkedHubs => "linked-hubs",
        }
    }
}

/// One check's result. Field names are part of the `--json` contract.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub check: Check,
    pub ok: bool,
    /// A machine-readable code when the check failed (`401002`, `job_slot_busy`, …).
    pub code: Option<String>,
    pub detail: String,
    /// What to do about it (absent when ok).
    pub fix: Option<String>,
}

impl Finding {
    pub fn pass(check: Check, detail: impl Into<String>) -> Self {
        Finding {
            check,
            ok: true,
            code: None,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        check: Check,
        code: &str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            check,
            ok: false,
            code: Some(code.to_owned()),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// All findings of one preflight.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn new(findings: Vec<Finding>) -> Self {
        Report {
            ok: findings.iter().all(|f| f.ok),
            findings,
        }
    }

    /// The findings as an aligned text table, failures with their fix underneath.
    pub fn table(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.check.as_str().len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = String::new();
        for f in &self.findings {
            let mark = if f.ok { "ok  " } else { "FAIL" };
            let _ = writeln!(out, "{mark}  {:width$}  {}", f.check.as_str(), f.detail);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "      {:width$}  fix: {fix}", "");
            }
        }
        let verdict = if self.ok {
            "preflight passed"
        } else {
            "preflight found problems"
        };
        let _ = writeln!(out, "{verdict}");
        out
    }
}

/// The firewall check, from the hub's rules and the caller's public address.
pub fn firewall_finding(hub: &str, rules: &NetworkRules, caller: IpAddr) -> Finding {
    match rules.verdict(caller) {
        Verdict::Allowed { reason } => Finding::pass(Check::IpFirewall, format!("{hub}: {reason}")),
        Verdict::Blocked { reason } => Finding::fail(
            Check::IpFirewall,
            "401002",
            format!("{hub} will reject this caller ({caller}) with 401002: {reason}"),
            format!(
                "add an IP rule for {caller} on {hub} (Networking → selected IP ranges), or run hubvault from an \
                 allowed network; if {caller} is not this machine's public address, pass --caller-ip"
            ),
        ),
    }
}

/// The quota check: total devices after the plan's creates against the hub's limit, whose
/// origin (`the cap of its F1 tier`, …) `source` names.
pub fn quota_finding(hub: &str, existing: u64, creates: u64, limit: u64, source: &str) -> Finding {
    // Saturating: past u64::MAX is over any limit anyway.
    let after = existing.saturating_add(creates);
    if after <= limit {
        Finding::pass(
            Check::DeviceQuota,
            format!("{hub}: {existing} + {creates} new = {after} of {limit} allowed ({source})"),
        )
    } else {
        Finding::fail(
            Check::DeviceQuota,
            "403002",
            format!(
                "{hub}: {existing} existing + {creates} new = {after}, over the limit of {limit} ({source})"
            ),
            "raise the hub's quota (more units or a higher tier), restore a subset with --only, or remove unused devices",
        )
    }
}

/// The least-privilege check of a host that holds a signing key (so it can write backups),
/// when the identity is a Key Vault secret: its credential must not be able to read it (a stolen
/// backup host would then read every snapshot). `None`: nothing to check (the identity is a file,
/// or this host has no signing key). The secret's value, if the vault returns it, is dropped.
pub async fn least_privilege_finding(
    vaults: &crate::keys::Vaults,
    identity: Option<&crate::keys::SecretUrl>,
    holds_signing_key: bool,
) -> Option<Finding> {
    let url = identity.filter(|_| holds_signing_key)?;
    Some(match vaults.can_read(url).await {
        Ok(false) => Finding::pass(
            Check::LeastPrivilege,
            format!(
                "this host holds a signing key and its Key Vault credential cannot read the \
                 identity secret {url}"
            ),
        ),
        Ok(true) => Finding::fail(
            Check::LeastPrivilege,
            "backup_host_reads_identity",
            format!(
                "this host holds a signing key (it can write backups) and its Key Vault \
                 credential can also read the identity secret {url}: whoever takes this host can \
                 read every snapshot"
            ),
            "give backup hosts no role on the identity secret (grant `Key Vault Secrets User` \
             on that secret to restore hosts only, or keep the identity in a vault of its own), \
             and run backups with the recipients alone",
        ),
        Err(e) => Finding::fail(
            Check::LeastPrivilege,
            "keyvault_unchecked",
            format!("could not check whether this host can read the identity secret {url}: {e}"),
            "check [keyvault] (endpoint, credential) and the network path to the vault",
        ),
    })
}

/// The conflict check for `--mode create`: ids that already exist on the target.
pub fn conflicts_finding(hub: &str, conflicting: &[String]) -> Finding {
    if conflicting.is_empty() {
        return Finding::pass(
            Check::IdConflicts,
            format!("{hub}: none of the snapshot's devices exist yet"),
        );
    }
    let sample: Vec<&str> = conflicting.iter().take(5).map(String::as_str).collect();
    let more = conflicting.len().saturating_sub(sample.len());
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Finding::fail(
        Check::IdConflicts,
        "409001",
        format!(
            "{hub}: {} device(s) already exist: {}{tail}",
            conflicting.len(),
            sample.join(", ")
        ),
        "use --mode upsert to update them, --mode mirror to make the hub equal the snapshot, or --only to skip them",
    )
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod tests {
    use super::*;

    #[test]
    fn firewall_finding_names_the_rule_and_the_fix() {
        let rules: NetworkRules = serde_json::from_str(
            r#"{"networkRuleSets":{"defaultAction":"Deny","ipRules":[{"filterName":"office","action":"Allow","ipMask":"127.0.0.2"}]}}"#,
        )
        .unwrap();
        let f = firewall_finding("hub-b", &rules, "127.0.0.1".parse().unwrap());
        assert!(!f.ok);
        assert_eq!(f.code.as_deref(), Some("401002"));
        assert!(f.detail.contains("office 127.0.0.2"), "{}", f.detail);
        assert!(f.fix.as_deref().unwrap().contains("127.0.0.1"));
        assert!(firewall_finding("hub-b", &rules, "127.0.0.2".parse().unwrap()).ok);
    }

    #[test]
    fn quota_and_conflicts() {
        assert!(quota_finding("h", 10, 5, 15, "test").ok);
        let over = quota_finding("h", 10, 6, 15, "the cap of its F1 tier");
        assert!(!over.ok);
        assert_eq!(
            over.detail,
            "h: 10 existing + 6 new = 16, over the limit of 15 (the cap of its F1 tier)"
        );
        let ids: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
        let f = conflicts_finding("h", &ids);
        assert!(
            f.detail.contains("8 device(s)") && f.detail.contains("and 3 more"),
            "{}",
            f.detail
        );
        assert!(conflicts_finding("h", &[]).ok);
    }

    #[test]
    fn report_table_marks_failures() {
        let r = Report::new(vec![
            Finding::pass(Check::Credentials, "RegistryRead ok"),
            quota_finding("h", 1, 1, 1, "test"),
        ]);
        assert!(!r.ok);
        let t = r.table();
        assert!(t.contains("FAIL  device-quota"), "{t}");
        assert!(t.contains("fix: raise"), "{t}");
    }
}
