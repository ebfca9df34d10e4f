//! `POST /devices/{id}/messages/events`: one device-to-cloud message over HTTPS, signed with a
//! device SAS token (`sr={host}/devices/{id}`, no `skn`), or sent by an X.509 device presenting
//! its certificate with no token, the way the device SDKs do it.

use url::Url;

use crate::hub::auth::SasSigner;
use crate::hub::{DEFAULT_API_VERSION, Error, Result};

/// How long a probe's token lives: long enough for one request, short enough to be worthless
/// soon after.
const TOKEN_LIFETIME_SECS: i64 = 600;

/// Where a device sends: the hub's host name (what the token names) and the endpoint it is
/// reached at (the same host on Azure; a loopback address on the simulator).
#[derive(Debug, Clone)]
pub struct DeviceTarget {
    pub host: String,
    pub endpoint: Url,
}

/// Send one message as device `device_id`, signed with `key_b64` (the device's own symmetric
/// key, base64). Returns the HTTP status the hub answered: a refusal (401, 403, 404) is an
/// answer the caller judges, not an error; only a request that got no answer is an `Err`.
pub async fn send(
    http: &reqwest::Client,
    target: &DeviceTarget,
    device_id: &str,
    key_b64: &str,
    body: &[u8],
) -> Result<u16> {
    let signer = SasSigner::new("", key_b64)?;
    let expiry = time::OffsetDateTime::now_utc()
        .unix_timestamp()
        .saturating_add(TOKEN_LIFETIME_SECS);
    let token = signer.token(&format!("{}/devices/{device_id}", target.host), expiry);
    post(
        http.post(events_url(target, device_id)?),
        target,
        body,
        Some(token),
    )
    .await
}

/// Send one message as an X.509 device: `http` presents the device's certificate in the TLS
/// handshake ([`super::certificate`]) and the request carries no token, as the device SDKs'
/// HTTPS transport sends it. The endpoint must be `https`: over plain HTTP no certificate can be
/// presented. Answers as [`send`].
pub async fn send_with_certificate(
    http: &reqwest::Client,
    target: &DeviceTarget,
    device_id: &str,
    body: &[u8],
) -> Result<u16> {
    if target.endpoint.scheme() != "https" {
        return Err(Error::InvalidTarget {
            reason: format!(
                "{} is not https: an X.509 device presents its certificate in a TLS handshake",
                target.endpoint
            ),
        });
    }
    post(
        http.post(events_url(target, device_id)?),
        target,
        body,
        None,
    )
    .await
}

/// `{endpoint}/devices/{id}/messages/events?api-version=…`.
fn events_url(target: &DeviceTarget, device_id: &str) -> Result<Url> {
    let mut url = target.endpoint.clone();
    url.path_segments_mut()
        .map_err(|()| Error::InvalidTarget {
            reason: format!("endpoint {} cannot hold a path", target.endpoint),
        })?
        .pop_if_empty()
        .extend(["devices", device_id, "messages", "events"]);
    url.query_pairs_mut()
        .append_pair("api-version", DEFAULT_API_VERSION);
    Ok(url)
}

async fn post(
    request: reqwest::RequestBuilder,
    target: &DeviceTarget,
    body: &[u8],
    token: Option<String>,
) -> Result<u16> {
    let mut request = request
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    let answer = request
        .send()
        .await
        .map_err(|e| Error::transport(&target.host, e))?;
    Ok(answer.status().as_u16())
}
