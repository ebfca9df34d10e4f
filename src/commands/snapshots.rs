//! `backup`, `snapshots`, `show`, `verify`, `diff`, `dump`: the vault commands.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use hubvault::backup::{self, BackupOptions, Faults};
use hubvault::config::Config;
use hubvault::diff;
use hubvault::integrity::VerifyOptions;
use hubvault::snapshot::Manifest;
use hubvault::snapshot::reader::ObjectReader;
use hubvault::snapshot::signature::Trust;

use super::{
    Error, Result, diff_needs_two_sides, env_number, hub_names, identities,
    identities_and_recipients, open_repository, open_store, recipients, signing_key, to_json,
    unknown_pause_point, unsigned_warning,
};
use crate::Outcome;
use crate::cli::{BackupArgs, DiffArgs, DumpArgs, Global, ShowArgs, SnapshotsArgs, VerifyArgs};

/// Test-only hook: `HUBVAULT_FAULT_PAUSE=spill|upload|before-manifest|after-signature` makes `backup` print
/// `HUBVAULT_FAULT_PAUSE: paused at <point>` on stderr and sleep there, so a test can kill the
/// process at that exact point. Never set it in production.
const FAULT_PAUSE_ENV: &str = "HUBVAULT_FAULT_PAUSE";
/// Test-only: memory budget (bytes) of one sort run, so small test exports spill.
const SORT_RUN_BYTES_ENV: &str = "HUBVAULT_SORT_RUN_BYTES";

pub async fn backup(config: &Config, global: &Global, args: BackupArgs) -> Result<Outcome> {
    // clap asks for --hub or --from-export; --hub goes to `live::backup`.
    let Some(path) = args.from_export else {
        return Err(hubvault::Error::usage(
            "backup needs a source",
            "pass --hub HUB, or --from-export PATH --hub-name NAME",
        ));
    };
    let Some(hub) = args.hub_name else {
        return Err(hubvault::Error::usage(
            "--from-export needs the name of the hub the export was made from",
            "pass --hub-name NAME",
        ));
    };
    let store = open_store(config, global)?;
    let recipients = recipients(config, &args.keys)?;
    let mut options = BackupOptions::new(
        OffsetDateTime::now_utc(),
        signing_key(config, global).await?,
    );
    options.include_configurations = !args.no_configurations;
    if let Some(bytes) = env_number(SORT_RUN_BYTES_ENV, "a number of bytes")? {
        options.sort.run_bytes = bytes;
    }
    if let Ok(point) = std::env::var(FAULT_PAUSE_ENV) {
        match point.as_str() {
            "spill" => options.sort.on_spill = Some(pause("spill")),
            "upload" => {
                options.faults = Faults {
                    upload: Some(pause("upload")),
                    ..Faults::default()
                }
            }
            "before-manifest" => {
                options.faults = Faults {
                    before_manifest: Some(pause("before-manifest")),
                    ..Faults::default()
                }
            }
            "after-signature" => {
                options.faults = Faults {
                    after_signature: Some(pause("after-signature")),
                    ..Faults::default()
                }
            }
            other => {
                return Err(unknown_pause_point(
                    FAULT_PAUSE_ENV,
                    other,
                    "backup --from-export",
                    "spill, upload, before-manifest or after-signature",
                ));
            }
        }
    }
    let report = backup::from_export(store, &path, &hub, &recipients, options).await?;
    let human = format!(
        "snapshot {} of {}: {} devices ({} edge), {} modules, {} configurations, {} lines skipped; {} stored\n",
        report.snapshot,
        report.hub,
        report.devices,
        report.edge_devices,
        report.modules,
        report.configurations,
        report.skipped_lines,
        human_bytes(report.bytes)
    );
    Ok(Outcome::ok(to_json(&report)?, human))
}

