//! The restore plan (pure): snapshot against live target → create / update / delete / unchanged
//! per `(id, moduleId)`.
//!
//! Both sides arrive sorted by `(id, moduleId)` in canonical form ([`super::canonical`]), so the
//! plan is one merge pass. `mirror` deletes only what this diff says the snapshot lacks — never
//! "delete everything, then load". ETag-safe writes use the **target's** etags, read during
//! planning (the snapshot's etags belong to another hub).
//!
//! Keys: a twin read carries none, so a record equal on everything else but holding keys in the
//! snapshot is listed in [`Plan::needs_keys`]; the caller reads those few with keys and plans
//! again. In `create` an existing id is a conflict unless it is equal to the snapshot's record
//! (keys included): then it is unchanged, so a re-run of a half-failed restore converges.
//!
//! Must not: do I/O, read the clock.

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::canonical;
use super::lines::is_system_module;
use crate::diff::{self, Aspect, Change, Entry};

/// How a restore treats what is already on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Only create; an id that exists and differs is a conflict (a preflight finding), left
    /// alone; one equal to the snapshot's record is unchanged.
    Create,
    /// Create what is missing, update what differs.
    Upsert,
    /// Upsert, and delete what the snapshot lacks (within `--only`).
    Mirror,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Create => "create",
            Mode::Upsert => "upsert",
            Mode::Mirror => "mirror",
        }
    }
}

/// How many identities a `mirror` restore may delete (`--max-delete N|P%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDelete {
    /// At most this many.
    Count(u64),
    /// At most this share of the target's identities, in basis points (1 % = 100).
    Share(u32),
}

/// The brake when `--max-delete` is not given: 10 % of the target, and nothing at all when the
/// snapshot (within `--only`) holds no identity.
pub const DEFAULT_MAX_DELETE_PERCENT: u32 = 10;

impl std::str::FromStr for MaxDelete {
    type Err = String;

    /// `500` (a count) or `25%` / `12.5%` (a share of the target's identities).
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad =
            || format!("--max-delete {text:?}: write a count (500) or a share of the target (25%)");
        if let Some(p) = t.strip_suffix('%') {
            let (whole, frac) = p.trim().split_once('.').unwrap_or((p.trim(), ""));
            let whole: u32 = whole.parse().map_err(|_| bad())?;
            let frac2: String = frac.chars().chain("00".chars()).take(2).collect();
            if !frac.chars().all(|c| c.is_ascii_digit()) || frac.len() > 2 {
                return Err(bad());
            }
            let frac: u32 = frac2.parse().map_err(|_| bad())?;
            let bp = whole
                .checked_mul(100)
                .and_then(|w| w.checked_add(frac))
                .filter(|bp| *bp <= 10_000)
                .ok_or_else(|| format!("--max-delete {text:?}: a share is at most 100%"))?;
            return Ok(MaxDelete::Share(bp));
        }
        t.parse().map(MaxDelete::Count).map_err(|_| bad())
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Share(bp) if bp % 100 == 0 => write!(f, "{}%", bp / 100),
            MaxDelete::Share(bp) => write!(f, "{}.{:02}%", bp / 100, bp % 100),
        }
    }
}

/// Why a plan's deletes go past the brake (pure), or `None` when they do not: `deletes` of the
/// target's `target` identities, with `in_snapshot` identities in the snapshot (within scope).
/// Without an explicit `max`, the brake is [`DEFAULT_MAX_DELETE_PERCENT`] and an empty snapshot
/// may delete nothing.
pub fn brake(
    deletes: u64,
    target: u64,
    in_snapshot: u64,
    max: Option<MaxDelete>,
) -> Option<String> {
    if deletes == 0 {
        return None;
    }
    let within = |limit: MaxDelete| match limit {
        MaxDelete::Count(n) => deletes <= n,
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "u64 and u32 values widened to u128: both products stay below 2^96"
        )]
        MaxDelete::Share(bp) => u128::from(deletes) * 10_000 <= u128::from(bp) * u128::from(target),
    };
    match max {
        Some(limit) if within(limit) => None,
        Some(limit) => Some(format!("more than --max-delete {limit} allows")),
        None if in_snapshot == 0 => Some(
            "and the snapshot holds no identity (within --only) to restore: that looks like an \
             empty or wrong snapshot"
                .to_owned(),
        ),
        None if within(MaxDelete::Share(DEFAULT_MAX_DELETE_PERCENT * 100)) => None,
        None => Some(format!(
            "more than the {DEFAULT_MAX_DELETE_PERCENT} % a mirror may delete unless told"
        )),
    }
}

