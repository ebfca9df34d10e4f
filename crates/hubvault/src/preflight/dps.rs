//! Preflight of a DPS instance (`preflight --to-dps`): can this credential read enrollments
//! (`EnrollmentRead`, what `backup --dps` needs) and write them (`EnrollmentWrite`, what
//! `restore --to-dps` needs), and does the instance have room under the service's limits
//! (1,000,000 individual enrollments, 100 symmetric-key enrollment groups).
//!
//! With ARM (`[arm]` and the DPS entry's `resource-id`) it also reads the instance's IP filter
//! (the rules guarding the service API) and its linked hubs: a blocked caller is explained before
//! the 401002 it gets is blamed on the key, and every hub the enrollments will name
//! (`--iot-hub`, `--map-hub` targets) must be linked, or DPS refuses each enrollment.
//!
//! Reads one query per kind and makes one non-writing write probe (`DpsClient::write_probe`).

use std::net::IpAddr;

use serde_json::Value;

use super::{Check, Finding, Report, firewall_finding};
use crate::arm::{ArmClient, DpsDescription, Verdict};
use crate::diagnostic::Diagnostic as _;
use crate::dps::{DpsClient, Kind};
use crate::hub;

/// What to check of one DPS instance.
pub struct DpsChecks<'a> {
    /// How messages name it (`dps-a`).
    pub name: &'a str,
    pub client: &'a DpsClient,
    /// A restore's target: check `EnrollmentWrite` too.
    pub write: bool,
    /// The instance's ARM resource id and a client to read it.
    pub arm: Option<(&'a ArmClient, &'a str)>,
    /// The caller's public address as DPS sees it (`--caller-ip`).
    pub caller_ip: Option<IpAddr>,
    /// Host names of the hubs the enrollments will name.
    pub target_hubs: Vec<String>,
}

/// Individual enrollments one DPS instance may hold (docs/azure.md, Learn DPS limits).
pub const MAX_ENROLLMENTS: usize = 1_000_000;
/// Enrollment groups with symmetric-key attestation one DPS instance may hold.
pub const MAX_SYMMETRIC_KEY_GROUPS: usize = 100;

/// The checks, in order: firewall and linked hubs (with ARM), credentials, permissions (with
/// `write`), limits.
pub async fn run(checks: &DpsChecks<'_>) -> Report {
    let (name, client, write) = (checks.name, checks.client, checks.write);
    let mut findings = Vec::new();
    let mut blocked = None;
    if let Some((arm, resource_id)) = checks.arm {
        match arm.dps_description(resource_id).await {
            Ok(description) => {
                blocked = arm_findings(checks, &description, &mut findings);
            }
            Err(e) => findings.push(Finding::fail(
                Check::IpFirewall,
                e.code(),
                format!("cannot read DPS {name}'s network rules and linked hubs through ARM: {e}"),
                "grant the ARM identity Reader on the DPS instance, or check [arm] and the DPS entry's resource-id",
            )),
        }
    } else if !checks.target_hubs.is_empty() {
        findings.push(Finding::pass(
            Check::LinkedHubs,
            format!(
                "DPS {name}: linked hubs not read (configure [arm] and the DPS entry's resource-id);                  DPS refuses each enrollment naming an unlinked hub"
            ),
        ));
    }
    let individual = client.query_all(Kind::Individual).await;
    let groups = match &individual {
        Ok(_) => client.query_all(Kind::Group).await,
        Err(_) => Ok(Vec::new()),
    };
    let (individual, groups) = match (individual, groups) {
        (Ok(i), Ok(g)) => {
            findings.push(Finding::pass(
                Check::Credentials,
                format!("{name}: enrollments readable (EnrollmentRead)"),
            ));
            (i, g)
        }
        (Err(e), _) | (_, Err(e)) => {
            findings.push(match (&e, &blocked) {
                (hub::Error::Unauthorized { code, .. }, Some(caller)) => Finding::fail(
                    Check::Credentials,
                    &code.to_string(),
                    format!(
                        "DPS {name} rejected this caller ({code}) because its IP filter blocks {caller}                          (see ip-firewall); the key could not be checked"
                    ),
                    "allow this address on the DPS instance (or run from an allowed network), then run preflight again",
                ),
                _ => refused(name, &e, "EnrollmentRead"),
            });
            return Report::new(findings);
        }
    };
    if write {
        findings.push(match client.write_probe().await {
            Ok(()) => Finding::pass(
                Check::Permissions,
                format!("{name}: enrollments writable (EnrollmentWrite)"),
            ),
            Err(e) => refused(name, &e, "EnrollmentWrite"),
        });
    }
    findings.push(limits_finding(name, &individual, &groups));
    Report::new(findings)
}