/// `backup --dps`: every enrollment and group of a DPS instance, keys included, sealed.
pub async fn backup_dps(config: &Config, global: &Global, args: BackupArgs) -> Result<Outcome> {
    let spec = args
        .dps
        .as_deref()
        .ok_or_else(|| hubvault::Error::usage("backup --dps needs a DPS", "pass --dps DPS"))?;
    let client = hubvault::dps::DpsClient::new(hubvault::services::resolve_dps(spec, config)?)?;
    if !args.no_preflight {
        let report = super::live::dps_preflight(
            config,
            spec,
            &client,
            args.live.caller_ip,
            false,
            Vec::new(),
        )
        .await?;
        if !report.ok {
            return super::live::stopped_by_preflight(&report, "backup");
        }
    }
    let store = open_store(config, global)?;
    let recipients = recipients(config, &args.keys)?;
    let options = BackupOptions::new(
        OffsetDateTime::now_utc(),
        signing_key(config, global).await?,
    );
    let report = backup::from_dps(store, &client, &recipients, options).await?;
    let human = format!(
        "snapshot {} of {}: {} enrollments, {} enrollment groups, keys included; {} stored\n",
        report.snapshot,
        report.hub,
        report.enrollments,
        report.enrollment_groups,
        human_bytes(report.bytes)
    );
    Ok(Outcome::ok(to_json(&report)?, human))
}

fn pause(point: &'static str) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        eprintln!("{FAULT_PAUSE_ENV}: paused at {point}");
        std::thread::sleep(Duration::from_secs(600));
    })
}

pub async fn list(config: &Config, global: &Global, args: &SnapshotsArgs) -> Result<Outcome> {
    let repo = open_repository(config, global, false).await?;
    let hub = hub_names(config, args.hub.as_deref());
    let listed: Vec<&Manifest> = repo.snapshots(hub.as_ref()).collect();
    let json: Vec<_> = listed
        .iter()
        .map(|m| {
            json!({"id": m.id, "hub": m.hub, "created": m.created, "devices": m.counts.devices,
                   "modules": m.counts.modules, "configurations": m.counts.configurations, "bytes": m.bytes(),
                   "trust": m.trust.word(), "signer": m.trust.signer().map(ToString::to_string),
                   "generation": m.generation, "recipients": m.recipients,
                   "kind": if m.is_dps() { "dps" } else { "hub" },
                   "enrollments": m.counts.enrollments,
                   "enrollment_groups": m.counts.enrollment_groups})
        })
        .collect();
    let warnings = recipient_drift(&config.recipients(&args.expected), &listed)?;
    let mut human = String::new();
    if listed.is_empty() {
        match &hub {
            Some(h) => {
                let held = repo.hubs();
                let _ = writeln!(
                    human,
                    "no snapshots of {} in {}{}",
                    h.label(),
                    repo.location(),
                    if held.is_empty() {
                        String::new()
                    } else {
                        format!("; it holds snapshots of: {}", held.join(", "))
                    }
                );
            }
            None => {
                let _ = writeln!(human, "no snapshots in {}", repo.location());
            }
        }
    } else {
        let _ = writeln!(
            human,
            "{:<26} {:<24} {:<21} {:>9} {:>8} {:>7} {:>10}  TRUST",
            "ID", "HUB", "CREATED", "DEVICES", "MODULES", "CONFIGS", "STORED"
        );
        for m in &listed {
            let c = &m.counts;
            let _ = writeln!(
                human,
                "{:<26} {:<24} {:<21} {:>9} {:>8} {:>7} {:>10}  {}",
                m.id,
                m.hub,
                m.created,
                c.devices,
                c.modules,
                c.configurations,
                human_bytes(m.bytes()),
                trust_column(&m.trust)
            );
            if m.is_dps() {
                let _ = writeln!(
                    human,
                    "{:<26} a DPS snapshot: {} enrollments, {} enrollment groups",
                    "", c.enrollments, c.enrollment_groups
                );
            }
            if args.recipients {
                for r in &m.recipients {
                    let _ = writeln!(human, "{:<26} sealed to {r}", "");
                }
            }
        }
    }
    for u in repo.unreadable(hub.as_ref()) {
        let _ = writeln!(
            human,
            "{:<26} {:<24} UNREADABLE: {} (run `hubvault verify --all`)",
            u.id,
            u.hub,
            u.error()
        );
    }
    let mut outcome = Outcome::ok(json.into(), human);
    outcome.warnings = warnings;
    Ok(outcome)
}

