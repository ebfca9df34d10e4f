//! Use case: forget — apply retention policies to a store: remove forgotten snapshots, orphans
//! (snapshots that never got their manifest) and writers' temporaries.
//!
//! Split into a pure part and an I/O part so that `forget --dry-run --at TIME` shows exactly what a
//! real run would do: [`scan`] reads the store, [`plan`] and [`orphans_due`] decide (pure, given
//! `now`), [`apply`] deletes.
//!
//! Deletion order matters because the manifest is the commit point (docs/vault-format.md): a forgotten
//! snapshot loses its **manifests first**, so an interrupted forget leaves an invisible orphan
//! (which the next run removes), never a visible snapshot with missing data.
//!
//! Trust: retention counts only snapshots a reader accepts (signed by a trusted signer, or with
//! `--allow-unsigned` a format 1 one), so a forged snapshot cannot take a real one's slot. The
//! others are listed as untrusted and removed only when asked (`--forget-untrusted`).
//!
//! What may be deleted is narrow on purpose (a review pointed `forget --store ~` at a home folder):
//! only objects with hubvault's own names inside `<hub>/<snapshot-id>/` folders, and only in a
//! location that is a hubvault store — it carries the store marker or at least one valid
//! manifest. Anything else is listed as unknown and left alone.
//!
//! Two clocks: retention decides at `now` (`--at` shows any moment), but the ages of orphans and
//! temporaries are measured on the store's own clock ([`Store::now`]), never on `--at`: a
//! decision time in the future must not take a backup in flight for an orphan. A snapshot whose
//! manifest lists objects that are missing (or of the wrong size) is reported and never counted
//! by retention, so it cannot take a good snapshot's place.
//!
//! Must not: know clap, read the local clock (the caller passes `now`), delete anything it
//! could not classify (an unreadable manifest is reported and left alone).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::diagnostic::{Diagnostic, fix_text};
use crate::policy::{self, DEFAULT_ORPHAN_GRACE, Policy};
use crate::repo::ReadPolicy;
use crate::snapshot::Manifest;
use crate::snapshot::catalog::{self, FileKind, Read};
use crate::store::{self, ObjectMeta, Store};

pub use crate::policy::SnapshotRef;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store error while forgetting: {0}")]
    Store(#[from] store::Error),
    #[error(
        "{store} is not a hubvault store: it has no {marker} marker and no snapshot manifest, so \
         forget deletes nothing there. {}",
        fix_text(self)
    )]
    NotAStore { store: String, marker: &'static str },
    #[error(
        "{failed} of {total} deletions failed (first: {first}); the rest was done. {}",
        fix_text(self)
    )]
    Incomplete {
        failed: usize,
        total: usize,
        first: String,
    },
    /// `store init` on a location that holds objects hubvault did not write and no snapshot.
    #[error(
        "{store} holds {objects} object(s) hubvault did not write and no hubvault snapshot, so it \
         is not marked as a store; {}",
        fix_text(self)
    )]
    ForeignObjects { store: String, objects: usize },
}

impl Diagnostic for Error {
    fn code(&self) -> &'static str {
        match self {
            Error::Store(e) => e.code(),
            Error::NotAStore { .. } => "store_not_marked",
            Error::Incomplete { .. } => "forget_incomplete",
            Error::ForeignObjects { .. } => "store_foreign_objects",
        }
    }

    fn fix(&self) -> Option<String> {
        match self {
            Error::Store(e) => e.fix(),
            Error::NotAStore { store, .. } => Some(format!(
                "Check --store (or `store` in hubvault.toml); if this really is a hubvault store, \
                 mark it with `hubvault store init --store {store}`"
            )),
            Error::Incomplete { .. } => Some("Run `hubvault forget` again: it resumes".to_owned()),
            Error::ForeignObjects { .. } => Some(
                "check --store (or `store` in hubvault.toml): a store is marked by its first backup"
                    .to_owned(),
            ),
        }
    }
}

