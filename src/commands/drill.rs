//! `hubvault drill`: argument resolution, the report file and output. The drill itself is
//! `hubvault::drill`.

use std::fmt::Write as _;

use hubvault::config::Config;
use hubvault::device::certificate::{self, DeviceCertificate};
use hubvault::device::telemetry::DeviceTarget;
use hubvault::drill::{self, Targets};
use hubvault::probe_dps::ViaDps;
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
    let staging = open_staging(config, args.live.staging.as_deref(), &client, engine)?;
    let poll = live::poll_policy()?;
    let arm = live::arm_client(config)?;
    let rates = match engine {
        Engine::Auto => hub_rates(arm.as_ref(), &hub).await,
        _ => None,
    };
    let options = RestoreOptions {
        engine,
        rates,
        verify: args.verify.unwrap_or(drill::DEFAULT_VERIFY),
        preflight: !args.no_preflight,
        poll,
        shutdown,
        ..RestoreOptions::default()
    };
    let checks = live::checks_for(&hub, &client, arm.as_ref(), &args.live, poll);
    let device_target = DeviceTarget {
        host: client.host().to_owned(),
        endpoint: client.endpoint().clone(),
    };
    let via_dps = match &args.via_dps {
        Some(name) => Some(via_dps(config, name, arm.as_ref())?),
        None => None,
    };
    refuse_x509_via_dps(via_dps.is_some(), &args.x509_cert)?;
    let certificates = load_certificates(&args.x509_cert, &client)?;
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
        via_dps,
        certificates,
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
        failed: false,
    })
}

/// Certificates with `--via-dps`: refused before anything changes.
pub(super) fn refuse_x509_via_dps(via_dps: bool, certificates: &[String]) -> Result<()> {
    if via_dps && !certificates.is_empty() {
        return Err(hubvault::Error::usage(
            "--x509-cert with --via-dps: registering X.509 devices through DPS with their \
             certificate is not built. Nothing was changed.",
            "drop --via-dps to probe the X.509 devices at the hub, or drop --x509-cert",
        ));
    }
    Ok(())
}

/// Every `--x509-cert` read, each with a client that reaches the hub as the drill does and
/// presents the certificate; refused before anything changes when the hub is not reached over
/// https (a certificate is presented in a TLS handshake) or a file is not usable.
pub(super) fn load_certificates(
    specs: &[String],
    client: &hubvault::hub::HubClient,
) -> Result<Vec<std::sync::Arc<DeviceCertificate>>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    if client.endpoint().scheme() != "https" {
        return Err(hubvault::Error::usage(
            format!(
                "{} is reached at {}, not over https: an X.509 device presents its certificate \
                 in a TLS handshake. Nothing was changed.",
                client.name(),
                client.endpoint()
            ),
            "reach the drill hub over https (on Azure it always is; the simulator needs --tls), \
             or drop --x509-cert",
        ));
    }
    specs
        .iter()
        .map(|spec| {
            certificate::load(spec, client.device_client_builder())
                .map(std::sync::Arc::new)
                .map_err(hubvault::Error::app)
        })
        .collect()
}

/// The DPS instance `--via-dps` names: its service client, where devices register, and ARM
/// to read its linked hubs when `[arm]` and its `resource-id` are configured.
pub(super) fn via_dps<'a>(
    config: &Config,
    name: &str,
    arm: Option<&'a hubvault::arm::ArmClient>,
) -> Result<ViaDps<'a>> {
    let connection = hubvault::services::resolve_dps(name, config)?;
    let client = hubvault::dps::DpsClient::new(connection).map_err(hubvault::Error::app)?;
    let provisioning = hubvault::services::dps_provisioning(name, config)?;
    let resource_id = config.dps.get(name).and_then(|d| d.resource_id.clone());
    Ok(ViaDps {
        name: name.to_owned(),
        client,
        provisioning,
        arm: arm.zip(resource_id),
    })
}

/// The commands that reproduce this drill (the snapshot by id; a connection string redacted).
fn reproduce(args: &DrillArgs, snapshot: &str) -> Vec<String> {
    let mut drill = format!("hubvault drill {snapshot} --to {}", args.to);
    if let Some(d) = &args.via_dps {
        let _ = write!(drill, " --via-dps {d}");
    }
    if let Some(v) = args.verify {
        let _ = write!(drill, " --verify {}", v.label());
    }
    for cert in &args.x509_cert {
        let _ = write!(drill, " --x509-cert {cert}");
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

/// Staging for the job engine and for every engine's full verification (one export job proves
/// all keys). Bulk does not need it: a broken staging setting only warns there.
pub(super) fn open_staging(
    config: &Config,
    flag: Option<&str>,
    client: &hubvault::hub::HubClient,
    engine: Engine,
) -> Result<Option<Staging>> {
    if flag.is_none() && config.staging.is_none() {
        return Ok(None);
    }
    match Staging::open(flag, config, client.host()) {
        Ok(s) => Ok(Some(s)),
        Err(e) if engine == Engine::Bulk => {
            tracing::warn!("staging not used ({e}); verification reads keys one by one");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The target's throttles for `--engine auto`, from its tier read through ARM (when ARM and the
/// hub's `resource-id` are configured); `None` (S1 with one unit assumed) otherwise.
pub(super) async fn hub_rates(
    arm: Option<&hubvault::arm::ArmClient>,
    hub: &hubvault::services::ResolvedHub,
) -> Option<restore::estimate::HubRates> {
    let (arm, id) = (arm?, hub.resource_id.as_deref()?);
    match arm.hub_sku(id).await {
        Ok(sku) => Some(restore::estimate::HubRates::from_sku(sku.as_ref())),
        Err(e) => {
            tracing::warn!(
                "could not read the tier of {} through ARM ({e}); S1 with one unit assumed",
                hub.name
            );
            None
        }
    }
}

/// The restore's verification unless `--verify` says otherwise (restore and clone).
pub(super) fn restore_default_verify(asked: Option<restore::Verify>) -> restore::Verify {
    asked.unwrap_or(restore::Verify::Sample(restore::sample::DEFAULT_SAMPLE))
}
