//! Which right each data-plane operation needs and which throttle class it counts against.
//!
//! Pure: a function of method and path. Rights follow the contract (§1.1: registry reads need
//! `RegistryRead`, writes `RegistryWrite`; twins, queries and configurations are also open to
//! `ServiceConnect`, as the service's permission table says for "service-facing" operations).

use axum::http::Method;

use super::limits::OpClass;
use super::sas::Rights;

/// What the caller must prove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// A policy holding all of these rights.
    All(Rights),
    /// A policy holding either set.
    Either(Rights, Rights),
    /// A token for this device (device SAS signed with its key, or a `DeviceConnect` policy).
    Device(String),
}

/// Classify a request.
pub fn classify(method: &Method, path: &str) -> (Need, OpClass) {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let read = *method == Method::GET;
    let (r, w) = (Rights::REGISTRY_READ, Rights::REGISTRY_WRITE);
    let svc = Rights::SERVICE_CONNECT;
    match seg.as_slice() {
        ["devices", id, "messages", "events"] if *method == Method::POST => {
            (Need::Device(decode(id)), OpClass::Telemetry)
        }
        ["devices", "query"] => (Need::Either(r, svc), OpClass::Query),
        ["devices", ..] => (Need::All(if read { r } else { w }), OpClass::Registry),
        ["twins", ..] => (Need::Either(if read { r } else { w }, svc), OpClass::Twins),
        ["jobs", ..] => (Need::All(if read { r } else { w }), OpClass::Jobs),
        ["configurations", ..] => (
            Need::Either(if read { r } else { w }, svc),
            OpClass::Configurations,
        ),
        ["statistics", ..] => (Need::Either(r, svc), OpClass::Statistics),
        _ => (Need::All(r), OpClass::Registry),
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl Need {
    pub fn satisfied_by(&self, rights: Rights) -> bool {
        match self {
            Need::All(n) => rights.contains(*n),
            Need::Either(a, b) => rights.contains(*a) || rights.contains(*b),
            Need::Device(_) => rights.contains(Rights::DEVICE_CONNECT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_reads_and_writes() {
        let (need, class) = classify(&Method::GET, "/devices/d1");
        assert_eq!(class, OpClass::Registry);
        assert!(need.satisfied_by(Rights::REGISTRY_READ));
        assert!(!need.satisfied_by(Rights::SERVICE_CONNECT));
        let (need, _) = classify(&Method::PUT, "/devices/d1");
        assert!(!need.satisfied_by(Rights::REGISTRY_READ));
        assert!(need.satisfied_by(Rights::REGISTRY_WRITE));
        let (need, _) = classify(&Method::POST, "/jobs/create");
        assert!(!need.satisfied_by(Rights::REGISTRY_READ.union(Rights::SERVICE_CONNECT)));
        let (need, class) = classify(&Method::POST, "/devices/a%24b/messages/events");
        assert_eq!(
            (need, class),
            (Need::Device("a$b".into()), OpClass::Telemetry)
        );
    }
}
