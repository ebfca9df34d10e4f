//! `hubvault drill`: argument resolution, the report file and output. The drill itself is
//! `hubvault::drill`.

use std::fmt::Write as _;

use hubvault::config::Config;
use hubvault::device::telemetry::DeviceTarget;
use hubvault::drill::{self, Targets};
use hubvault::restore::{self, Engine, RestoreOptions};
use hubvault::shutdown::Shutdown;
use hubvault::staging::Staging;

use super::{Result, identities, live};
use crate::Outcome;
use crate::cli::{DrillArgs, Global, RestoreEngine};

pub async fn run(
    config: &Config,
    global: &Global,
    args: DrillArgs,
    shutdown: Shutdown,
) -> Result<Outcome> {
    if let Some(dps) = &args.via_dps {
        return Err(hubvault::Error::usage(
            format!(
                "not built yet: --via-dps {dps} needs the DPS device-registration client, which \
                 hubvault does not have yet"
            ),
            "drop --via-dps: the probe then authenticates the devices against the hub directly",
        ));
    }
    let repo = super::open_repository(config, global, args.trust.allow_unsigned).await?;
    let hub_filter = super::hub_names(config, args.hub.hub.as_deref());
    let manifest = repo
        .resolve_trusted(&args.snapshot, hub_filter.as_ref())?
        .clone();
    let newest = repo
        .listing()
        .manifests
        .iter()
        .filter(|m| m.hub == manifest.hub)
        .filter_map(|m| {
            time::OffsetDateTime::parse(&m.created, &time::format_description::well_known::Rfc3339)
                .ok()
        })
        .max();
    let (hub, client) = live::resolve(&args.to, config, &args.live)?;
    let engine = match args.engine {
        RestoreEngine::Job => Engine::Job,
        RestoreEngine::Bulk => Engine::Bulk,
        RestoreEngine::Auto => Engine::Auto,
    };
    let staging = if args.live.staging.is_some() || config.staging.is_some() {
        match Staging::open(args.live.staging.as_deref(), config, client.host()) {
            Ok(s) => Some(s),
            Err(e) if engine == Engine::Bulk => {
                tracing::warn!("staging not used ({e}); verification reads keys one by one");
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let poll = live::poll_policy()?;
    let options = RestoreOptions {
        engine,
        verify: args.verify.unwrap_or(drill::DEFAULT_VERIFY),
        preflight: !args.no_preflight,
        poll,
        shutdown,
        ..RestoreOptions::default()
    };
    let arm = live::arm_client(config)?;
    let checks = live::checks_for(&hub, &client, arm.as_ref(), &args.live, poll);
    let device_target = DeviceTarget {
        host: client.host().to_owned(),
        endpoint: client.endpoint().clone(),
    };
    let request = drill::Request {
        store: repo.store().clone(),
        manifest: &manifest,
        newest,
        identities: identities(config, &args.keys).await?,
        client: &client,
        staging: staging.as_ref(),
        checks,
        options,
        allow_nonempty: args.allow_nonempty_target,
        cleanup: args.cleanup,
        targets: Targets {
            rto: args.rto_target,
            rpo: args.rpo_target,
        },
        probe_per_kind: args.probe_devices,
        http: client.http().clone(),
        device_target,
    };
    let report = drill::run(request).await.map_err(hubvault::Error::app)?;
    let mut human = report.human();
    let mut json = report.to_json();
    if let Some(path) = &args.report {
        let page = report.document(reproduce(&args, &manifest.id)).html();
        std::fs::write(path, page).map_err(|e| {
            hubvault::Error::usage(
                format!("cannot write the report to {}: {e}", path.display()),
                "pass --report with a file in a folder you can write",
            )
        })?;
        let _ = writeln!(human, "report: {}", path.display());
        json["report"] = serde_json::json!(path.display().to_string());
    }
    Ok(Outcome {
        json,
        human,
        found_something: report.found_something(),
        warnings: super::unsigned_warning(&manifest).into_iter().collect(),
    })
}

/// The commands that reproduce this drill (the snapshot by id; a connection string redacted).
fn reproduce(args: &DrillArgs, snapshot: &str) -> Vec<String> {
    let mut drill = format!("hubvault drill {snapshot} --to {}", args.to);
    if let Some(v) = args.verify {
        let _ = write!(drill, " --verify {}", v.label());
    }
    for (flag, on) in [
        ("--cleanup", args.cleanup),
        ("--allow-nonempty-target", args.allow_nonempty_target),
    ] {
        if on {
            drill.push(' ');
            drill.push_str(flag);
        }
    }
    if let Some(t) = args.rto_target {
        let _ = write!(drill, " --rto-target {t}s");
    }
    if let Some(t) = args.rpo_target {
        let _ = write!(drill, " --rpo-target {t}s");
    }
    if let Some(r) = &args.report {
        let _ = write!(drill, " --report {}", r.display());
    }
    vec![
        hubvault::redact::redact(&drill),
        hubvault::redact::redact(&format!(
            "hubvault diff {snapshot} --hub {}   # the drill hub against the snapshot",
            args.to
        )),
    ]
}

/// The restore's verification unless `--verify` says otherwise (restore and clone).
pub(super) fn restore_default_verify(asked: Option<restore::Verify>) -> restore::Verify {
    asked.unwrap_or(restore::Verify::Sample(restore::sample::DEFAULT_SAMPLE))
}