/// What the store holds, as forget sees it.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Committed snapshots (those with a readable manifest).
    pub snapshots: Vec<SnapshotRef>,
    /// Snapshot folders without a manifest.
    pub orphans: Vec<Orphan>,
    /// Things forget will not touch, and why (an unreadable manifest, a misplaced one, a
    /// snapshot whose objects are missing).
    pub problems: Vec<String>,
    /// Objects hubvault did not write (not a snapshot folder, or a name of someone else's):
    /// listed, never deleted.
    pub unknown: Vec<String>,
    /// Whether the store carries the marker.
    pub marked: bool,
    /// Snapshots whose manifest is fine but whose objects are missing or have the wrong size:
    /// not counted by retention, not deleted.
    pub incomplete: Vec<SnapshotRef>,
    /// Snapshots that are not trusted (forged, an untrusted signer, unsigned without
    /// `--allow-unsigned`): not counted by retention.
    pub untrusted: Vec<Untrusted>,
    /// Uncommitted generations inside snapshots in use (see `other_generations`): removed
    /// like orphans.
    pub generations: Vec<Orphan>,
    /// Objects of snapshot folders of hubs out of a scoped scan's scope (not read).
    pub out_of_scope: usize,
}

/// A `<hub>/<id>/` folder with data objects but no manifest: an interrupted backup or forget, or a
/// backup still running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub hub: String,
    pub id: String,
    pub objects: Vec<String>,
    /// The newest object's modification time: how long ago anything was written there.
    pub last_modified: DateTime<Utc>,
    /// Set when the folder is a snapshot in use and these are the objects of one of its
    /// generations that never got a manifest.
    pub generation: Option<u64>,
}

impl Orphan {
    pub fn path(&self) -> String {
        match self.generation {
            None => format!("{}/{}", self.hub, self.id),
            Some(g) => format!("{}/{} (uncommitted generation {g})", self.hub, self.id),
        }
    }
}

/// The retention verdict for a store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForgetPlan {
    /// Kept snapshots with the reasons (each prefixed by the policy that kept it).
    pub keep: Vec<(SnapshotRef, Vec<String>)>,
    pub forget: Vec<SnapshotRef>,
}

/// Decide which snapshots to keep. Each hub is judged by the policies whose `hubs` match it; a
/// snapshot is kept if any of them keeps it. A hub no policy covers keeps everything: forgetting
/// must be asked for, never the default. Pure.
pub fn plan(snapshots: &[SnapshotRef], policies: &[Policy], now: DateTime<Utc>) -> ForgetPlan {
    let mut by_hub: BTreeMap<&str, Vec<SnapshotRef>> = BTreeMap::new();
    for s in snapshots {
        by_hub.entry(&s.hub).or_default().push(s.clone());
    }
    let mut out = ForgetPlan::default();
    for (hub, list) in by_hub {
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); list.len()];
        let applicable: Vec<&Policy> = policies.iter().filter(|p| p.covers(hub)).collect();
        if applicable.is_empty() {
            for r in &mut reasons {
                r.push(format!("no policy applies to hub {hub}"));
            }
        }
        for p in applicable {
            for (i, d) in policy::decide(&list, &p.file.retention, now)
                .into_iter()
                .enumerate()
            {
                reasons[i].extend(d.reasons.into_iter().map(|r| format!("{}: {r}", p.name)));
            }
        }
        for (s, r) in list.into_iter().zip(reasons) {
            if r.is_empty() {
                out.forget.push(s);
            } else {
                out.keep.push((s, r));
            }
        }
    }
    let order = |s: &SnapshotRef| (s.hub.clone(), s.created, s.id.clone());
    out.keep.sort_by_key(|(s, _)| order(s));
    out.forget.sort_by_key(order);
    out
}

/// The grace period for orphans of `hub`: the longest among the policies covering it (the most
/// careful one wins), or the default when none does.
pub fn orphan_grace(hub: &str, policies: &[Policy]) -> policy::Span {
    longest(
        policies
            .iter()
            .filter(|p| p.covers(hub))
            .map(|p| p.file.orphan_grace),
    )
    .unwrap_or(DEFAULT_ORPHAN_GRACE)
}

