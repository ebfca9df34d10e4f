//! Typed IoT Hub errors and the parsing of the service's error responses.
//!
//! IoT Hub answers errors in two body shapes (docs/azure.md): the current one, whose top-level
//! `Message` is a string holding JSON (`{"errorCode":401002,…}`), and the legacy
//! `ErrorCode:Name;text` form. Both are parsed here, cross-checked against the `iothub-errorcode`
//! header, and mapped onto [`Error`] variants that tell the user what to do next.
//!
//! Nothing here may carry a credential: reqwest errors are stored without their URL, and service
//! messages are kept as the service wrote them (they never echo tokens).

use std::time::Duration;

use serde_json::Value;

use crate::diagnostic::{Diagnostic, fix_text};

/// Errors of the IoT Hub client. Every message names the hub and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401 from the hub. 401002 is what an IP-filtered caller gets, and also a bad key.
    #[error("{hub} rejected this caller ({code}); {}", fix_text(self))]
    Unauthorized { hub: String, code: u32 },
    /// 401003: authenticated, but the policy or Entra role lacks a right.
    #[error(
        "{hub}: the credential lacks a permission for this call ({code}: {detail}); {}",
        fix_text(self)
    )]
    PermissionMissing {
        hub: String,
        code: u32,
        detail: String,
    },
    /// 403 on job creation: only one import/export job may run per hub.
    #[error(
        "{hub} already runs an import/export job{}; {}",
        running_job.as_deref().map(|j| format!(" ({j})")).unwrap_or_default(),
        fix_text(self)
    )]
    JobSlotBusy {
        hub: String,
        running_job: Option<String>,
    },
    /// 403002 and other 403s: a hub quota is used up.
    #[error("{hub}: quota exceeded ({code}: {detail}); {}", fix_text(self))]
    QuotaExceeded {
        hub: String,
        code: u32,
        detail: String,
    },
    /// 404012 after the retry budget was spent: the hub is in a manual or Microsoft-initiated
    /// failover (docs/azure.md), which takes from minutes to a couple of hours.
    #[error(
        "{hub} is failing over (404012 IotHubFailingOver) and still was after {attempts} tries over {}s; {}",
        waited.as_secs(),
        fix_text(self)
    )]
    FailingOver {
        hub: String,
        attempts: u32,
        waited: Duration,
    },
    #[error("{hub}: not found ({code}: {detail}); {}", fix_text(self))]
    NotFound {
        hub: String,
        code: u32,
        detail: String,
    },
    #[error("{hub}: already exists ({code}: {detail}); {}", fix_text(self))]
    AlreadyExists {
        hub: String,
        code: u32,
        detail: String,
    },
    #[error("{hub}: precondition failed ({code}: {detail}); {}", fix_text(self))]
    PreconditionFailed {
        hub: String,
        code: u32,
        detail: String,
    },
    /// 400 / 413 and other client errors: the request itself is wrong.
    #[error(
        "{hub} refused the request (HTTP {status}, {code}: {detail}); this is likely a bug or bad input"
    )]
    BadRequest {
        hub: String,
        status: u16,
        code: u32,
        detail: String,
    },
    /// 429 after the retry budget was spent.
    #[error(
        "{hub} kept throttling requests{}; {}",
        retry_after.map(|d| format!(" (asked to wait {}s)", d.as_secs())).unwrap_or_default(),
        fix_text(self)
    )]
    Throttled {
        hub: String,
        retry_after: Option<Duration>,
    },
    /// 5xx after the retry budget was spent.
    #[error(
        "{hub} failed with a server error (HTTP {status}, {code}: {detail}); {}",
        fix_text(self)
    )]
    Server {
        hub: String,
        status: u16,
        code: u32,
        detail: String,
    },
    #[error("cannot reach {hub}: {source}; {}", fix_text(self))]
    Transport {
        hub: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("invalid connection string: {reason}; {}", fix_text(self))]
    InvalidConnectionString { reason: String },
    #[error("invalid hub target: {reason}")]
    InvalidTarget { reason: String },
    #[error("cannot get an Entra token for {hub}: {detail}; {}", fix_text(self))]
    Credential { hub: String, detail: String },
    #[error("{hub} sent an unexpected response for {what}: {detail}")]
    Decode {
        hub: String,
        what: String,
        detail: String,
    },
    #[error("job {job_id} on {hub} did not finish within {}s; {}", waited.as_secs(), fix_text(self))]
    JobTimedOut {
        hub: String,
        job_id: String,
        waited: Duration,
    },
    #[error(
        "{count} devices in one bulk call; IoT Hub accepts at most 100, {}",
        fix_text(self)
    )]
    TooManyDevices { count: usize },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Unauthorized { .. } => "hub_unauthorized",
            Error::PermissionMissing { .. } => "hub_permission_missing",
            Error::JobSlotBusy { .. } => "hub_job_slot_busy",
            Error::QuotaExceeded { .. } => "hub_quota_exceeded",
            Error::FailingOver { .. } => "hub_failing_over",
            Error::NotFound { .. } => "hub_not_found",
            Error::AlreadyExists { .. } => "hub_already_exists",
            Error::PreconditionFailed { .. } => "hub_precondition_failed",
            Error::BadRequest { .. } => "hub_bad_request",
            Error::Throttled { .. } => "hub_throttled",
            Error::Server { .. } => "hub_server",
            Error::Transport { .. } => "hub_transport",
            Error::InvalidConnectionString { .. } => "hub_invalid_connection_string",
            Error::InvalidTarget { .. } => "hub_invalid_target",
            Error::Credential { .. } => "hub_credential",
            Error::Decode { .. } => "hub_decode",
            Error::JobTimedOut { .. } => "hub_job_timed_out",
            Error::TooManyDevices { .. } => "hub_too_many_devices",
        }
    }

    fn fix(&self) -> Option<String> {
        let fix = match self {
            Error::Unauthorized { .. } => {
                "if its IP firewall or public network access excludes this machine's address, \
                 allow it or run from an allowed network (a wrong or expired key gives the same code)"
            }
            Error::PermissionMissing { .. } => {
                "use a policy with RegistryRead/RegistryWrite (e.g. iothubowner) or grant an IoT \
                 Hub data role"
            }
            Error::JobSlotBusy { .. } => "wait for it to finish (or cancel it) and retry",
            Error::QuotaExceeded { .. } => "free capacity or raise the hub's tier/units",
            Error::FailingOver { .. } => {
                "retry when its failover completes (it can take from 10 minutes to a couple of hours)"
            }
            Error::NotFound { .. } => "check the id",
            Error::AlreadyExists { .. } => "use an update mode or delete it first",
            Error::PreconditionFailed { .. } => "the item changed meanwhile, read it again",
            Error::Throttled { .. } => "retry later or lower the request rate",
            Error::Server { .. } => "retry later",
            Error::Transport { .. } => "check the host name, DNS and network path",
            Error::InvalidConnectionString { .. } => {
                "expected HostName=…;SharedAccessKeyName=…;SharedAccessKey=…"
            }
            Error::Credential { .. } => "sign in (az login) or check the managed identity",
            Error::JobTimedOut { .. } => "resume later by its job id",
            Error::TooManyDevices { .. } => "split the batch",
            Error::BadRequest { .. } | Error::InvalidTarget { .. } | Error::Decode { .. } => {
                return None;
            }
        };
        Some(fix.to_owned())
    }
}

