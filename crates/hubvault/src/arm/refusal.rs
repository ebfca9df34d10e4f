//! What to do about a refused ARM request, from what was asked: the method, the resource (its
//! provider type and action) and the status. A read of a hub needs Reader; the failover's writes
//! need the action they perform (`Microsoft.Devices/IotHubs/failover/action`,
//! `…/listkeys/action`, `Microsoft.Network/privateEndpoints/write`, …), and a Reader hint there
//! sends the operator to grant the wrong role.

/// The next step after ARM answered `status` to `method resource`.
pub(super) fn fix(method: &str, resource: &str, status: u16) -> String {
    let resource = resource.split('?').next().unwrap_or(resource);
    match status {
        401 | 403 => rights(method, resource),
        404 => format!(
            "{} does not exist (any more) or is out of the identity's sight: check the resource \
             id in hubvault.toml",
            kind(resource)
        ),
        409 | 429 => format!(
            "ARM is busy with another operation on {}: wait a minute and try again",
            kind(resource)
        ),
        _ => "ARM's message above names the cause".to_owned(),
    }
}

/// The role or action the identity lacks for `method resource`.
fn rights(method: &str, resource: &str) -> String {
    let lower = resource.to_ascii_lowercase();
    let action = lower.rsplit('/').next().unwrap_or("");
    let what = kind(resource);
    if method.eq_ignore_ascii_case("GET") {
        return format!("check that the identity has Reader on {what}");
    }
    let needs = match action {
        "listkeys" => "Microsoft.Devices/IotHubs/listkeys/action (IoT Hub Contributor or \
                       Contributor on the hub)"
            .to_owned(),
        "failover" => "Microsoft.Devices/IotHubs/failover/action (IoT Hub Contributor or \
                       Contributor on the hub)"
            .to_owned(),
        _ if lower.contains("/privateendpointconnections/") => {
            "Microsoft.Devices/IotHubs/privateEndpointConnections/write on the hub \
             (its owner's approval)"
                .to_owned()
        }
        _ if lower.contains("/privatednszones/") => format!(
            "Microsoft.Network/privateDnsZones {} rights (Private DNS Zone Contributor on the \
             zone)",
            verb(method)
        ),
        _ if lower.contains("/privateendpoints/") => format!(
            "Microsoft.Network/privateEndpoints/{} (Network Contributor on the endpoint's \
             resource group, plus join on its subnet)",
            verb(method)
        ),
        _ => format!("the {} right on {what}", verb(method)),
    };
    format!("the identity lacks {needs}; `hubvault failover plan` lists the rights a run needs")
}

fn verb(method: &str) -> &'static str {
    if method.eq_ignore_ascii_case("DELETE") {
        "delete"
    } else if method.eq_ignore_ascii_case("POST") {
        "action"
    } else {
        "write"
    }
}

/// The resource in words: "the hub", "the DPS instance", "the private endpoint", ….
fn kind(resource: &str) -> &'static str {
    let lower = resource.to_ascii_lowercase();
    if lower.contains("/privateendpointconnections/") {
        "the hub's private endpoint connection"
    } else if lower.contains("/privatednszones/") {
        "the private DNS zone"
    } else if lower.contains("/privateendpoints/") {
        "the private endpoint"
    } else if lower.contains("/provisioningservices/") {
        "the DPS instance"
    } else if lower.contains("/iothubs/") {
        "the hub"
    } else {
        "the resource"
    }
}

#[cfg(test)]
mod tests {
    use super::fix;
    use crate::arm::Error;

    const HUB: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Devices/IotHubs/hub-a";

    #[test]
    fn the_fix_names_what_was_asked() {
        let cases = [
            ("GET", HUB.to_owned(), 403, "Reader on the hub"),
            (
                "GET",
                "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Devices/provisioningServices/dps-a".to_owned(),
                403,
                "Reader on the DPS instance",
            ),
            (
                "POST",
                format!("{HUB}/failover?api-version=2023-06-30"),
                403,
                "Microsoft.Devices/IotHubs/failover/action",
            ),
            (
                "POST",
                format!("{HUB}/IotHubKeys/service/listkeys"),
                401,
                "Microsoft.Devices/IotHubs/listkeys/action",
            ),
            (
                "PUT",
                "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/privateEndpoints/pe-1".to_owned(),
                403,
                "Microsoft.Network/privateEndpoints/write (Network Contributor",
            ),
            (
                "DELETE",
                "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/privateEndpoints/pe-1".to_owned(),
                403,
                "Microsoft.Network/privateEndpoints/delete",
            ),
            (
                "PUT",
                format!("{HUB}/privateEndpointConnections/pe-1.abc"),
                403,
                "privateEndpointConnections/write",
            ),
            ("DELETE", format!("{HUB}/x"), 404, "does not exist"),
            ("POST", format!("{HUB}/failover"), 409, "busy with another operation on the hub"),
            ("POST", format!("{HUB}/failover"), 400, "ARM's message"),
        ];
        for (method, resource, status, says) in cases {
            let text = fix(method, &resource, status);
            assert!(text.contains(says), "{method} {resource} {status}: {text}");
            if method != "GET" {
                assert!(!text.contains("Reader"), "{method} {resource}: {text}");
            }
        }
    }

    #[test]
    fn a_refused_write_carries_its_own_fix_in_the_message() {
        let text = Error::Refused {
            method: "POST",
            resource: format!("{HUB}/failover"),
            status: 403,
            message: "AuthorizationFailed".into(),
        }
        .to_string();
        assert!(
            text.contains("AuthorizationFailed") && text.contains("failover/action"),
            "{text}"
        );
        assert!(!text.contains("Reader"), "{text}");
    }
}