/// Orphans old enough to remove at `now`: nothing written there for longer than the grace period,
/// so it cannot be a backup in flight. Pure.
pub fn orphans_due(orphans: &[Orphan], policies: &[Policy], now: DateTime<Utc>) -> Vec<Orphan> {
    orphans
        .iter()
        .filter(|o| {
            orphan_grace(&o.hub, policies)
                .before(now)
                .is_some_and(|limit| o.last_modified < limit)
        })
        .cloned()
        .collect()
}

/// The longest grace of all policies (or the default): temporaries are not tied to a hub.
pub fn temporaries_grace(policies: &[Policy]) -> policy::Span {
    longest(
        policies
            .iter()
            .map(|p| p.file.orphan_grace)
            .chain([DEFAULT_ORPHAN_GRACE]),
    )
    .unwrap_or(DEFAULT_ORPHAN_GRACE)
}

/// The longest of some spans (calendar spans compare by how far back they reach from a fixed
/// moment; one reaching past the representable range is the longest).
fn longest(spans: impl Iterator<Item = policy::Span>) -> Option<policy::Span> {
    spans.min_by_key(|g| g.before(DateTime::UNIX_EPOCH))
}

/// Which snapshots count as history (see [`crate::repo::ReadPolicy`]), and whether those that
/// do not are removed too.
#[derive(Debug, Clone, Default)]
pub struct TrustRules {
    pub read: ReadPolicy,
    /// Remove snapshots that are not trusted (otherwise they are only listed).
    pub forget_untrusted: bool,
}

/// A committed snapshot that is not trusted: listed, never counted by retention, removed only
/// when asked ([`TrustRules::forget_untrusted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untrusted {
    pub snapshot: SnapshotRef,
    /// Why (`bad signature: …`, `signed by hvsig1…, which is not trusted here`, `unsigned`).
    pub trust: String,
}

/// Read the store: committed snapshots (from their manifests, judged by `read`), orphans, and
/// what is not ours.
pub async fn scan(store: &dyn Store, read: &ReadPolicy) -> Result<Inventory, Error> {
    scan_scoped(store, read, &|_| true).await
}

