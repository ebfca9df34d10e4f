//! The secrets of one vault: live secrets (each a list of versions, the last one latest) and
//! soft-deleted ones, and every data-plane operation on them, answered in Key Vault's JSON.
//!
//! Attributes follow the service: a disabled version's value cannot be read (403
//! `SecretDisabled`); `exp` and `nbf` are stored and shown but do not block `get` — the Key
//! Vault documentation ("About secrets", *Date-time controlled operations*: "A secret's get
//! operation works for not-yet-valid and expired secrets, outside the nbf / exp window") and a
//! report against the service (Azure/AzureKeyVault#19: an expired secret's GET answers 200) agree.
//! Deleting is soft: the secret keeps its versions under `deletedsecrets` for 90 days (never
//! purged on a timer here), its name cannot be set until it is recovered or purged. The service
//! completes a delete asynchronously (a GET of the deleted secret right after may still 404);
//! here it is immediate. Names compare case-insensitively; the name first given is kept.
//!
//! Must not: log or `Debug` a value (`Version` has no `Debug`; `Store`'s shows names only).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::model::{Deleted, Secret, Version};
use super::wire::{self, KvError, PageRequest, RECOVERABLE_DAYS};

/// One property of a change: left alone (absent from the body) or set (`null` clears).
#[derive(Default)]
pub enum Edit<T> {
    #[default]
    Keep,
    To(Option<T>),
}

impl<T> Edit<T> {
    fn apply(self, slot: &mut Option<T>) {
        if let Edit::To(v) = self {
            *slot = v;
        }
    }
}

/// Changes to a version's properties.
#[derive(Default)]
pub struct Changes {
    pub content_type: Edit<String>,
    pub tags: Edit<Value>,
    pub enabled: Option<bool>,
    pub exp: Edit<i64>,
    pub nbf: Edit<i64>,
}

impl Changes {
    /// From a `SecretSetParameters` / `SecretUpdateParameters` body (`contentType`, `tags`,
    /// `attributes.enabled|exp|nbf`); other keys are ignored, as the service does.
    pub fn parse(body: &Value) -> Result<Self, KvError> {
        let bad = |what: &str| KvError::bad_parameter(format!("Invalid value for '{what}'."));
        let mut c = Changes::default();
        if let Some(ct) = body.get("contentType") {
            c.content_type = Edit::To(match ct {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                _ => return Err(bad("contentType")),
            });
        }
        if let Some(tags) = body.get("tags") {
            c.tags = Edit::To(match tags {
                Value::Null => None,
                Value::Object(m) if m.values().all(Value::is_string) => Some(tags.clone()),
                _ => return Err(bad("tags")),
            });
        }
        let Some(attrs) = body.get("attributes").filter(|a| !a.is_null()) else {
            return Ok(c);
        };
        if !attrs.is_object() {
            return Err(bad("attributes"));
        }
        if let Some(e) = attrs.get("enabled").filter(|e| !e.is_null()) {
            c.enabled = Some(e.as_bool().ok_or_else(|| bad("attributes.enabled"))?);
        }
        for (field, slot) in [("exp", &mut c.exp), ("nbf", &mut c.nbf)] {
            if let Some(t) = attrs.get(field) {
                *slot = Edit::To(match t {
                    Value::Null => None,
                    _ => Some(t.as_i64().ok_or_else(|| bad(field))?),
                });
            }
        }
        Ok(c)
    }

    fn apply(self, v: &mut Version) {
        self.content_type.apply(&mut v.content_type);
        self.tags.apply(&mut v.tags);
        if let Some(e) = self.enabled {
            v.enabled = e;
        }
        self.exp.apply(&mut v.exp);
        self.nbf.apply(&mut v.nbf);
    }
}

#[derive(Default)]
pub struct Store {
    live: BTreeMap<String, Secret>,
    deleted: BTreeMap<String, Deleted>,
}