/// A snapshot record, as the plan sees it.
#[derive(Clone)]
pub struct SnapshotRecord {
    pub id: String,
    pub module_id: Option<String>,
    /// The verbatim export line (holds keys; never printed).
    pub line: Vec<u8>,
    /// Canonical form with keys.
    pub canonical: Value,
}

/// A live target record.
#[derive(Clone)]
pub struct TargetRecord {
    pub id: String,
    pub module_id: Option<String>,
    /// Canonical form; keys only when `keys_known`.
    pub canonical: Value,
    pub keys_known: bool,
    /// The identity etag (`deviceEtag` of a twin read), for `…IfMatchETag` writes.
    pub etag: Option<String>,
    /// The record's own `deviceScope` on the target (an edge device's scope, used to link children).
    pub own_scope: Option<String>,
}

impl std::fmt::Debug for SnapshotRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SnapshotRecord({})",
            key(&self.id, self.module_id.as_deref())
        )
    }
}

impl std::fmt::Debug for TargetRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TargetRecord({})",
            key(&self.id, self.module_id.as_deref())
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlanItem {
    pub id: String,
    pub module_id: Option<String>,
    pub action: Action,
    /// What differs (updates only).
    pub aspects: Vec<Aspect>,
    /// Index into the snapshot records (creates and updates).
    pub snapshot: Option<usize>,
    /// The target's identity etag (updates and deletes).
    pub target_etag: Option<String>,
}

impl PlanItem {
    pub fn key(&self) -> String {
        key(&self.id, self.module_id.as_deref())
    }
}

/// `id` for a device, `id/moduleId` for a module.
pub fn key(id: &str, module_id: Option<&str>) -> String {
    match module_id {
        Some(m) => format!("{id}/{m}"),
        None => id.to_owned(),
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub create: u64,
    pub update: u64,
    pub delete: u64,
    pub unchanged: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub items: Vec<PlanItem>,
    /// `create` mode: device ids that already exist on the target (left alone).
    pub conflicts: Vec<String>,
    /// Records equal on everything but keys, which the twin read could not compare.
    pub needs_keys: Vec<(String, Option<String>)>,
}

impl Plan {
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for i in &self.items {
            match i.action {
                Action::Create => c.create = c.create.saturating_add(1),
                Action::Update => c.update = c.update.saturating_add(1),
                Action::Delete => c.delete = c.delete.saturating_add(1),
                Action::Unchanged => c.unchanged = c.unchanged.saturating_add(1),
            }
        }
        c
    }

    /// `{"create", "update", "delete", "unchanged"}` (+ `conflicts` when there are any).
    pub fn counts_json(&self) -> Value {
        let c = self.counts();
        let mut v = json!({"create": c.create, "update": c.update, "delete": c.delete, "unchanged": c.unchanged});
        if !self.conflicts.is_empty() {
            v["conflicts"] = json!(self.conflicts.len());
        }
        v
    }

    /// The ids per action (`plan_items`, shown with `-v`); unchanged ones are not listed.
    pub fn items_json(&self) -> Value {
        let list = |a: Action| -> Vec<Value> {
            self.items
                .iter()
                .filter(|i| i.action == a)
                .map(|i| {
                    if i.aspects.is_empty() {
                        json!(i.key())
                    } else {
                        json!({"id": i.key(), "aspects": i.aspects.iter().map(|x| x.as_str()).collect::<Vec<_>>()})
                    }
                })
                .collect()
        };
        json!({
            "create": list(Action::Create),
            "update": list(Action::Update),
            "delete": list(Action::Delete),
            "conflicts": self.conflicts,
        })
    }
}

/// How many of the target's identities `plan` removes: its deletes, and the modules a deleted
/// device takes with it (system modules, the hub's own, are not counted).
pub fn identities_removed(plan: &Plan, target: &[TargetRecord]) -> u64 {
    let devices: std::collections::HashSet<&str> = plan
        .items
        .iter()
        .filter(|i| i.action == Action::Delete && i.module_id.is_none())
        .map(|i| i.id.as_str())
        .collect();
    let modules: std::collections::HashSet<(&str, &str)> = plan
        .items
        .iter()
        .filter(|i| i.action == Action::Delete)
        .filter_map(|i| Some((i.id.as_str(), i.module_id.as_deref()?)))
        .collect();
    target
        .iter()
        .filter(|r| !is_system_module(r.module_id.as_deref()))
        .filter(|r| {
            devices.contains(r.id.as_str())
                || r.module_id
                    .as_deref()
                    .is_some_and(|m| modules.contains(&(r.id.as_str(), m)))
        })
        .fold(0u64, |n, _| n.saturating_add(1))
}