/// [`scan`] of the hubs `in_scope` accepts (by the name they are stored under): one listing of
/// the store, but only their manifests are read and checked. A scheduled run of one hub reads
/// its own snapshots, not every hub's.
pub async fn scan_scoped(
    store: &dyn Store,
    read: &ReadPolicy,
    in_scope: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Inventory, Error> {
    let mut folders: BTreeMap<(String, String), Vec<ObjectMeta>> = BTreeMap::new();
    let mut inv = Inventory::default();
    for meta in store.list("").await? {
        if meta.name == catalog::MARKER {
            inv.marked = true;
            continue;
        }
        // The scheduler's leases and status records (`hubvault serve`): hubvault's, not snapshots.
        if meta.name.starts_with(catalog::SERVICE_PREFIX) {
            continue;
        }
        let mut parts = meta.name.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(hub), Some(id), Some(file), None)
                if catalog::check_hub(hub).is_ok()
                    && catalog::is_snapshot_id(id)
                    && catalog::is_own_object(file) =>
            {
                // Another hub's snapshot: neither read nor reported (nor anything of it deleted).
                if !in_scope(hub) {
                    inv.out_of_scope = inv.out_of_scope.saturating_add(1);
                    continue;
                }
                folders
                    .entry((hub.to_owned(), id.to_owned()))
                    .or_default()
                    .push(meta);
            }
            _ => inv.unknown.push(meta.name),
        }
    }
    // A snapshot-id folder that also holds something not ours is not a backup's leftover.
    let foreign: std::collections::BTreeSet<(String, String)> = inv
        .unknown
        .iter()
        .filter_map(|n| {
            let mut p = n.splitn(3, '/');
            Some((p.next()?.to_owned(), p.next()?.to_owned(), p.next()?))
        })
        .map(|(h, i, _)| (h, i))
        .collect();
    let leave = "left untouched; check it with `hubvault verify`";
    for ((hub, id), objects) in folders {
        // (A committed snapshot stays one whatever else its folder holds; only our objects go.)
        let read_result = catalog::read_snapshot(store, &hub, &id, &objects, &read.trusted).await;
        match read_result {
            Ok(Read::Snapshot(m)) => {
                let Some(s) = snapshot_ref(&m) else {
                    inv.problems.push(format!(
                        "{hub}/{id}: created {:?} is not RFC 3339; {leave}",
                        m.created
                    ));
                    continue;
                };
                if !m.trust.accepted(read.allow_unsigned) {
                    inv.untrusted.push(Untrusted {
                        snapshot: s,
                        trust: m.trust.describe(),
                    });
                } else if let Some(what) = catalog::missing_objects(&m, &objects) {
                    inv.problems.push(format!(
                        "{hub}/{id}: {what}; not counted by retention and left untouched: check it with `hubvault verify`"
                    ));
                    inv.incomplete.push(s);
                } else {
                    inv.generations.extend(other_generations(&m, &objects));
                    inv.snapshots.push(s);
                }
            }
            Ok(Read::Unreadable(u)) => {
                inv.problems
                    .push(format!("{}: {}; {leave}", u.name, u.error()));
            }
            Ok(Read::NoManifest) if foreign.contains(&(hub.clone(), id.clone())) => {
                inv.unknown.extend(objects.into_iter().map(|m| m.name));
            }
            Ok(Read::NoManifest) => {
                let last_modified = objects
                    .iter()
                    .map(|m| to_chrono(m.last_modified))
                    .max()
                    .unwrap_or(DateTime::<Utc>::MIN_UTC);
                inv.orphans.push(Orphan {
                    hub,
                    id,
                    objects: objects.into_iter().map(|m| m.name).collect(),
                    last_modified,
                    generation: None,
                });
            }
            Err(e) => {
                inv.problems
                    .push(format!("{hub}/{id}: cannot read ({e}); {leave}"));
            }
        }
    }
    inv.unknown.sort();
    Ok(inv)
}

/// The retention fields of a manifest.
fn snapshot_ref(m: &Manifest) -> Option<SnapshotRef> {
    let created = DateTime::parse_from_rfc3339(&m.created)
        .ok()?
        .with_timezone(&Utc);
    Some(SnapshotRef {
        id: m.id.clone(),
        hub: m.hub.clone(),
        created,
    })
}

/// In the folder of `m` (a snapshot in use), the objects of generations without a manifest: a
/// rotation or a copy that was killed before it committed. Like an orphan, they go once nothing
/// was written there for the grace period. Generations that have a manifest are left alone.
fn other_generations(m: &Manifest, objects: &[ObjectMeta]) -> Vec<Orphan> {
    let generation_of = |name: &str| match name.rsplit('/').next().and_then(catalog::file_kind) {
        Some(FileKind::Manifest(g) | FileKind::Signature(g) | FileKind::Data(g)) => Some(g),
        _ => None,
    };
    let committed: std::collections::BTreeSet<u64> = objects
        .iter()
        .filter_map(
            |o| match o.name.rsplit('/').next().and_then(catalog::file_kind) {
                Some(FileKind::Manifest(g)) => Some(g),
                _ => None,
            },
        )
        .collect();
    let mut by_generation: BTreeMap<u64, Vec<&ObjectMeta>> = BTreeMap::new();
    for o in objects {
        if let Some(g) = generation_of(&o.name)
            && Some(g) != m.generation
            && !committed.contains(&g)
        {
            by_generation.entry(g).or_default().push(o);
        }
    }
    by_generation
        .into_iter()
        .map(|(g, list)| Orphan {
            generation: Some(g),
            hub: m.hub.clone(),
            id: m.id.clone(),
            objects: list.iter().map(|o| o.name.clone()).collect(),
            last_modified: list
                .iter()
                .map(|o| to_chrono(o.last_modified))
                .max()
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
        })
        .collect()
}

