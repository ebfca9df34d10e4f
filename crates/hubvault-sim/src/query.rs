//! `POST /devices/query` (docs/azure.md): a deliberately small subset of the `IoT` Hub query
//! language — enough for backup verification and preflight, not a SQL engine.
//!
//! Supported: `SELECT * | COUNT() AS name | field, … FROM devices | devices.modules
//! [WHERE path op literal [AND …]]` with `=`, `!=`, `<>`; literals are quoted strings, numbers,
//! `true`, `false`, `null`. Paging: `x-ms-max-item-count`, `x-ms-continuation` (an opaque
//! cursor: the last key returned). Anything else is 400 `ArgumentInvalid`, as the service rejects
//! what it cannot parse.

use std::ops::Bound;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde_json::{Map, Value, json};

use super::error::HubError;
use super::registry::Registry;
use super::state::{Hub, body_json, json_response, lock};
use super::wire::{module_twin_json, twin_json};

#[derive(Debug, PartialEq)]
pub struct Parsed {
    count_as: Option<String>,
    fields: Option<Vec<String>>,
    modules: bool,
    conds: Vec<(String, bool, Value)>,
}

fn bad(q: &str) -> HubError {
    HubError::argument_invalid(format!(
        "Query is invalid or not supported by the simulator: {q}"
    ))
}