/// Identities of `records` a restore may touch (system modules are the hub's own).
pub fn identities<'a>(ids: impl Iterator<Item = (&'a str, Option<&'a str>)>, scope: &Scope) -> u64 {
    ids.filter(|(id, m)| scope.includes(id, *m))
        .fold(0u64, |n, _| n.saturating_add(1))
}

/// Which records a restore touches: a `--only` glob on device ids; system modules never.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub only: Option<glob::Pattern>,
}

impl Scope {
    pub fn includes(&self, id: &str, module_id: Option<&str>) -> bool {
        !is_system_module(module_id) && self.only.as_ref().is_none_or(|p| p.matches(id))
    }
}

/// Plan a restore. Both slices must be sorted by `(id, moduleId)` (byte order, device first).
pub fn plan(
    snapshot: &[SnapshotRecord],
    target: &[TargetRecord],
    mode: Mode,
    scope: &Scope,
) -> Plan {
    let mut out = Plan::default();
    let (mut i, mut j) = (0, 0);
    // In `create` mode a conflicting device's modules are left alone with it.
    let mut conflicting_device: Option<&str> = None;
    loop {
        let ord = match (snapshot.get(i), target.get(j)) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => order(
                (&x.id, x.module_id.as_deref()),
                (&y.id, y.module_id.as_deref()),
            ),
        };
        #[allow(
            clippy::arithmetic_side_effects,
            reason = "i and j only step past records that get() found just above, so they stay within the lengths"
        )]
        match ord {
            Ordering::Less => {
                let x = &snapshot[i];
                if scope.includes(&x.id, x.module_id.as_deref())
                    && conflicting_device != Some(x.id.as_str())
                {
                    out.items.push(item(x, Action::Create, Some(i), None));
                }
                i += 1;
            }
            Ordering::Greater => {
                let y = &target[j];
                let device_deleted = out.items.last().is_some_and(|l| {
                    l.action == Action::Delete && l.module_id.is_none() && l.id == y.id
                });
                if mode == Mode::Mirror
                    && scope.includes(&y.id, y.module_id.as_deref())
                    && !device_deleted
                {
                    // Deleting a device deletes its modules: no separate module deletes then.
                    out.items.push(PlanItem {
                        id: y.id.clone(),
                        module_id: y.module_id.clone(),
                        action: Action::Delete,
                        aspects: Vec::new(),
                        snapshot: None,
                        target_etag: y.etag.clone(),
                    });
                }
                j += 1;
            }
            Ordering::Equal => {
                let (x, y) = (&snapshot[i], &target[j]);
                if scope.includes(&x.id, x.module_id.as_deref()) {
                    compare(&mut out, mode, (i, x), y, &mut conflicting_device);
                }
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn compare<'a>(
    out: &mut Plan,
    mode: Mode,
    (index, x): (usize, &'a SnapshotRecord),
    y: &TargetRecord,
    conflicting_device: &mut Option<&'a str>,
) {
    if mode == Mode::Create {
        // What is there already, equal to the snapshot (an earlier run of this restore that
        // failed half-way made it), is done, not a conflict: a re-run converges. Equal without
        // knowing the target's keys is settled by reading them (`needs_keys`), as for upsert.
        let equal = same(&x.canonical, &y.canonical, y.keys_known);
        let only_link_missing =
            !equal && missing_link_only(&x.canonical, &y.canonical, y.keys_known);
        if equal || only_link_missing {
            if !y.keys_known && canonical::has_keys(&x.canonical) {
                out.needs_keys.push((x.id.clone(), x.module_id.clone()));
            }
            // A child made without its edge link (the link pass never ran) gets the link: an
            // addition, never an overwrite.
            let action = if equal {
                Action::Unchanged
            } else {
                Action::Update
            };
            out.items.push(item(x, action, Some(index), y.etag.clone()));
        } else if x.module_id.is_none() {
            out.conflicts.push(x.id.clone());
            *conflicting_device = Some(x.id.as_str());
        }
        return;
    }
    // Most records of a restore are equal: a structural comparison settles those without the
    // diff's serialise-and-parse round trip, which only names the aspects of real differences.
    let found = if same(&x.canonical, &y.canonical, y.keys_known) {
        Vec::new()
    } else if y.keys_known {
        aspects(&x.canonical, &y.canonical)
    } else {
        aspects(&without_keys(&x.canonical), &y.canonical)
    };
    if found.is_empty() && !y.keys_known && canonical::has_keys(&x.canonical) {
        out.needs_keys.push((x.id.clone(), x.module_id.clone()));
    }
    let action = if found.is_empty() {
        Action::Unchanged
    } else {
        Action::Update
    };
    let mut it = item(x, action, Some(index), y.etag.clone());
    it.aspects = found;
    out.items.push(it);
}

/// Whether `have` is `want` but for the edge link `want` has and `have` lacks.
fn missing_link_only(want: &Value, have: &Value, keys: bool) -> bool {
    const LINK: &str = "deviceScope";
    if want.get(LINK).is_none_or(Value::is_null) || have.get(LINK).is_some_and(|v| !v.is_null()) {
        return false;
    }
    let (mut w, mut h) = (want.clone(), have.clone());
    for v in [&mut w, &mut h] {
        if let Some(map) = v.as_object_mut() {
            map.remove(LINK);
        }
    }
    same(&w, &h, keys)
}

fn item(
    x: &SnapshotRecord,
    action: Action,
    snapshot: Option<usize>,
    etag: Option<String>,
) -> PlanItem {
    PlanItem {
        id: x.id.clone(),
        module_id: x.module_id.clone(),
        action,
        aspects: Vec::new(),
        snapshot,
        target_etag: etag,
    }
}

/// Whether two canonical records are equal (`keys: false`: symmetric keys left out of it, as
/// [`without_keys`] would). Equal here means the diff finds no aspect.
fn same(want: &Value, have: &Value, keys: bool) -> bool {
    if keys {
        return want == have;
    }
    let (Value::Object(w), Value::Object(h)) = (want, have) else {
        return want == have;
    };
    w.len() == h.len()
        && w.iter().all(|(k, v)| match (k.as_str(), h.get(k)) {
            (_, None) => false,
            ("authentication", Some(other)) => same_auth_without_keys(v, other),
            (_, Some(other)) => v == other,
        })
}

fn same_auth_without_keys(want: &Value, have: &Value) -> bool {
    let (Value::Object(w), Value::Object(h)) = (want, have) else {
        return want == have;
    };
    let mut kept = w.iter().filter(|(k, _)| k.as_str() != "symmetricKey");
    kept.clone().count() == h.len() && kept.all(|(k, v)| h.get(k) == Some(v))
}

fn without_keys(canonical: &Value) -> Value {
    let mut v = canonical.clone();
    if let Some(Value::Object(a)) = v.get_mut("authentication") {
        a.remove("symmetricKey");
    }
    v
}

/// The aspects in which two canonical records differ (the diff's own classification).
pub fn aspects(want: &Value, have: &Value) -> Vec<Aspect> {
    let mut found = Vec::new();
    let result = diff::for_each_change(
        std::iter::once(Ok::<Entry, std::io::Error>(canonical::entry(have))),
        std::iter::once(Ok(canonical::entry(want))),
        |c| {
            if let Change::Changed(_, a) = c {
                found = a;
            }
        },
    );
    if result.is_err() {
        found = vec![Aspect::Other];
    }
    found
}

/// The vault's order: by id bytes, the device line (no module) before its modules.
pub fn order(a: (&str, Option<&str>), b: (&str, Option<&str>)) -> Ordering {
    (a.0.as_bytes(), a.1.map(str::as_bytes)).cmp(&(b.0.as_bytes(), b.1.map(str::as_bytes)))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]
mod brake_tests {
    use super::*;

    #[test]
    fn max_delete_reads_counts_and_shares() {
        assert_eq!("500".parse(), Ok(MaxDelete::Count(500)));
        assert_eq!("25%".parse(), Ok(MaxDelete::Share(2_500)));
        assert_eq!(" 12.5% ".parse(), Ok(MaxDelete::Share(1_250)));
        assert_eq!("100%".parse(), Ok(MaxDelete::Share(10_000)));
        for bad in ["", "-1", "101%", "1.234%", "ten", "5%%", "4294967296%"] {
            assert!(bad.parse::<MaxDelete>().is_err(), "{bad}");
        }
        assert_eq!(MaxDelete::Share(1_250).to_string(), "12.50%");
        assert_eq!(MaxDelete::Share(10_000).to_string(), "100%");
    }

    #[test]
    fn a_mirror_that_would_empty_the_hub_is_braked() {
        // The review: a one-record snapshot, 1,800 identities on the target, 1,800 deletes.
        assert!(brake(1_800, 1_800, 1, None).is_some());
        // 10 % by default; more needs to be asked for.
        assert_eq!(brake(180, 1_800, 1_700, None), None);
        assert!(brake(181, 1_800, 1_700, None).is_some());
        assert_eq!(brake(181, 1_800, 1_700, Some(MaxDelete::Count(181))), None);
        assert!(brake(182, 1_800, 1_700, Some(MaxDelete::Count(181))).is_some());
        assert_eq!(brake(1_800, 1_800, 1, Some(MaxDelete::Share(10_000))), None);
        // An empty snapshot deletes nothing unless told, even one identity.
        assert!(brake(1, 1_000, 0, None).unwrap().contains("no identity"));
        assert_eq!(brake(1, 1_000, 0, Some(MaxDelete::Count(1))), None);
        assert_eq!(brake(0, 0, 0, None), None);
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

    fn snap(id: &str, module: Option<&str>, tag: &str) -> SnapshotRecord {
        let mut line = json!({"id": id, "status": "enabled", "tags": {"t": tag},
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "cHJp", "secondaryKey": "c2Vj"}}});
        if let Some(m) = module {
            line["moduleId"] = json!(m);
        }
        SnapshotRecord {
            id: id.into(),
            module_id: module.map(str::to_owned),
            line: serde_json::to_vec(&line).unwrap(),
            canonical: canonical::from_export_line(&line, true),
        }
    }

    fn live(id: &str, module: Option<&str>, tag: &str) -> TargetRecord {
        let mut twin = json!({"deviceId": id, "status": "enabled", "authenticationType": "sas", "tags": {"t": tag}, "deviceEtag": format!("etag-{id}")});
        if let Some(m) = module {
            twin["moduleId"] = json!(m);
        }
        TargetRecord {
            id: id.into(),
            module_id: module.map(str::to_owned),
            canonical: canonical::from_twin(&twin),
            keys_known: false,
            etag: Some(format!("etag-{id}")),
            own_scope: None,
        }
    }

    fn summary(p: &Plan) -> Vec<String> {
        p.items
            .iter()
            .filter(|i| i.action != Action::Unchanged)
            .map(|i| format!("{} {}", i.action.as_str(), i.key()))
            .collect()
    }

    fn fixture() -> (Vec<SnapshotRecord>, Vec<TargetRecord>) {
        let s = vec![
            snap("a", None, "1"),
            snap("a", Some("$edgeAgent"), "1"),
            snap("a", Some("m"), "1"),
            snap("b", None, "1"),
            snap("c", None, "1"),
        ];
        let t = vec![
            live("a", None, "1"),
            live("a", Some("$edgeHub"), "9"),
            live("b", None, "2"),
            live("x", None, "1"),
            live("x", Some("m"), "1"),
        ];
        (s, t)
    }

    #[test]
    fn modes_decide_what_happens_to_each_record() {
        let (s, t) = fixture();
        let all = Scope::default();
        let upsert = plan(&s, &t, Mode::Upsert, &all);
        assert_eq!(summary(&upsert), ["create a/m", "update b", "create c"]);
        assert_eq!(upsert.counts().unchanged, 1);
        assert_eq!(upsert.needs_keys, [("a".to_owned(), None)]);
        assert_eq!(upsert.items[2].target_etag.as_deref(), Some("etag-b"));

        let mirror = plan(&s, &t, Mode::Mirror, &all);
        assert_eq!(
            summary(&mirror),
            ["create a/m", "update b", "create c", "delete x"],
            "x/m goes with x; system modules are never touched"
        );

        // create: b differs (a conflict, left alone); a is equal but for keys not read yet
        // (read them, then plan again); its missing module is created.
        let create = plan(&s, &t, Mode::Create, &all);
        assert_eq!(summary(&create), ["create a/m", "create c"]);
        assert_eq!(create.conflicts, ["b"]);
        assert_eq!(create.needs_keys, [("a".to_owned(), None)]);
    }

    /// A re-run of a `create` restore that failed half-way converges: what the first run made,
    /// equal to the snapshot keys included, is unchanged; an id whose keys differ is a conflict.
    #[test]
    fn create_counts_what_an_earlier_run_made_as_done() {
        let s = vec![snap("a", None, "1"), snap("b", None, "1")];
        let with_keys = |id: &str, key: &str| {
            let mut t = live(id, None, "1");
            t.canonical = s.iter().find(|x| x.id == id).unwrap().canonical.clone();
            if key != "same" {
                t.canonical["authentication"]["symmetricKey"]["primaryKey"] = json!(key);
            }
            t.keys_known = true;
            t
        };
        let t = vec![
            with_keys("a", "same"),
            with_keys("b", "c2FtZSBzaXplIGtleQ=="),
        ];
        let create = plan(&s, &t, Mode::Create, &Scope::default());
        assert_eq!(summary(&create), Vec::<String>::new());
        assert_eq!(create.counts().unchanged, 1);
        assert_eq!(create.conflicts, ["b"], "another key is another device's");
        assert!(create.needs_keys.is_empty());
    }

    /// A child the failed run created before its link pass: in `create` its missing link is
    /// added (an update of nothing else); a child linked elsewhere is a conflict.
    #[test]
    fn create_adds_a_missing_edge_link_and_nothing_else() {
        let mut child = snap("leaf", None, "1");
        child.canonical["deviceScope"] = json!("gw");
        let mut bare = live("leaf", None, "1");
        bare.canonical = child.canonical.clone();
        bare.canonical["deviceScope"] = Value::Null;
        bare.keys_known = true;
        let create = plan(
            std::slice::from_ref(&child),
            std::slice::from_ref(&bare),
            Mode::Create,
            &Scope::default(),
        );
        assert_eq!(summary(&create), ["update leaf"]);
        assert!(create.conflicts.is_empty());
        let mut elsewhere = bare.clone();
        elsewhere.canonical["deviceScope"] = json!("other-gw");
        let create = plan(&[child], &[elsewhere], Mode::Create, &Scope::default());
        assert_eq!(create.conflicts, ["leaf"]);
    }

    #[test]
    fn only_limits_creates_updates_and_deletes() {
        let (s, t) = fixture();
        let only = Scope {
            only: Some(glob::Pattern::new("[bx]*").unwrap()),
        };
        let mirror = plan(&s, &t, Mode::Mirror, &only);
        assert_eq!(summary(&mirror), ["update b", "delete x"]);
    }

    #[test]
    fn the_quick_comparison_agrees_with_the_diff() {
        let (s, t) = fixture();
        let keyed = |t: &TargetRecord, key: &str| TargetRecord {
            canonical: canonical::with_keys(
                t.canonical.clone(),
                &json!({"symmetricKey": {"primaryKey": key, "secondaryKey": "c2Vj"}}),
            ),
            keys_known: true,
            ..t.clone()
        };
        let cases = [
            (&s[0], t[0].clone()),
            (&s[0], keyed(&t[0], "cHJp")),
            (&s[0], keyed(&t[0], "b3RoZXI=")),
            (&s[3], t[2].clone()),
            (&s[3], keyed(&t[2], "cHJp")),
            (&s[0], live("a", None, "1")),
        ];
        for (x, y) in cases {
            let slow = if y.keys_known {
                aspects(&x.canonical, &y.canonical)
            } else {
                aspects(&without_keys(&x.canonical), &y.canonical)
            };
            assert_eq!(
                same(&x.canonical, &y.canonical, y.keys_known),
                slow.is_empty(),
                "{x:?} vs {y:?}: {slow:?}"
            );
        }
        // An x509 record on one side and a SAS one on the other differ without keys too.
        let mut x509 = t[0].clone();
        x509.canonical["authentication"]["type"] = json!("selfSigned");
        assert!(!same(&s[0].canonical, &x509.canonical, false));
    }

    #[test]
    fn known_keys_are_compared() {
        let (s, mut t) = fixture();
        t[0] = TargetRecord {
            canonical: canonical::with_keys(
                t[0].canonical.clone(),
                &json!({"symmetricKey": {"primaryKey": "b3RoZXI=", "secondaryKey": "c2Vj"}}),
            ),
            keys_known: true,
            ..t[0].clone()
        };
        let p = plan(&s, &t, Mode::Upsert, &Scope::default());
        assert_eq!(p.items[0].action, Action::Update);
        assert_eq!(p.items[0].aspects, [Aspect::Keys]);
        assert!(p.needs_keys.is_empty());
    }
}