impl Error {
    /// The 6-digit IoT Hub error code, when the service sent one.
    pub fn service_code(&self) -> Option<u32> {
        match self {
            Error::Unauthorized { code, .. }
            | Error::PermissionMissing { code, .. }
            | Error::QuotaExceeded { code, .. }
            | Error::NotFound { code, .. }
            | Error::AlreadyExists { code, .. }
            | Error::PreconditionFailed { code, .. }
            | Error::BadRequest { code, .. }
            | Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A reqwest error without its URL (a URL may carry a SAS signature).
    pub(crate) fn transport(hub: &str, source: reqwest::Error) -> Self {
        Error::Transport {
            hub: hub.to_owned(),
            source: source.without_url(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the service said about a failed request, from both body shapes and the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    pub status: u16,
    /// 6-digit code; derived from the name when only a name was sent.
    pub code: Option<u32>,
    /// Error name (`DeviceNotFound`), from the header or the legacy body.
    pub name: Option<String>,
    pub message: String,
    pub tracking_id: Option<String>,
}

/// Known error names and their numbers (docs/azure.md; sdk-cs `ErrorCode.cs`).
const CODES: &[(u32, &str)] = &[
    (400_004, "ArgumentInvalid"),
    (400_005, "ArgumentNull"),
    (400_007, "DeviceStorageEntitySerializationError"),
    (400_008, "BlobContainerValidationError"),
    (400_011, "DeviceDefinedMultipleTimes"),
    (400_012, "DeserializationError"),
    (400_023, "EtagDoesNotMatch"),
    (400_028, "InvalidDeviceScope"),
    (401_002, "IotHubUnauthorizedAccess"),
    (401_003, "IotHubUnauthorized"),
    (403_001, "IotHubSuspended"),
    (403_002, "IotHubQuotaExceeded"),
    (403_003, "JobQuotaExceeded"),
    (404_001, "DeviceNotFound"),
    (404_002, "JobNotFound"),
    (404_010, "ModuleNotFound"),
    (404_012, "IotHubFailingOver"),
    (409_001, "DeviceAlreadyExists"),
    (409_301, "ModuleAlreadyExistsOnDevice"),
    (409_401, "ConfigurationAlreadyExists"),
    (412_001, "PreconditionFailed"),
    (413_002, "TooManyDevices"),
    (413_003, "TooManyModulesOnDevice"),
    (429_001, "ThrottlingException"),
    (429_002, "ThrottleBacklogLimitExceeded"),
    (429_003, "ThrottlingBacklogTimeout"),
    (429_004, "ThrottlingMaxActiveJobCountExceeded"),
    (500_001, "ServerError"),
    (503_001, "ServiceUnavailable"),
    (503_005, "ServerBusy"),
];

/// The number of a known error name (case-insensitive).
pub fn code_for_name(name: &str) -> Option<u32> {
    CODES
        .iter()
        .find(|(_, n)| n.eq_ignore_ascii_case(name))
        .map(|(c, _)| *c)
}

/// The name of a known error number.
pub fn name_for_code(code: u32) -> Option<&'static str> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// `errorCode` may be a number, a numeric string or a name.
pub(crate) fn code_from_json(v: &Value) -> (Option<u32>, Option<String>) {
    match v {
        Value::Number(n) => (n.as_u64().and_then(|c| u32::try_from(c).ok()), None),
        Value::String(s) => match s.parse::<u32>() {
            Ok(c) => (Some(c), None),
            Err(_) => (code_for_name(s), Some(s.clone())),
        },
        _ => (None, None),
    }
}

impl ServiceError {
    /// Parse an error response. `header` is the `iothub-errorcode` header value, if any.
    pub fn parse(status: u16, header: Option<&str>, body: &[u8]) -> Self {
        let mut err = ServiceError {
            status,
            code: None,
            name: None,
            message: String::new(),
            tracking_id: None,
        };
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            err.read_body(&v);
        } else if !body.is_empty() {
            err.message = String::from_utf8_lossy(body).chars().take(300).collect();
        }
        err.cross_check(header);
        err
    }

    fn read_body(&mut self, v: &Value) {
        let outer = v.get("Message").or_else(|| v.get("message"));
        match outer.and_then(Value::as_str) {
            Some(inner) => match serde_json::from_str::<Value>(inner) {
                // Shape A: JSON inside the Message string.
                Ok(inner @ Value::Object(_)) => self.read_flat(&inner),
                // Shape B: "ErrorCode:Name;text".
                _ => self.read_legacy(inner),
            },
            // Flat JSON `{"errorCode":…, "message":…}` (DPS-style; tolerated).
            None => self.read_flat(v),
        }
        if self.tracking_id.is_none() {
            let em = v
                .get("ExceptionMessage")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let Some(rest) = em.strip_prefix("Tracking ID:") {
                self.tracking_id = rest.split('-').next().map(str::to_owned);
            }
        }
    }

    fn read_flat(&mut self, v: &Value) {
        if let Some(c) = v.get("errorCode") {
            let (code, name) = code_from_json(c);
            self.code = code;
            self.name = name;
        }
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            m.clone_into(&mut self.message);
        }
        self.tracking_id = v
            .get("trackingId")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }

    fn read_legacy(&mut self, text: &str) {
        let (head, rest) = text.split_once(';').unwrap_or((text, ""));
        match head.split_once(':') {
            Some((k, name)) if k.trim().eq_ignore_ascii_case("ErrorCode") => {
                let name = name.trim();
                self.code = code_for_name(name);
                self.name = Some(name.to_owned());
                rest.trim().clone_into(&mut self.message);
            }
            _ => text.trim().clone_into(&mut self.message),
        }
    }

    /// The header names the error as the gateway saw it. When the body's number disagrees with
    /// a known header name, trust the header (sdk-cs refuses to guess; we prefer the header
    /// because the body of shape A is produced further from the wire).
    fn cross_check(&mut self, header: Option<&str>) {
        let Some(h) = header.map(str::trim).filter(|h| !h.is_empty()) else {
            return;
        };
        let header_code = code_for_name(h);
        match (self.code, header_code) {
            (None, hc) => self.code = hc,
            (Some(c), Some(hc)) if c != hc && c / 1000 != u32::from(self.status) => {
                self.code = Some(hc);
            }
            _ => {}
        }
        if self.name.is_none() {
            self.name = Some(h.to_owned());
        }
    }

    /// A short human text for messages: the service message, or the error name.
    pub fn detail(&self) -> String {
        match (&self.message, &self.name) {
            (m, _) if !m.is_empty() => m.clone(),
            (_, Some(n)) => n.clone(),
            _ => format!("HTTP {}", self.status),
        }
    }

    /// The code to report: the service's, else the status followed by three zeros.
    fn code_or_status(&self) -> u32 {
        self.code.unwrap_or(u32::from(self.status) * 1000)
    }

    /// Map onto a typed error. `retry_after` is what the response asked for (429/503).
    pub fn into_error(self, hub: &str, retry_after: Option<Duration>) -> Error {
        let hub = hub.to_owned();
        let code = self.code_or_status();
        let detail = self.detail();
        match self.status {
            401 if code == 401_003 => Error::PermissionMissing { hub, code, detail },
            401 => Error::Unauthorized {
                hub,
                code: if code == 401_000 { 401_002 } else { code },
            },
            403 => Error::QuotaExceeded { hub, code, detail },
            404 if code == 404_012 => Error::FailingOver {
                hub,
                attempts: 1,
                waited: Duration::ZERO,
            },
            404 => Error::NotFound { hub, code, detail },
            409 => Error::AlreadyExists { hub, code, detail },
            412 => Error::PreconditionFailed { hub, code, detail },
            429 => Error::Throttled { hub, retry_after },
            s if s >= 500 => Error::Server {
                hub,
                status: s,
                code,
                detail,
            },
            s => Error::BadRequest {
                hub,
                status: s,
                code,
                detail,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_a_json_in_string() {
        let body = br#"{"Message":"{\"errorCode\":401002,\"trackingId\":\"9b1c\",\"message\":\"Unauthorized\",\"timestampUtc\":\"2025-05-01T10:00:00Z\"}","ExceptionMessage":""}"#;
        let e = ServiceError::parse(401, Some("IotHubUnauthorizedAccess"), body);
        assert_eq!(e.code, Some(401_002));
        assert_eq!(e.message, "Unauthorized");
        assert_eq!(e.tracking_id.as_deref(), Some("9b1c"));
        assert_eq!(e.name.as_deref(), Some("IotHubUnauthorizedAccess"));
    }

    #[test]
    fn shape_b_legacy_semicolon_form() {
        let body = br#"{"Message":"ErrorCode:ThrottlingBacklogTimeout;The request has been throttled. Wait 10 seconds and try again.","ExceptionMessage":"Tracking ID:55f07849-G:0-TimeStamp:10/12/2021 07:18:02"}"#;
        let e = ServiceError::parse(429, None, body);
        assert_eq!(e.code, Some(429_003));
        assert_eq!(e.name.as_deref(), Some("ThrottlingBacklogTimeout"));
        assert!(e.message.starts_with("The request has been throttled"));
        assert_eq!(e.tracking_id.as_deref(), Some("55f07849"));
    }

    #[test]
    fn minimal_body_with_header_as_in_sdk_tests() {
        let e = ServiceError::parse(
            404,
            Some("DeviceNotFound"),
            br#"{"Message":"{\"errorCode\":404001}"}"#,
        );
        assert_eq!(e.code, Some(404_001));
        assert_eq!(e.detail(), "DeviceNotFound");
    }

    #[test]
    fn header_wins_when_the_body_code_does_not_fit_the_status() {
        let e = ServiceError::parse(
            404,
            Some("JobNotFound"),
            br#"{"Message":"{\"errorCode\":500001}"}"#,
        );
        assert_eq!(e.code, Some(404_002));
    }

    #[test]
    fn header_alone_gives_the_code_when_the_body_is_not_json() {
        let e = ServiceError::parse(409, Some("DeviceAlreadyExists"), b"oops");
        assert_eq!(e.code, Some(409_001));
        assert_eq!(e.message, "oops");
    }

    #[test]
    fn error_code_as_name_or_number() {
        assert_eq!(code_from_json(&serde_json::json!(409_001)).0, Some(409_001));
        assert_eq!(
            code_from_json(&serde_json::json!("DeviceAlreadyExists")).0,
            Some(409_001)
        );
        assert_eq!(
            code_from_json(&serde_json::json!("409001")).0,
            Some(409_001)
        );
    }

    #[test]
    fn firewall_message_for_401002() {
        let e = ServiceError::parse(401, None, br#"{"Message":"{\"errorCode\":401002,\"message\":\"Unauthorized\"}","ExceptionMessage":""}"#)
            .into_error("hub-b", None);
        assert_eq!(e.code(), "hub_unauthorized");
        assert_eq!(
            e.to_string(),
            "hub-b rejected this caller (401002); if its IP firewall or public network access \
             excludes this machine's address, allow it or run from an allowed network (a wrong or \
             expired key gives the same code)"
        );
    }

    #[test]
    fn status_mapping() {
        let map = |s, body: &[u8]| {
            ServiceError::parse(s, None, body)
                .into_error("h", None)
                .code()
        };
        assert_eq!(
            map(401, br#"{"Message":"{\"errorCode\":401003}"}"#),
            "hub_permission_missing"
        );
        assert_eq!(
            map(403, br#"{"Message":"{\"errorCode\":403002}"}"#),
            "hub_quota_exceeded"
        );
        assert_eq!(map(404, b""), "hub_not_found");
        assert_eq!(map(409, b""), "hub_already_exists");
        assert_eq!(map(412, b""), "hub_precondition_failed");
        assert_eq!(map(429, b""), "hub_throttled");
        assert_eq!(map(503, b""), "hub_server");
        assert_eq!(map(400, b""), "hub_bad_request");
    }
}