fn tokens(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = q.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                cur.push(c);
                for d in chars.by_ref() {
                    cur.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            ' ' | '\t' | '\n' | '\r' | ',' | '=' | '(' | ')' | '!' | '<' | '>' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                match (c, chars.peek()) {
                    ('!' | '<', Some('=' | '>')) => {
                        let next = chars.next().unwrap_or('=');
                        out.push(format!("{c}{next}"));
                    }
                    (' ' | '\t' | '\n' | '\r', _) => {}
                    _ => out.push(c.to_string()),
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn literal(t: &str) -> Option<Value> {
    if let Some(s) = t
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .or_else(|| t.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
    {
        return Some(Value::String(s.to_string()));
    }
    match t.to_ascii_lowercase().as_str() {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        "null" => Some(Value::Null),
        _ => serde_json::from_str::<serde_json::Number>(t)
            .ok()
            .map(Value::Number),
    }
}

#[allow(
    clippy::arithmetic_side_effects,
    reason = "indices start below t.len() and each step follows a token found at or past it, so they stay below t.len() + 3"
)]
pub fn parse(q: &str) -> Result<Parsed, HubError> {
    let t = tokens(q);
    let kw = |i: usize, w: &str| t.get(i).is_some_and(|s| s.eq_ignore_ascii_case(w));
    if !kw(0, "select") {
        return Err(bad(q));
    }
    let from = (1..t.len())
        .find(|&i| kw(i, "from"))
        .ok_or_else(|| bad(q))?;
    let proj = &t[1..from];
    let (count_as, fields) = match proj {
        [star] if star == "*" => (None, None),
        [c, open, close, r#as, name]
            if c.eq_ignore_ascii_case("count")
                && open == "("
                && close == ")"
                && r#as.eq_ignore_ascii_case("as") =>
        {
            (Some(name.clone()), None)
        }
        [c, open, close] if c.eq_ignore_ascii_case("count") && open == "(" && close == ")" => {
            (Some("$1".to_string()), None)
        }
        fields => {
            let names: Vec<String> = fields.iter().filter(|f| *f != ",").cloned().collect();
            if names.is_empty()
                || names
                    .iter()
                    .any(|n| literal(n).is_some() || n == "(" || n == ")")
            {
                return Err(bad(q));
            }
            (None, Some(names))
        }
    };
    let modules = match t.get(from + 1).map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("devices") => false,
        Some("devices.modules") => true,
        _ => return Err(bad(q)),
    };
    let mut conds = Vec::new();
    let mut i = from + 2;
    if i < t.len() {
        if !kw(i, "where") {
            return Err(bad(q));
        }
        i += 1;
        loop {
            let (Some(path), Some(op), Some(lit)) = (
                t.get(i),
                t.get(i + 1),
                t.get(i + 2).and_then(|l| literal(l)),
            ) else {
                return Err(bad(q));
            };
            let eq = match op.as_str() {
                "=" => true,
                "!=" | "<>" => false,
                _ => return Err(bad(q)),
            };
            conds.push((path.clone(), eq, lit));
            i += 3;
            if i == t.len() {
                break;
            }
            if !kw(i, "and") {
                return Err(bad(q));
            }
            i += 1;
        }
    }
    Ok(Parsed {
        count_as,
        fields,
        modules,
        conds,
    })
}

fn lookup<'a>(item: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(item, |v, seg| v.get(seg))
}

impl Parsed {
    fn matches(&self, item: &Value) -> bool {
        self.conds.iter().all(|(path, eq, lit)| {
            let v = lookup(item, path).unwrap_or(&Value::Null);
            (v == lit) == *eq
        })
    }

    fn project(&self, item: Value) -> Value {
        let Some(fields) = &self.fields else {
            return item;
        };
        let mut out = Map::new();
        for f in fields {
            let key = f.rsplit('.').next().unwrap_or(f);
            if let Some(v) = lookup(&item, f) {
                out.insert(key.to_string(), v.clone());
            }
        }
        Value::Object(out)
    }
}

/// Items after `cursor` (exclusive), at most `page`; returns items and the cursor of the last one
/// when the page is full.
fn page(
    reg: &Registry,
    q: &Parsed,
    cursor: Option<&(String, String)>,
    page: usize,
) -> (Vec<Value>, Option<(String, String)>) {
    let mut items = Vec::new();
    let start = cursor.as_ref().map_or(Bound::Unbounded, |(id, m)| {
        if q.modules && !m.is_empty() {
            Bound::Included(id.as_str())
        } else {
            Bound::Excluded(id.as_str())
        }
    });
    for (id, d) in reg.devices.range::<str, _>((start, Bound::Unbounded)) {
        let candidates: Vec<(String, Value)> = if q.modules {
            let after = cursor
                .as_ref()
                .filter(|(cid, _)| **cid == **id)
                .map(|(_, m)| m.as_str());
            d.modules()
                .iter()
                .filter(|m| after.is_none_or(|a| *m.id > *a))
                .map(|m| (m.id.to_string(), module_twin_json(id, d, m)))
                .collect()
        } else {
            vec![(String::new(), twin_json(id, d))]
        };
        for (mid, item) in candidates {
            if q.matches(&item) {
                items.push(q.project(item));
                if items.len() >= page {
                    return (items, Some((id.to_string(), mid)));
                }
            }
        }
    }
    (items, None)
}

fn decode_cursor(token: &str) -> Option<(String, String)> {
    let bytes = B64URL.decode(token.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (id, m) = text.split_once('\n')?;
    Some((id.to_string(), m.to_string()))
}

pub async fn run(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HubError> {
    let body = body_json(&body)?;
    let text = body
        .get("query")
        .and_then(Value::as_str)
        .ok_or_else(|| HubError::argument_null("The query is missing."))?;
    let q = parse(text)?;
    let max = lock(&hub.limits).query_max_page.max(1);
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
    };
    let size = header("x-ms-max-item-count")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, max);
    let cursor = match header("x-ms-continuation") {
        Some(t) => Some(
            decode_cursor(t)
                .ok_or_else(|| HubError::argument_invalid("The continuation token is invalid."))?,
        ),
        None => None,
    };
    let reg = lock(&hub.registry);
    let (items, next, kind) = if let Some(name) = &q.count_as {
        let all = page(
            &reg,
            &Parsed {
                count_as: None,
                fields: None,
                modules: q.modules,
                conds: q.conds.clone(),
            },
            None,
            usize::MAX,
        )
        .0
        .len();
        (vec![json!({ name: all })], None, "raw")
    } else {
        let (items, next) = page(&reg, &q, cursor.as_ref(), size);
        (items, next, if q.fields.is_some() { "raw" } else { "twin" })
    };
    drop(reg);
    let mut resp = json_response(StatusCode::OK, &Value::Array(items));
    resp.headers_mut()
        .insert("x-ms-item-type", HeaderValue::from_static(kind));
    if let Some((id, m)) = next
        && let Ok(v) = HeaderValue::from_str(&B64URL.encode(format!("{id}\n{m}")))
    {
        resp.headers_mut().insert("x-ms-continuation", v);
    }
    Ok(resp)
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
    fn parses_the_queries_clients_send() {
        let q = parse("SELECT COUNT() AS totalNumberOfDevices FROM devices").unwrap();
        assert_eq!(q.count_as.as_deref(), Some("totalNumberOfDevices"));
        assert!(parse("SELECT * FROM devices.modules").unwrap().modules);
        let q = parse("select deviceId from devices where capabilities.iotEdge = true and status != 'disabled'").unwrap();
        assert_eq!(q.fields, Some(vec!["deviceId".to_string()]));
        assert_eq!(q.conds.len(), 2);
        assert_eq!(q.conds[1], ("status".to_string(), false, json!("disabled")));
        assert!(parse("SELECT * FROM devices WHERE tags.x > 1").is_err());
        assert!(parse("DELETE FROM devices").is_err());
        assert!(parse("SELECT * FROM jobs").is_err());
    }
}
