//! The data of one vault: a secret's versions and a soft-deleted secret. A leaf: what the store
//! does with them and how the wire shows them live in `store` and `wire`.
//!
//! Must not: `Debug` a value (`Version` has no `Debug`).

use serde_json::{Value, json};

/// One version of a secret. Its value leaves only through `wire::bundle` with a value.
#[derive(Clone)]
pub struct Version {
    pub id: String,
    value: String,
    pub content_type: Option<String>,
    pub tags: Option<Value>,
    pub enabled: bool,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub created: i64,
    pub updated: i64,
}

impl Version {
    /// A new enabled version made at `now`, with no other properties.
    pub fn new(id: String, value: &str, now: i64) -> Version {
        Version {
            id,
            value: value.to_owned(),
            content_type: None,
            tags: None,
            enabled: true,
            exp: None,
            nbf: None,
            created: now,
            updated: now,
        }
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// `{"version","enabled","exp","nbf","created","updated","contentType","tags"}` for the
    /// control API: no value.
    pub fn view(&self) -> Value {
        json!({"version": self.id, "enabled": self.enabled, "exp": self.exp, "nbf": self.nbf,
               "created": self.created, "updated": self.updated,
               "contentType": self.content_type, "tags": self.tags})
    }
}

#[derive(Clone)]
pub struct Secret {
    /// As first given (ids are written with it).
    pub name: String,
    pub versions: Vec<Version>,
}

impl Secret {
    pub fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    pub fn version_mut(&mut self, id: Option<&str>) -> Option<&mut Version> {
        match id {
            None => self.versions.last_mut(),
            Some(id) => self
                .versions
                .iter_mut()
                .find(|v| v.id.eq_ignore_ascii_case(id)),
        }
    }
}

/// A soft-deleted secret.
pub struct Deleted {
    pub secret: Secret,
    pub date: i64,
    pub scheduled_purge_date: i64,
}