/// Names only.
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field(
                "live",
                &self.live.values().map(|s| &s.name).collect::<Vec<_>>(),
            )
            .field(
                "deleted",
                &self
                    .deleted
                    .values()
                    .map(|d| &d.secret.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

impl Store {
    /// The latest value of a live secret (for in-process checks).
    pub fn latest_value(&self, name: &str) -> Option<String> {
        self.live
            .get(&key(name))
            .and_then(Secret::latest)
            .map(|v| v.value().to_owned())
    }

    /// `PUT /secrets/{name}`: a new version, the bundle with its value.
    pub fn set(
        &mut self,
        vault: &str,
        name: &str,
        body: &Value,
        now: i64,
    ) -> Result<Value, KvError> {
        if self.deleted.contains_key(&key(name)) {
            return Err(KvError::deleted_but_recoverable(name));
        }
        let Some(value) = body.get("value").and_then(Value::as_str) else {
            return Err(KvError::bad_parameter("Property 'value' is required."));
        };
        let changes = Changes::parse(body)?;
        let mut version = Version::new(uuid::Uuid::new_v4().simple().to_string(), value, now);
        changes.apply(&mut version);
        let secret = self.live.entry(key(name)).or_insert_with(|| Secret {
            name: name.to_string(),
            versions: Vec::new(),
        });
        let out = wire::bundle(vault, &secret.name, &version, true);
        secret.versions.push(version);
        Ok(out)
    }

    /// `GET /secrets/{name}/{version?}`: the bundle with its value, unless disabled.
    pub fn get(&self, vault: &str, name: &str, version: Option<&str>) -> Result<Value, KvError> {
        let secret = self.live.get(&key(name));
        let found = match version {
            None => secret.and_then(Secret::latest),
            Some(id) => {
                secret.and_then(|s| s.versions.iter().find(|v| v.id.eq_ignore_ascii_case(id)))
            }
        };
        let (Some(secret), Some(v)) = (secret, found) else {
            return Err(KvError::not_found(
                &version.map_or_else(|| name.to_string(), |v| format!("{name}/{v}")),
            ));
        };
        if !v.enabled {
            return Err(KvError::disabled());
        }
        Ok(wire::bundle(vault, &secret.name, v, true))
    }

    /// `PATCH /secrets/{name}/{version?}`: change properties; the bundle without value.
    pub fn update(
        &mut self,
        vault: &str,
        name: &str,
        version: Option<&str>,
        body: &Value,
        now: i64,
    ) -> Result<Value, KvError> {
        let changes = Changes::parse(body)?;
        let not_found = || {
            KvError::not_found(&version.map_or_else(|| name.to_string(), |v| format!("{name}/{v}")))
        };
        let secret = self.live.get_mut(&key(name)).ok_or_else(not_found)?;
        let display = secret.name.clone();
        let v = secret.version_mut(version).ok_or_else(not_found)?;
        changes.apply(v);
        v.updated = now;
        Ok(wire::bundle(vault, &display, v, false))
    }

    /// `GET /secrets`: one item per live secret, by name.
    pub fn list(&self, vault: &str, req: &PageRequest) -> Value {
        let items = self
            .live
            .iter()
            .filter_map(|(k, s)| {
                s.latest()
                    .map(|v| (k.clone(), wire::item(vault, &s.name, v)))
            })
            .collect();
        wire::page(vault, "/secrets", items, req)
    }

    /// `GET /secrets/{name}/versions`: every version, ordered by version id as the service lists
    /// them.
    pub fn versions(&self, vault: &str, name: &str, req: &PageRequest) -> Result<Value, KvError> {
        let secret = self
            .live
            .get(&key(name))
            .ok_or_else(|| KvError::not_found(name))?;
        let mut items: Vec<(String, Value)> = secret
            .versions
            .iter()
            .map(|v| {
                (
                    v.id.to_ascii_lowercase(),
                    wire::bundle(vault, &secret.name, v, false),
                )
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(wire::page(
            vault,
            &format!("/secrets/{}/versions", secret.name),
            items,
            req,
        ))
    }

    /// `DELETE /secrets/{name}`: soft delete; the deleted bundle.
    pub fn delete(&mut self, vault: &str, name: &str, now: i64) -> Result<Value, KvError> {
        let secret = self
            .live
            .remove(&key(name))
            .ok_or_else(|| KvError::not_found(name))?;
        let retention = RECOVERABLE_DAYS.saturating_mul(86_400);
        let d = Deleted {
            secret,
            date: now,
            scheduled_purge_date: now.saturating_add(retention),
        };
        let out = wire::deleted_bundle(vault, &d);
        self.deleted.insert(key(name), d);
        Ok(out)
    }

    /// `GET /deletedsecrets`.
    pub fn list_deleted(&self, vault: &str, req: &PageRequest) -> Value {
        let items = self
            .deleted
            .iter()
            .map(|(k, d)| (k.clone(), wire::deleted_item(vault, d)))
            .collect();
        wire::page(vault, "/deletedsecrets", items, req)
    }

    /// `GET /deletedsecrets/{name}`.
    pub fn get_deleted(&self, vault: &str, name: &str) -> Result<Value, KvError> {
        self.deleted
            .get(&key(name))
            .map(|d| wire::deleted_bundle(vault, d))
            .ok_or_else(KvError::deleted_not_found)
    }

    /// `POST /deletedsecrets/{name}/recover`: back with every version; the latest version's
    /// bundle without value (UNCERTAIN whether the service includes the value; the SDK's model
    /// allows both).
    pub fn recover(&mut self, vault: &str, name: &str) -> Result<Value, KvError> {
        let d = self
            .deleted
            .remove(&key(name))
            .ok_or_else(KvError::deleted_not_found)?;
        let out = d.secret.latest().map_or_else(
            || json!({}),
            |v| wire::bundle(vault, &d.secret.name, v, false),
        );
        self.live.insert(key(name), d.secret);
        Ok(out)
    }

    /// `DELETE /deletedsecrets/{name}`: gone for good (204).
    pub fn purge(&mut self, name: &str) -> Result<StatusCode, KvError> {
        self.deleted
            .remove(&key(name))
            .map(|_| StatusCode::NO_CONTENT)
            .ok_or_else(KvError::deleted_not_found)
    }

    /// The control API's view of one secret, live or deleted: versions with attributes, no
    /// values.
    pub fn view(&self, name: &str) -> Option<Value> {
        if let Some(s) = self.live.get(&key(name)) {
            return Some(secret_view(s, None));
        }
        self.deleted
            .get(&key(name))
            .map(|d| secret_view(&d.secret, Some(d)))
    }

    /// Every secret, live then deleted, by name.
    pub fn views(&self) -> Value {
        let live = self.live.values().map(|s| secret_view(s, None));
        let deleted = self
            .deleted
            .values()
            .map(|d| secret_view(&d.secret, Some(d)));
        Value::Array(live.chain(deleted).collect())
    }
}

fn secret_view(s: &Secret, deleted: Option<&Deleted>) -> Value {
    json!({
        "name": s.name,
        "deleted": deleted.is_some(),
        "deletedDate": deleted.map(|d| d.date),
        "scheduledPurgeDate": deleted.map(|d| d.scheduled_purge_date),
        "versions": s.versions.iter().map(Version::view).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    const V: &str = "https://v.vault.azure.net";

    #[test]
    fn set_then_soft_delete_recover_and_purge() {
        let mut s = Store::default();
        let b = s
            .set(
                V,
                "Id",
                &json!({"value": "x", "attributes": {"exp": 1}}),
                10,
            )
            .unwrap();
        assert_eq!(b["attributes"]["exp"], 1);
        assert_eq!(
            s.get(V, "id", None).unwrap()["value"],
            "x",
            "expired still readable"
        );
        let d = s.delete(V, "ID", 20).unwrap();
        assert_eq!(
            d["recoveryId"],
            "https://v.vault.azure.net/deletedsecrets/Id"
        );
        assert_eq!(d["scheduledPurgeDate"], 20 + 90 * 86_400);
        assert!(d.get("value").is_none());
        assert_eq!(s.get(V, "Id", None).unwrap_err().code, "SecretNotFound");
        let conflict = s.set(V, "id", &json!({"value": "y"}), 30).unwrap_err();
        assert_eq!(conflict.status, StatusCode::CONFLICT);
        s.recover(V, "id").unwrap();
        assert_eq!(s.latest_value("ID").as_deref(), Some("x"));
        s.delete(V, "id", 40).unwrap();
        assert_eq!(s.purge("id").unwrap(), StatusCode::NO_CONTENT);
        assert!(s.get_deleted(V, "id").is_err());
        s.set(V, "id", &json!({"value": "z"}), 50).unwrap();
    }

    #[test]
    fn disabling_a_version_blocks_its_value_only() {
        let mut s = Store::default();
        let first = s.set(V, "a", &json!({"value": "1"}), 1).unwrap();
        let first_id = first["id"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        s.set(V, "a", &json!({"value": "2"}), 2).unwrap();
        let patched = s
            .update(
                V,
                "a",
                Some(&first_id),
                &json!({"attributes": {"enabled": false}, "tags": {"k": "v"}}),
                3,
            )
            .unwrap();
        assert_eq!(patched["attributes"]["enabled"], false);
        assert_eq!(patched["attributes"]["updated"], 3);
        assert!(patched.get("value").is_none());
        assert_eq!(
            s.get(V, "a", Some(&first_id)).unwrap_err().inner,
            Some("SecretDisabled")
        );
        assert_eq!(s.get(V, "a", None).unwrap()["value"], "2");
        assert!(s.update(V, "a", None, &json!({"tags": ["x"]}), 4).is_err());
    }

    #[test]
    fn debug_shows_names_not_values() {
        let mut s = Store::default();
        s.set(
            V,
            "identity",
            &json!({"value": "AGE-SECRET-KEY-1SHOULDNOTPRINT"}),
            1,
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(shown.contains("identity") && !shown.contains("SHOULDNOTPRINT"));
    }
}