fn to_chrono(t: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn to_time(t: DateTime<Utc>) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.timestamp())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// What [`apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub snapshots_removed: usize,
    pub orphans_removed: usize,
    pub objects_removed: usize,
    pub temporaries_removed: usize,
}

/// Delete forgotten snapshots (manifests first, then the rest), due orphans, and temporaries
/// older than `temporaries_before`. Keeps going past a failed deletion and reports them all at
/// the end: what is left is an orphan the next run removes.
pub async fn apply(
    store: &dyn Store,
    forget: &[SnapshotRef],
    orphans: &[Orphan],
    temporaries_before: DateTime<Utc>,
) -> Result<Applied, Error> {
    let mut done = Applied::default();
    let mut failures: Vec<String> = Vec::new();
    let mut total: usize = 0;
    for s in forget {
        let prefix = format!("{}/{}/", s.hub, s.id);
        // Only hubvault's own objects: anything else in the folder is someone else's.
        let (manifests, rest): (Vec<String>, Vec<String>) = store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|m| m.name)
            .filter(|n| n.strip_prefix(&prefix).is_some_and(catalog::is_own_object))
            .partition(|n| {
                matches!(
                    n.rsplit('/').next().and_then(catalog::file_kind),
                    Some(FileKind::Manifest(_) | FileKind::ManifestV1)
                )
            });
        let before = failures.len();
        for name in manifests {
            total = total.saturating_add(1);
            match store.delete(&name).await {
                Ok(()) => done.objects_removed = done.objects_removed.saturating_add(1),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        if failures.len() > before {
            // With a manifest left the snapshot may still be visible: do not touch its data.
            continue;
        }
        done.snapshots_removed = done.snapshots_removed.saturating_add(1);
        for name in rest {
            total = total.saturating_add(1);
            match store.delete(&name).await {
                Ok(()) => done.objects_removed = done.objects_removed.saturating_add(1),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    for o in orphans {
        let before = failures.len();
        for name in &o.objects {
            total = total.saturating_add(1);
            match store.delete(name).await {
                Ok(()) => done.objects_removed = done.objects_removed.saturating_add(1),
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        if failures.len() == before {
            done.orphans_removed = done.orphans_removed.saturating_add(1);
        }
    }
    done.temporaries_removed = store.sweep_temporaries(to_time(temporaries_before)).await?;
    match failures.first() {
        None => Ok(done),
        Some(first) => Err(Error::Incomplete {
            failed: failures.len(),
            total,
            first: first.clone(),
        }),
    }
}

/// The outcome of one `forget` run (or dry run): the decisions and what was removed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub plan: ForgetPlan,
    /// Orphans old enough to remove (removed unless dry run).
    pub orphans: Vec<Orphan>,
    /// Orphans still inside their grace period (maybe a backup in flight): left alone.
    pub orphans_waiting: Vec<Orphan>,
    /// Things forget would not touch, and why.
    pub problems: Vec<String>,
    /// Objects hubvault did not write: left alone.
    pub unknown: Vec<String>,
    /// Snapshots that are not trusted: not counted by retention; removed (unless dry run) when
    /// `removes_untrusted`.
    pub untrusted: Vec<Untrusted>,
    pub removes_untrusted: bool,
    pub dry_run: bool,
    /// The decision time (`--at`, or now).
    pub at: Option<DateTime<Utc>>,
    /// The store's clock, on which orphans' ages were judged.
    pub store_clock: Option<DateTime<Utc>>,
    /// What was removed; `None` on a dry run.
    pub applied: Option<Applied>,
}

impl Report {
    /// `{"keep": [ids], "forget": [ids]}` (the stable shape) plus `orphans`, `orphans_waiting`
    /// (`hub/id`), `reasons` (id → why kept), `problems`, `dry_run` and `removed`.
    pub fn to_json(&self) -> serde_json::Value {
        let ids = |v: &[SnapshotRef]| v.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        let kept: Vec<SnapshotRef> = self.plan.keep.iter().map(|(s, _)| s.clone()).collect();
        let reasons: serde_json::Map<String, serde_json::Value> = self
            .plan
            .keep
            .iter()
            .map(|(s, r)| (s.id.clone(), serde_json::json!(r)))
            .collect();
        serde_json::json!({
            "keep": ids(&kept),
            "forget": ids(&self.plan.forget),
            "orphans": self.orphans.iter().map(Orphan::path).collect::<Vec<_>>(),
            "orphans_waiting": self.orphans_waiting.iter().map(Orphan::path).collect::<Vec<_>>(),
            "reasons": reasons,
            "problems": self.problems,
            "unknown": self.unknown,
            "untrusted": self.untrusted.iter().map(|u| serde_json::json!({
                "id": u.snapshot.id, "hub": u.snapshot.hub, "trust": u.trust,
                "removed": self.removes_untrusted,
            })).collect::<Vec<_>>(),
            "dry_run": self.dry_run,
            "at": self.at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "removed": self.applied.as_ref().map(|a| serde_json::json!({
                "snapshots": a.snapshots_removed,
                "orphans": a.orphans_removed,
                "objects": a.objects_removed,
                "temporaries": a.temporaries_removed,
            })),
        })
    }
}

/// Scan, decide at `now`, and (unless `dry_run`) delete. The whole use case in one call.
/// Retention decides at `now`; orphans and temporaries are aged on the store's clock.
pub async fn run(
    store: &dyn Store,
    policies: &[Policy],
    now: DateTime<Utc>,
    dry_run: bool,
    trust: &TrustRules,
) -> Result<Report, Error> {
    run_scoped(store, policies, now, dry_run, trust, &|_| true).await
}

/// [`run`] for the snapshots and orphans of the hubs `in_scope` accepts (by the name they are
/// stored under): what a scheduled run of one hub does after its backup. Every policy given
/// still applies to them, so pass every policy of the store.
pub async fn run_scoped(
    store: &dyn Store,
    policies: &[Policy],
    now: DateTime<Utc>,
    dry_run: bool,
    trust: &TrustRules,
    in_scope: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Report, Error> {
    let mut inventory = scan_scoped(store, &trust.read, in_scope).await?;
    if !inventory.marked
        && inventory.out_of_scope == 0
        && inventory.snapshots.is_empty()
        && inventory.incomplete.is_empty()
        && inventory.untrusted.is_empty()
    {
        return Err(Error::NotAStore {
            store: store.location(),
            marker: catalog::MARKER,
        });
    }
    inventory.snapshots.retain(|s| in_scope(&s.hub));
    inventory.orphans.retain(|o| in_scope(&o.hub));
    inventory.generations.retain(|o| in_scope(&o.hub));
    inventory.untrusted.retain(|u| in_scope(&u.snapshot.hub));
    let clock = to_chrono(store.now().await?);
    let plan = plan(&inventory.snapshots, policies, now);
    inventory.orphans.append(&mut inventory.generations);
    let orphans = orphans_due(&inventory.orphans, policies, clock);
    let orphans_waiting = inventory
        .orphans
        .iter()
        .filter(|o| !orphans.contains(o))
        .cloned()
        .collect();
    let applied = if dry_run {
        None
    } else {
        let temporaries_before = temporaries_grace(policies)
            .before(clock)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut forget = plan.forget.clone();
        if trust.forget_untrusted {
            forget.extend(inventory.untrusted.iter().map(|u| u.snapshot.clone()));
        }
        Some(apply(store, &forget, &orphans, temporaries_before).await?)
    };
    Ok(Report {
        plan,
        orphans,
        orphans_waiting,
        problems: inventory.problems,
        unknown: inventory.unknown,
        untrusted: inventory.untrusted,
        removes_untrusted: trust.forget_untrusted,
        dry_run,
        at: Some(now),
        store_clock: Some(clock),
        applied,
    })
}

#[cfg(test)]
#[path = "forget_tests.rs"]
mod tests;
