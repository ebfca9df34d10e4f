//! `IoT` Hub data-plane errors as the service puts them on the wire (docs/azure.md), plus the
//! simulator's own start-up errors.
//!
//! Owns: the two error body shapes of §6.1 (A: JSON inside the `Message` string; B: the legacy
//! `ErrorCode:Name;text` form used for throttling), the `iothub-errorcode` header, and the
//! numeric code → HTTP status rule (the first three digits of the six-digit code).
//! Must not: decide *when* an error happens — callers do.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

/// `2025-05-01T10:00:00.1234567Z`, the service's `timestampUtc` format.
pub(crate) const TIMESTAMP_7: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z");

/// Format a UTC time the way the service does in JSON bodies.
pub(crate) fn timestamp(t: OffsetDateTime) -> String {
    t.format(TIMESTAMP_7).unwrap_or_default()
}

/// Which body shape an error is written in (§6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyShape {
    /// `{"Message":"{\"errorCode\":…}","ExceptionMessage":""}` (current service).
    Json,
    /// `{"Message":"ErrorCode:Name;text","ExceptionMessage":"Tracking ID:…"}` (legacy; throttling).
    Legacy,
}

/// One data-plane error response.
#[derive(Clone, Debug)]
pub struct HubError {
    /// Six-digit code (`401002`); its first three digits are the HTTP status.
    pub code: u32,
    /// `ErrorCode` name for the `iothub-errorcode` header (`IotHubUnauthorizedAccess`).
    pub name: &'static str,
    pub message: String,
    pub shape: BodyShape,
    /// Seconds for a `Retry-After` header (throttling only).
    pub retry_after: Option<u64>,
}

impl HubError {
    pub fn new(code: u32, name: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            name,
            message: message.into(),
            shape: BodyShape::Json,
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(u16::try_from(self.code / 1000).unwrap_or(500))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Bad, expired or foreign SAS token, unknown policy — and an IP-firewall block (§6.3): the
    /// body deliberately says nothing about IP rules, exactly like the service.
    pub fn unauthorized() -> Self {
        Self::new(401_002, "IotHubUnauthorizedAccess", "Unauthorized")
    }

    /// Header missing or the policy lacks the right the operation needs.
    pub fn forbidden_right(detail: impl Into<String>) -> Self {
        Self::new(401_003, "IotHubUnauthorized", detail)
    }

    pub fn argument_invalid(message: impl Into<String>) -> Self {
        Self::new(400_004, "ArgumentInvalid", message)
    }

    pub fn argument_null(message: impl Into<String>) -> Self {
        Self::new(400_005, "ArgumentNull", message)
    }

    pub fn device_not_found(id: &str) -> Self {
        Self::new(
            404_001,
            "DeviceNotFound",
            format!("Device '{id}' not found."),
        )
    }

    pub fn module_not_found(id: &str, module: &str) -> Self {
        Self::new(
            404_010,
            "ModuleNotFound",
            format!("Module '{module}' on device '{id}' not found."),
        )
    }

    pub fn precondition_failed(what: &str) -> Self {
        Self::new(
            412_001,
            "PreconditionFailed",
            format!("Precondition failed: ETag mismatch for {what}."),
        )
    }

    #[must_use]
    pub fn with_shape(mut self, shape: BodyShape) -> Self {
        self.shape = shape;
        self
    }

    /// The JSON value for the body, given a tracking id and the time of the error.
    pub fn body(&self, tracking_id: &str, now: OffsetDateTime) -> serde_json::Value {
        match self.shape {
            BodyShape::Json => {
                let inner = serde_json::json!({
                    "errorCode": self.code,
                    "trackingId": tracking_id,
                    "message": self.message,
                    "timestampUtc": timestamp(now),
                });
                serde_json::json!({"Message": inner.to_string(), "ExceptionMessage": ""})
            }
            BodyShape::Legacy => {
                let fmt = format_description!("[month]/[day]/[year] [hour]:[minute]:[second]");
                let ts = now.format(fmt).unwrap_or_default();
                serde_json::json!({
                    "Message": format!("ErrorCode:{};{}", self.name, self.message),
                    "ExceptionMessage": format!("Tracking ID:{tracking_id}-G:0-TimeStamp:{ts}"),
                })
            }
        }
    }
}

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let tracking = uuid::Uuid::new_v4().simple().to_string();
        let body = self.body(&tracking, OffsetDateTime::now_utc());
        let mut response = (self.status(), body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        headers.insert("iothub-errorcode", HeaderValue::from_static(self.name));
        if let Ok(v) = HeaderValue::from_str(&tracking) {
            headers.insert("x-ms-request-id", v);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}; pick another --listen address or free the port")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("hub name {0:?} is not valid; use 3-50 letters, digits or '-'")]
    HubName(String),
    #[error("hub {0:?} is given twice; give each --hub once")]
    DuplicateHub(String),
    /// `--tls`: the certificate could not be made or the CA file written (the message says why).
    #[error(transparent)]
    Tls(#[from] super::tls::Error),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::Bind { .. } => "sim_bind",
            Error::HubName(_) => "sim_hub_name",
            Error::DuplicateHub(_) => "sim_duplicate_hub",
            Error::Tls(e) => e.code(),
        }
    }
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
    fn shape_a_carries_json_inside_the_message_string() {
        let e = HubError::unauthorized();
        let now = time::macros::datetime!(2025-05-01 10:00:00.1234567 UTC);
        let body = e.body("abc", now);
        assert_eq!(body["ExceptionMessage"], "");
        let inner: serde_json::Value =
            serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["errorCode"], 401_002);
        assert_eq!(inner["message"], "Unauthorized");
        assert_eq!(inner["timestampUtc"], "2025-05-01T10:00:00.1234567Z");
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn shape_b_is_the_semicolon_form() {
        let e = HubError::new(
            429_001,
            "ThrottlingException",
            "The request has been throttled.",
        )
        .with_shape(BodyShape::Legacy);
        let body = e.body("t1", time::macros::datetime!(2021-10-12 07:18:02 UTC));
        assert_eq!(
            body["Message"],
            "ErrorCode:ThrottlingException;The request has been throttled."
        );
        assert_eq!(
            body["ExceptionMessage"],
            "Tracking ID:t1-G:0-TimeStamp:10/12/2021 07:18:02"
        );
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