/// The firewall and linked-hub findings from the ARM description; returns the caller when the
/// IP filter blocks it.
fn arm_findings(
    checks: &DpsChecks<'_>,
    description: &DpsDescription,
    findings: &mut Vec<Finding>,
) -> Option<IpAddr> {
    let name = checks.name;
    let label = format!("DPS {name}");
    let blocked = if let Some(caller) = checks.caller_ip {
        findings.push(firewall_finding(&label, &description.rules, caller));
        matches!(description.rules.verdict(caller), Verdict::Blocked { .. }).then_some(caller)
    } else {
        findings.push(Finding::pass(
            Check::IpFirewall,
            format!(
                "{label}: rules read through ARM, but this caller's public address is unknown; pass --caller-ip to compare"
            ),
        ));
        None
    };
    if !checks.target_hubs.is_empty() {
        findings.push(linked_finding(
            name,
            &description.linked_hubs,
            &checks.target_hubs,
        ));
    }
    blocked
}

/// Every hub the enrollments will name must be linked to the instance.
pub fn linked_finding(name: &str, linked: &[String], targets: &[String]) -> Finding {
    let missing: Vec<&str> = targets
        .iter()
        .filter(|t| !linked.iter().any(|l| l.eq_ignore_ascii_case(t)))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return Finding::pass(
            Check::LinkedHubs,
            format!("DPS {name}: {} linked", targets.join(", ")),
        );
    }
    Finding::fail(
        Check::LinkedHubs,
        "hub_not_linked",
        format!(
            "DPS {name} is not linked to {}: it refuses every enrollment naming it (linked: {})",
            missing.join(", "),
            if linked.is_empty() {
                "none".to_owned()
            } else {
                linked.join(", ")
            }
        ),
        format!(
            "link the hub first: az iot dps linked-hub create --dps-name {name} --resource-group … --hub-name {}",
            missing[0].split('.').next().unwrap_or(missing[0])
        ),
    )
}

/// A refused read or write: after a read worked, a 401 on the write is a missing right.
fn refused(name: &str, e: &hub::Error, right: &str) -> Finding {
    match e {
        hub::Error::Unauthorized { code, .. } if right == "EnrollmentWrite" => Finding::fail(
            Check::Permissions,
            &code.to_string(),
            format!("{name}: this credential can read enrollments but not write them ({code})"),
            "use a shared access policy with EnrollmentWrite (e.g. provisioningserviceowner) or grant \
             the Device Provisioning Service Data Contributor role",
        ),
        hub::Error::Unauthorized { code, .. } => Finding::fail(
            Check::Credentials,
            &code.to_string(),
            format!(
                "DPS {name} rejected this caller ({code}) reading enrollments; most likely its IP \
                 filter or disabled public network access excludes this machine's address — a \
                 wrong or expired key gives the same code"
            ),
            "allow this machine's public address under the instance's Networking (IP filter) or \
             run from an allowed network; configure [arm] and the DPS entry's resource-id so \
             preflight can read the rules and tell a block from a wrong key (then check the key \
             and that its policy has EnrollmentRead)",
        ),
        other => Finding::fail(
            if right == "EnrollmentWrite" {
                Check::Permissions
            } else {
                Check::Credentials
            },
            crate::diagnostic::Diagnostic::code(other),
            format!("DPS {name}: {other}"),
            crate::diagnostic::Diagnostic::fix(other)
                .unwrap_or_else(|| "check the DPS entry of the config".to_owned()),
        ),
    }
}

/// The service limits against what the instance holds now.
pub fn limits_finding(name: &str, individual: &[Value], groups: &[Value]) -> Finding {
    let symmetric = groups
        .iter()
        .filter(|g| g["attestation"]["type"] == "symmetricKey")
        .count();
    let detail = format!(
        "{name}: {} of {MAX_ENROLLMENTS} individual enrollments, {symmetric} of \
         {MAX_SYMMETRIC_KEY_GROUPS} symmetric-key groups",
        individual.len()
    );
    if individual.len() <= MAX_ENROLLMENTS && symmetric <= MAX_SYMMETRIC_KEY_GROUPS {
        Finding::pass(Check::EnrollmentLimits, detail)
    } else {
        Finding::fail(
            Check::EnrollmentLimits,
            "dps_limit",
            format!("{detail}: over a service limit"),
            "delete unused enrollments, split the fleet over more DPS instances, or restore a \
             subset with --only",
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unlinked_targets_are_named_with_the_command_that_links_them() {
        let linked = vec!["hub-b.azure-devices.net".to_owned()];
        assert!(linked_finding("d", &linked, &["HUB-B.azure-devices.net".to_owned()]).ok);
        let f = linked_finding("d", &linked, &["hub-c.azure-devices.net".to_owned()]);
        assert!(!f.ok);
        assert!(
            f.detail.contains("not linked to hub-c.azure-devices.net"),
            "{}",
            f.detail
        );
        assert!(f.fix.unwrap().contains("--hub-name hub-c"));
    }

    #[test]
    fn limits_count_symmetric_key_groups_only() {
        let group = |t: &str| json!({"attestation": {"type": t}});
        let mut groups: Vec<Value> = (0..100).map(|_| group("symmetricKey")).collect();
        groups.push(group("x509"));
        assert!(limits_finding("d", &[], &groups).ok);
        groups.push(group("symmetricKey"));
        let over = limits_finding("d", &[], &groups);
        assert!(!over.ok);
        assert!(over.detail.contains("101 of 100"), "{}", over.detail);
    }
}
