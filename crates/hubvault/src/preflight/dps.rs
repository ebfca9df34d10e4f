//! Preflight of a DPS instance (`preflight --to-dps`): can this credential read enrollments
//! (`EnrollmentRead`, what `backup --dps` needs) and write them (`EnrollmentWrite`, what
//! `restore --to-dps` needs), and does the instance have room under the service's limits
//! (1,000,000 individual enrollments, 100 symmetric-key enrollment groups).
//!
//! Reads one query per kind and makes one non-writing write probe (`DpsClient::write_probe`).
//! Not checked here yet: the DPS IP firewall through ARM and whether target hubs are linked.

use serde_json::Value;

use super::{Check, Finding, Report};
use crate::dps::{DpsClient, Kind};
use crate::hub;

/// Individual enrollments one DPS instance may hold (docs/azure.md, Learn DPS limits).
pub const MAX_ENROLLMENTS: usize = 1_000_000;
/// Enrollment groups with symmetric-key attestation one DPS instance may hold.
pub const MAX_SYMMETRIC_KEY_GROUPS: usize = 100;

/// The checks, in order; `write`: also the write right (a restore's target).
pub async fn run(client: &DpsClient, name: &str, write: bool) -> Report {
    let mut findings = Vec::new();
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
            findings.push(refused(name, &e, "EnrollmentRead"));
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
            format!("DPS {name} rejected this caller ({code}) reading enrollments"),
            "check the key (a wrong or expired key gives this code) and the policy's rights \
             (EnrollmentRead or EnrollmentWrite); if the DPS IP filter excludes this machine's \
             public address, DPS answers the same way: allow it under Networking or run from an \
             allowed network",
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
