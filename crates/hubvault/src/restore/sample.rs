//! How much verification proves, and the sample it reads: `--verify full | sample[=N] | none`,
//! the kinds of identity a sample is stratified by, and the power of a sample of N.
//!
//! Pure: the random source is a parameter.
//! Must not: do I/O.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::SliceRandom;
use serde_json::Value;

use super::canonical;

/// Identities whose keys `--verify sample` reads when no N is given.
pub const DEFAULT_SAMPLE: usize = 100;

/// What verification after the restore proves (`--verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Every key: one export job of the target with staging, else a registry read per identity.
    Full,
    /// Every id and everything but keys through twin queries, and the keys of N identities
    /// chosen at random, stratified by kind.
    Sample(usize),
    /// No verification.
    None,
}

impl Verify {
    pub fn label(self) -> String {
        match self {
            Verify::Full => "full".into(),
            Verify::Sample(n) => format!("sample={n}"),
            Verify::None => "none".into(),
        }
    }
}

impl std::str::FromStr for Verify {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Verify::Full),
            "none" => Ok(Verify::None),
            "sample" => Ok(Verify::Sample(DEFAULT_SAMPLE)),
            _ => match s.strip_prefix("sample=").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(Verify::Sample(n)),
                _ => Err(format!(
                    "{s:?} is not full, sample, sample=N (N ≥ 1) or none"
                )),
            },
        }
    }
}

/// The kinds a sample is stratified by, and a drill's probe chooses from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A device with symmetric keys, neither edge nor child.
    Sas,
    /// A device with X.509 authentication (self-signed or CA).
    X509,
    /// An IoT Edge device.
    Edge,
    /// A device linked to an edge parent.
    Child,
    /// A module identity.
    Module,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sas => "sas",
            Kind::X509 => "x509",
            Kind::Edge => "edge",
            Kind::Child => "children",
            Kind::Module => "module",
        }
    }
}

/// The kind of a canonical record.
pub fn kind_of(canonical: &Value) -> Kind {
    if canonical.get("moduleId").is_some_and(|m| !m.is_null()) {
        return Kind::Module;
    }
    if canonical::is_edge(canonical) {
        return Kind::Edge;
    }
    if canonical::parent(canonical).is_some() {
        return Kind::Child;
    }
    let auth = canonical
        .get("authentication")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    if matches!(auth, "selfSigned" | "certificateAuthority") {
        Kind::X509
    } else {
        Kind::Sas
    }
}

/// `n` of `items` at random, stratified by kind: each kind gets its share of `n` (at least one
/// when it has any), so a small kind (edge devices, modules) is never left out by chance.
pub fn stratified<T: Clone>(items: &[(T, Kind)], n: usize, rng: &mut impl Rng) -> Vec<T> {
    if n >= items.len() {
        return items.iter().map(|(t, _)| t.clone()).collect();
    }
    let mut strata: BTreeMap<Kind, Vec<&T>> = BTreeMap::new();
    for (t, k) in items {
        strata.entry(*k).or_default().push(t);
    }
    let total = items.len();
    let mut out = Vec::with_capacity(n);
    for members in strata.values_mut() {
        let share = n
            .saturating_mul(members.len())
            .div_ceil(total.max(1))
            .max(1);
        members.shuffle(rng);
        out.extend(members.iter().take(share).map(|t| (*t).clone()));
    }
    out.shuffle(rng);
    out.truncate(n);
    out
}

/// The smallest share of `population` identities that, had they differed, a random sample of
/// `n` would have caught one of with 99 % probability (hypergeometric, exact). `1/population`
/// when every identity was read.
pub fn power(population: usize, n: usize) -> f64 {
    if population == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss, reason = "counts of identities")]
    let share = |d: usize| d as f64 / population as f64;
    if n >= population {
        return share(1);
    }
    // P(no differing identity in the sample) for d differing; falls as d grows.
    let miss = |d: usize| -> f64 {
        let mut p = 1.0_f64;
        for i in 0..n {
            let (good, all) = (
                population.saturating_sub(d).saturating_sub(i),
                population.saturating_sub(i),
            );
            #[allow(clippy::cast_precision_loss, reason = "counts of identities")]
            let f = good as f64 / all as f64;
            p *= f;
            if p == 0.0 {
                break;
            }
        }
        p
    };
    let (mut lo, mut hi) = (1, population);
    while lo < hi {
        let mid = lo.midpoint(hi);
        if miss(mid) <= 0.01 {
            hi = mid;
        } else {
            lo = mid.saturating_add(1);
        }
    }
    share(lo)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects, reason = "tests")]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use serde_json::json;

    #[test]
    fn verify_parses_the_three_ways_and_names_what_it_accepts() {
        assert_eq!("full".parse(), Ok(Verify::Full));
        assert_eq!("none".parse(), Ok(Verify::None));
        assert_eq!("sample".parse(), Ok(Verify::Sample(DEFAULT_SAMPLE)));
        assert_eq!("sample=7".parse(), Ok(Verify::Sample(7)));
        for bad in ["sample=0", "sample=x", "all", ""] {
            let e = bad.parse::<Verify>().unwrap_err();
            assert!(e.contains("sample=N"), "{e}");
        }
    }

    #[test]
    fn kinds_come_from_the_canonical_record() {
        assert_eq!(kind_of(&json!({"id": "a", "moduleId": "m"})), Kind::Module);
        assert_eq!(
            kind_of(&json!({"id": "g", "capabilities": {"iotEdge": true}})),
            Kind::Edge
        );
        assert_eq!(
            kind_of(&json!({"id": "c", "deviceScope": "g"})),
            Kind::Child
        );
        assert_eq!(
            kind_of(&json!({"id": "x", "authentication": {"type": "selfSigned"}})),
            Kind::X509
        );
        assert_eq!(
            kind_of(&json!({"id": "s", "authentication": {"type": "sas"}})),
            Kind::Sas
        );
    }

    #[test]
    fn a_stratified_sample_has_every_kind_and_n_items() {
        let mut items: Vec<(usize, Kind)> = (0..1000).map(|i| (i, Kind::Sas)).collect();
        items.extend((1000..1003).map(|i| (i, Kind::Edge)));
        items.push((1003, Kind::Module));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let s = stratified(&items, 20, &mut rng);
        assert_eq!(s.len(), 20);
        assert!(s.iter().any(|i| (1000..1003).contains(i)), "{s:?}");
        assert!(s.contains(&1003));
        let again = stratified(&items, 20, &mut rng);
        assert_ne!(s, again, "random, not the same spread each time");
        assert_eq!(stratified(&items[..5], 20, &mut rng).len(), 5);
    }

    #[test]
    fn power_follows_the_sample_size() {
        // 100 of 10,000: about 4.5 % must differ to be caught with 99 % probability.
        let p = power(10_000, 100);
        assert!((0.044..0.046).contains(&p), "{p}");
        assert!(power(10_000, 1_000) < p);
        assert!((power(50, 50) - 0.02).abs() < 1e-12);
        assert!((power(10_000, 1) - 0.99).abs() < 1e-3);
    }
}
