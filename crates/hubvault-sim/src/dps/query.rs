//! DPS enrollment queries (`POST /enrollments/query`, `POST /enrollmentGroups/query`) with
//! `x-ms-max-item-count` paging and an opaque `x-ms-continuation` token (the last id returned).
//!
//! Only `SELECT * FROM enrollments` / `enrollmentGroups` is answered; any other query is refused
//! with 400 rather than answered wrongly.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::enrollment::{self, Kind};
use super::{DEFAULT_PAGE, DpsState, error, json_response};
use crate::shared::lock;

pub(super) fn page(state: &DpsState, kind: Kind, headers: &HeaderMap, body: &[u8]) -> Response {
    let spec = serde_json::from_slice::<Value>(body).ok();
    let text = spec
        .as_ref()
        .and_then(|s| s.get("query"))
        .and_then(Value::as_str)
        .map(|q| {
            q.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_lowercase()
        });
    let wanted = format!("select * from {}", kind.query_source());
    if text.as_deref() != Some(wanted.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            400_004,
            &format!(
                "Unsupported query; the simulator answers only 'SELECT * FROM {}'.",
                kind.query_source()
            ),
        );
    }
    let page = match headers
        .get("x-ms-max-item-count")
        .map(|v| v.to_str().map(str::parse::<usize>))
    {
        None => DEFAULT_PAGE,
        Some(Ok(Ok(n))) if n > 0 => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                400_004,
                "Invalid x-ms-max-item-count.",
            );
        }
    };
    let after = match headers
        .get("x-ms-continuation")
        .map(|v| decode_token(v.to_str().unwrap_or("")))
    {
        None => None,
        Some(Some(k)) => Some(k),
        Some(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                400_004,
                "Invalid x-ms-continuation.",
            );
        }
    };
    let store = lock(state.store(kind));
    let mut iter = store
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .peekable();
    let mut items = Vec::new();
    let mut last = None;
    while items.len() < page {
        let Some((k, v)) = iter.next() else { break };
        items.push(enrollment::public_view(v));
        last = Some(k.clone());
    }
    let more = iter.peek().is_some();
    let mut resp = json_response(StatusCode::OK, &Value::Array(items));
    let h = resp.headers_mut();
    h.insert("x-ms-item-type", HeaderValue::from_static(kind.item_type()));
    if let Ok(v) = HeaderValue::from_str(&page.to_string()) {
        h.insert("x-ms-max-item-count", v);
    }
    if let (true, Some(k)) = (more, last)
        && let Ok(v) = HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(k))
    {
        h.insert("x-ms-continuation", v);
    }
    resp
}

fn decode_token(token: &str) -> Option<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}