/// A warning for each snapshot sealed to another set than the configured recipients (an escrow
/// key added, a key rotated out): `key rotate` re-seals them. None when nothing is configured.
fn recipient_drift(configured: &[String], listed: &[&Manifest]) -> Result<Vec<String>> {
    let wanted: std::collections::BTreeSet<String> = hubvault::keys::Recipients::parse(configured)?
        .to_strings()
        .into_iter()
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    Ok(listed
        .iter()
        .filter(|m| {
            m.recipients
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                != wanted
        })
        .map(|m| {
            format!(
                "snapshot {}/{} is sealed to {}, not to the configured recipients ({}); \
                 `hubvault key rotate` re-seals it",
                m.hub,
                m.id,
                m.recipients.join(", "),
                wanted.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect())
}

pub async fn show(config: &Config, global: &Global, args: &ShowArgs) -> Result<Outcome> {
    let repo = open_repository(config, global, false).await?;
    let hub = hub_names(config, args.hub.hub.as_deref());
    let m = repo.resolve(&args.snapshot, hub.as_ref())?;
    let c = &m.counts;
    let mut human = format!(
        "snapshot   {}\ntrust      {}\nhub        {}\ncreated    {}\nsource     {}{}\ndevices    {} ({} edge)\nmodules    {}\nconfigs    {}\nskipped    {} lines\nrecipients {}\ntool       {}\nobjects\n",
        m.id,
        m.trust.describe(),
        m.hub,
        m.created,
        m.source.kind,
        m.source
            .path
            .as_ref()
            .or(m.source.job_id.as_ref())
            .map(|p| format!(" ({p})"))
            .unwrap_or_default(),
        c.devices,
        c.edge_devices,
        c.modules,
        c.configurations,
        c.skipped_lines,
        m.recipients.join(", "),
        m.tool
    );
    for o in &m.objects {
        let _ = writeln!(
            human,
            "  {:<30} {:>8} records {:>10}  sha256 {}",
            o.name,
            o.records,
            human_bytes(o.bytes),
            o.sha256
        );
    }
    let mut json = to_json(m)?;
    json["trust"] = json!(m.trust.word());
    Ok(Outcome::ok(json, human))
}

/// The TRUST column of `snapshots`: loud for what a reader refuses.
fn trust_column(t: &Trust) -> &'static str {
    match t {
        Trust::Signed(_) => "signed",
        Trust::UntrustedSigner(_) => "UNTRUSTED SIGNER",
        Trust::BadSignature(_) => "BAD SIGNATURE",
        Trust::Unsigned => "unsigned (v1)",
        Trust::Unchecked => "?",
    }
}

pub async fn verify(config: &Config, global: &Global, args: VerifyArgs) -> Result<Outcome> {
    let repo = open_repository(config, global, args.trust.allow_unsigned).await?;
    let hub = hub_names(config, args.hub.hub.as_deref());
    let mut options = VerifyOptions {
        allow_unsigned: args.trust.allow_unsigned,
        ..VerifyOptions::default()
    };
    if args.read_data {
        let (ids, own) = identities_and_recipients(config, &args.keys).await?;
        options.identities = Some(ids);
        options.own_recipients = own;
    }
    let report = match &args.snapshot {
        Some(spec) => {
            let chosen = repo.resolve(spec, hub.as_ref())?.clone();
            hubvault::integrity::verify(repo.store().clone(), &[chosen], &options).await?
        }
        None => hubvault::integrity::verify_all(&repo, hub.as_ref(), &options).await?,
    };
    let mut human = String::new();
    for s in &report.snapshots {
        let who = match (&s.signer, s.trust) {
            (Some(signer), "signed") => format!("signed by {signer}"),
            (Some(signer), _) => format!("signed by {signer}, NOT TRUSTED here"),
            (None, "unsigned") => "unsigned (format 1)".to_owned(),
            (None, "bad-signature") => "BAD SIGNATURE".to_owned(),
            (None, other) => other.to_owned(),
        };
        if s.ok {
            let _ = writeln!(human, "{} {}: ok, {who}", s.hub, s.id);
        } else {
            let _ = writeln!(human, "{} {}: {} problem(s)", s.hub, s.id, s.problems.len());
            for p in &s.problems {
                let _ = writeln!(human, "  - {p}");
            }
        }
    }
    let checked = if args.read_data {
        "signature, presence, size, sha256, records"
    } else {
        "signature, presence, size, sha256"
    };
    let _ = writeln!(
        human,
        "{} of {} snapshot(s) ok ({checked})",
        report.snapshots.iter().filter(|s| s.ok).count(),
        report.snapshots.len()
    );
    let found_something = !report.ok;
    Ok(Outcome {
        json: to_json(&report)?,
        human,
        found_something,
        warnings: Vec::new(),
        failed: false,
    })
}

pub async fn dump(config: &Config, global: &Global, args: DumpArgs) -> Result<Outcome> {
    let repo = open_repository(config, global, args.trust.allow_unsigned).await?;
    let hub = hub_names(config, args.hub.hub.as_deref());
    let m = repo.resolve_trusted(&args.snapshot, hub.as_ref())?;
    let identities = identities(config, &args.keys).await?;
    let report = hubvault::dump::dump(repo.store().clone(), m, identities, &args.out).await?;
    let mut human = String::new();
    for f in &report.files {
        let _ = writeln!(human, "wrote {} ({} records, mode 0600)", f.path, f.records);
    }
    human.push_str(
        "warning: these files hold every device key in plaintext; import them, then delete them\n",
    );
    let mut json = to_json(&report)?;
    json["warning"] = json!("the files hold device keys in plaintext");
    let mut outcome = Outcome::ok(json, human);
    outcome.warnings.extend(unsigned_warning(m));
    Ok(outcome)
}

fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let f = n as f64;
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", f / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", f / 1_048_576.0),
        _ => format!("{:.2} GiB", f / 1_073_741_824.0),
    }
}

