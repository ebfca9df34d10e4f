//! Which data-plane operation a request is, and the RBAC data action it needs.

use axum::http::Method;

use super::access;

/// A data-plane operation, by route.
pub enum Op<'a> {
    List,
    Set(&'a str),
    Get(&'a str, Option<&'a str>),
    Update(&'a str, Option<&'a str>),
    Delete(&'a str),
    Versions(&'a str),
    ListDeleted,
    GetDeleted(&'a str),
    Recover(&'a str),
    Purge(&'a str),
}

impl<'a> Op<'a> {
    /// `/secrets/{name}/` (latest, as the SDK sends it) and `/secrets/{name}` mean the same.
    pub fn route(method: &Method, path: &'a str) -> Option<Self> {
        let segs: Vec<&str> = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .split('/')
            .collect();
        Some(match (method.as_str(), segs.as_slice()) {
            ("GET", ["secrets"]) => Op::List,
            ("PUT", ["secrets", name]) => Op::Set(name),
            ("DELETE", ["secrets", name]) => Op::Delete(name),
            ("GET", ["secrets", name, "versions"]) => Op::Versions(name),
            ("GET", ["secrets", name]) => Op::Get(name, None),
            ("GET", ["secrets", name, version]) => Op::Get(name, Some(version)),
            ("PATCH", ["secrets", name]) => Op::Update(name, None),
            ("PATCH", ["secrets", name, version]) => Op::Update(name, Some(version)),
            ("GET", ["deletedsecrets"]) => Op::ListDeleted,
            ("GET", ["deletedsecrets", name]) => Op::GetDeleted(name),
            ("POST", ["deletedsecrets", name, "recover"]) => Op::Recover(name),
            ("DELETE", ["deletedsecrets", name]) => Op::Purge(name),
            _ => return None,
        })
    }

    /// The data action RBAC checks, and the secret it is checked on (`None`: the vault).
    pub fn action(&self) -> (&'static str, Option<&'a str>) {
        match *self {
            Op::List | Op::ListDeleted => (access::READ_METADATA, None),
            Op::Versions(n) | Op::GetDeleted(n) => (access::READ_METADATA, Some(n)),
            Op::Set(n) => (access::SET_SECRET, Some(n)),
            Op::Get(n, _) => (access::GET_SECRET, Some(n)),
            Op::Update(n, _) => (access::UPDATE, Some(n)),
            Op::Delete(n) => (access::DELETE, Some(n)),
            Op::Recover(n) => (access::RECOVER, Some(n)),
            Op::Purge(n) => (access::PURGE, Some(n)),
        }
    }

    pub fn secret(&self) -> Option<&'a str> {
        self.action().1
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_data_actions() {
        let get = Op::route(&Method::GET, "/secrets/a/").unwrap();
        assert_eq!(get.action(), (access::GET_SECRET, Some("a")));
        let list = Op::route(&Method::GET, "/secrets").unwrap();
        assert_eq!(list.action(), (access::READ_METADATA, None));
        let purge = Op::route(&Method::DELETE, "/deletedsecrets/a").unwrap();
        assert_eq!(purge.action(), (access::PURGE, Some("a")));
        assert!(Op::route(&Method::POST, "/secrets/a").is_none());
    }
}
