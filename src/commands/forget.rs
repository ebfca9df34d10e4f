//! `forget`: apply retention policies.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hubvault::config::Config;
use hubvault::forget;
use hubvault::policy::Policy;

use super::{Result, open_store, read_policy};
use crate::Outcome;
use crate::cli::{ForgetArgs, Global};

/// Where `forget` looks for policies when no `--policy` is given.
const DEFAULT_POLICY_DIR: &str = "policies";

pub async fn run(config: &Config, global: &Global, args: &ForgetArgs) -> Result<Outcome> {
    let now = match &args.at {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                hubvault::Error::usage(
                    format!("--at {text:?} is not an RFC 3339 time ({e})"),
                    "write e.g. 2026-12-01T02:00:00Z",
                )
            })?
            .with_timezone(&chrono::Utc),
        None => chrono::Utc::now(),
    };
    let location = config.store(global.store.as_deref());
    let mut policies = load_policies(&args.policy)?;
    for p in &mut policies {
        p.bind_hubs(|name| hubvault::services::hub_names(name, config));
    }
    let loaded = policies.len();
    policies.retain(|p| p.applies_to_store(&location));
    let other = loaded.saturating_sub(policies.len());
    if other > 0 {
        eprintln!("{other} of {loaded} policies are for other stores and were not applied");
    }
    let store = open_store(config, global)?;
    let trust = forget::TrustRules {
        read: read_policy(config, global, args.trust.allow_unsigned).await?,
        forget_untrusted: args.forget_untrusted,
    };
    let report = forget::run(store.as_ref(), &policies, now, args.dry_run, &trust).await?;
    let human = render_forget(&report, global.verbose > 0);
    let mut outcome = Outcome::ok(report.to_json(), human);
    outcome.warnings = policies
        .iter()
        .flat_map(|p| p.warnings.iter().map(ToString::to_string))
        .collect();
    Ok(outcome)
}

/// `store init`: mark a store that already holds valid snapshots (or an empty location, to start
/// one); refuse a location that holds other things and no snapshot.
pub async fn store_init(config: &Config, global: &Global) -> Result<Outcome> {
    let store = open_store(config, global)?;
    let inventory =
        forget::scan(store.as_ref(), &read_policy(config, global, false).await?).await?;
    let location = store.location();
    // Every committed snapshot, trusted or not, shows the location is hubvault's.
    let snapshots = inventory
        .snapshots
        .len()
        .saturating_add(inventory.incomplete.len())
        .saturating_add(inventory.untrusted.len());
    let json = |marked: bool| serde_json::json!({"store": location, "marked": marked, "snapshots": snapshots});
    if inventory.marked {
        let human = format!("{location} is already marked as a hubvault store\n");
        return Ok(Outcome::ok(json(false), human));
    }
    // Only hubvault's own objects (snapshots, or a first backup's leftovers), or nothing.
    if snapshots == 0 && !inventory.unknown.is_empty() {
        return Err(forget::Error::ForeignObjects {
            store: location,
            objects: inventory.unknown.len(),
        }
        .into());
    }
    hubvault::snapshot::catalog::mark(store.as_ref(), time::OffsetDateTime::now_utc()).await?;
    let human = format!(
        "marked {location} as a hubvault store ({snapshots} snapshot(s) in it); `forget` may now clean it\n"
    );
    Ok(Outcome::ok(json(true), human))
}

/// `--policy` files or folders, else every `policies/*.toml`.
fn load_policies(paths: &[PathBuf]) -> Result<Vec<Policy>> {
    if paths.is_empty() {
        return Ok(Policy::load_dir(Path::new(DEFAULT_POLICY_DIR))?);
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            out.extend(Policy::load_dir(p)?);
        } else {
            out.push(Policy::load(p)?);
        }
    }
    Ok(out)
}

fn render_forget(report: &forget::Report, verbose: bool) -> String {
    let mut out = String::new();
    for (s, reasons) in &report.plan.keep {
        let why = if verbose {
            reasons.join("; ")
        } else {
            reasons.first().cloned().unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "keep    {}/{}  {}  {why}",
            s.hub,
            s.id,
            s.created.to_rfc3339()
        );
    }
    for s in &report.plan.forget {
        let _ = writeln!(
            out,
            "forget  {}/{}  {}",
            s.hub,
            s.id,
            s.created.to_rfc3339()
        );
    }
    let removed = if report.dry_run {
        "would be removed"
    } else {
        "removed"
    };
    for o in &report.orphans {
        let _ = writeln!(
            out,
            "orphan  {}  unfinished, last written {}: {removed}",
            o.path(),
            o.last_modified.to_rfc3339()
        );
    }
    for o in &report.orphans_waiting {
        let _ = writeln!(
            out,
            "orphan  {}  unfinished, last written {}: within the grace period, left alone",
            o.path(),
            o.last_modified.to_rfc3339()
        );
    }
    for u in &report.untrusted {
        let fate = match (report.removes_untrusted, report.dry_run) {
            (true, true) => "would be removed (--forget-untrusted)",
            (true, false) => "removed (--forget-untrusted)",
            (false, _) => "not counted by retention, left alone (remove with --forget-untrusted)",
        };
        let _ = writeln!(
            out,
            "untrusted {}/{}  {}: {fate}",
            u.snapshot.hub, u.snapshot.id, u.trust
        );
    }
    for p in &report.problems {
        let _ = writeln!(out, "problem {p}");
    }
    for u in &report.unknown {
        let _ = writeln!(out, "unknown {u}  not written by hubvault: left alone");
    }
    let (keep, gone) = (report.plan.keep.len(), report.plan.forget.len());
    match &report.applied {
        None => {
            let _ = writeln!(
                out,
                "dry run: would keep {keep}, forget {gone} snapshots and remove {} orphans; nothing changed",
                report.orphans.len()
            );
        }
        Some(a) => {
            let _ = writeln!(
                out,
                "kept {keep}, forgot {} snapshots, removed {} orphans and {} temporaries ({} objects)",
                a.snapshots_removed, a.orphans_removed, a.temporaries_removed, a.objects_removed
            );
        }
    }
    out
}