pub async fn diff(config: &Config, global: &Global, args: DiffArgs) -> Result<Outcome> {
    let repo = open_repository(config, global, args.trust.allow_unsigned).await?;
    let hub = hub_names(config, args.hub.hub.as_deref());
    let hub = hub.as_ref();
    let old = repo.resolve_trusted(&args.from, hub)?.clone();
    let to = args.to.as_deref().ok_or_else(diff_needs_two_sides)?;
    let new = repo.resolve_trusted(to, hub)?.clone();
    let warnings: Vec<String> = [&old, &new]
        .into_iter()
        .filter_map(unsigned_warning)
        .collect();
    let store = repo.store().clone();
    let identities = identities(config, &args.keys).await?;
    let handle = tokio::runtime::Handle::current();
    let (old_id, new_id) = (old.id.clone(), new.id.clone());
    let report = tokio::task::spawn_blocking(move || -> Result<diff::DiffReport> {
        let open =
            |m: &Manifest| ObjectReader::open(store.as_ref(), &handle, m, "devices", &identities);
        let entries = |reader: ObjectReader| {
            reader.map(|r| {
                r.map(|r| diff::Entry {
                    id: r.id,
                    module_id: r.module_id,
                    line: r.line,
                })
            })
        };
        Ok(diff::compare(entries(open(&old)?), entries(open(&new)?))?)
    })
    .await
    .map_err(|source| Error::Task {
        what: "diff",
        source,
    })??;
    let mut human = diff_lines(&report, "", "");
    let _ = writeln!(
        human,
        "{old_id} → {new_id}: {} added, {} removed, {} changed, {} unchanged",
        report.added.len(),
        report.removed.len(),
        report.changed.len(),
        report.unchanged
    );
    Ok(Outcome {
        json: report.to_json(),
        human,
        found_something: !report.is_empty(),
        warnings,
        failed: false,
    })
}

/// One line per difference: `+ added`, `- removed`, `~ changed (aspects)`; the notes say where an
/// added or removed record lives when that is not obvious (a snapshot against a live hub).
pub(super) fn diff_lines(
    report: &diff::DiffReport,
    added_note: &str,
    removed_note: &str,
) -> String {
    let mut out = String::new();
    for key in &report.added {
        let _ = writeln!(out, "+ {key}{added_note}");
    }
    for key in &report.removed {
        let _ = writeln!(out, "- {key}{removed_note}");
    }
    for (key, aspects) in &report.changed {
        let names: Vec<&str> = aspects.iter().map(|a| a.as_str()).collect();
        let _ = writeln!(out, "~ {key} ({})", names.join(", "));
    }
    out
}
