//! `[drill]`: scheduled restore drills. Each hub the policy covers is drilled on the section's own
//! schedule: its latest snapshot restored into the scratch hub `to`, probed, verified, judged
//! against the targets, and (by default) cleaned up. `serve` and `run` act on it
//! (`crate::service`); the drill itself is `crate::drill`.
//!
//! ```toml
//! [drill]
//! cron = "0 4 * * 0"             # its own schedule, same forms as [schedule]
//! time-zone = "Europe/Berlin"
//! to = "hub-drill"               # the scratch hub (a name in hubvault.toml); must be empty
//! verify = "full"                # full (default), sample, sample=N or none
//! cleanup = true                 # default true: the scratch hub is emptied afterwards
//! rto-target = "30m"             # s, m, h or d; a breached target fails the drill
//! rpo-target = "24h"
//! report = "drill-reports/"      # a folder (ends with /): one HTML report per drill, named by time
//! x509-certs = ["certs/cam-7.pem"]  # X.509 devices' own certificates to probe ([DEVICE=]FILE)
//! probe-devices = 3              # devices of each kind the probe tries (default 3)
//! engine = "auto"                # auto (default), job or bulk, as `drill --engine`
//! via-dps = "dps-drill"          # probe through this DPS instance, as `drill --via-dps`
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use super::schedule::{CronExpr, Schedule, TimeZone};
use crate::restore::{Engine, Verify};

/// The `[drill]` table of a policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DrillSection {
    pub cron: CronExpr,
    #[serde(default)]
    pub time_zone: TimeZone,
    /// The scratch hub drills restore into (a name of the config's `[hubs]`).
    pub to: String,
    #[serde(default = "default_verify", deserialize_with = "verify")]
    pub verify: Verify,
    /// Empty the scratch hub afterwards (default true for scheduled drills).
    #[serde(default = "yes")]
    pub cleanup: bool,
    /// Seconds.
    #[serde(default, deserialize_with = "target")]
    pub rto_target: Option<f64>,
    /// Seconds.
    #[serde(default, deserialize_with = "target")]
    pub rpo_target: Option<f64>,
    /// Where the HTML report goes: a folder (a path ending in `/`, or an existing folder) gets
    /// one file per drill named by hub and time; a file path is overwritten each time.
    #[serde(default)]
    pub report: Option<PathBuf>,
    /// X.509 devices' own certificates the probe acts as (`[DEVICE=]FILE`, as `drill
    /// --x509-cert`).
    #[serde(default)]
    pub x509_certs: Vec<String>,
    /// Devices of each kind the probe tries (`drill --probe-devices`).
    #[serde(default = "three")]
    pub probe_devices: usize,
    /// How the restore writes (`drill --engine`).
    #[serde(default = "auto", deserialize_with = "engine")]
    pub engine: Engine,
    /// Probe through this DPS instance (`drill --via-dps`): a `[dps.NAME]` of the config.
    #[serde(default)]
    pub via_dps: Option<String>,
}

impl DrillSection {
    /// The drill's own schedule.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            cron: self.cron.clone(),
            time_zone: self.time_zone,
        }
    }

    /// The report file for a drill of `hub` started at `at` (a folder gets a file named by
    /// time), or `None` when no report is asked for.
    pub fn report_path(&self, hub: &str, at: chrono::DateTime<chrono::Utc>) -> Option<PathBuf> {
        let path = self.report.as_ref()?;
        let folder = path.to_string_lossy().ends_with('/') || path.is_dir();
        Some(if folder {
            path.join(format!("drill-{hub}-{}.html", at.format("%Y%m%dT%H%M%SZ")))
        } else {
            path.clone()
        })
    }
}

fn default_verify() -> Verify {
    crate::drill::DEFAULT_VERIFY
}

fn yes() -> bool {
    true
}

fn three() -> usize {
    3
}

fn auto() -> Engine {
    Engine::Auto
}

fn engine<'de, D: Deserializer<'de>>(d: D) -> Result<Engine, D::Error> {
    match String::deserialize(d)?.as_str() {
        "auto" => Ok(Engine::Auto),
        "job" => Ok(Engine::Job),
        "bulk" => Ok(Engine::Bulk),
        other => Err(serde::de::Error::custom(format!(
            "engine {other:?}: write auto, job or bulk"
        ))),
    }
}

fn verify<'de, D: Deserializer<'de>>(d: D) -> Result<Verify, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

fn target<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    crate::drill::parse_target(&String::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DrillSection, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_and_full_form() {
        let d = parse("cron = \"0 4 * * 0\"\nto = \"hub-drill\"\n").unwrap();
        assert_eq!(d.verify, Verify::Full);
        assert!(d.cleanup, "scheduled drills clean up by default");
        assert_eq!((d.rto_target, d.rpo_target), (None, None));
        assert_eq!((d.probe_devices, d.engine), (3, Engine::Auto));
        assert_eq!(d.via_dps, None);
        assert!(d.report_path("hub-a", chrono::Utc::now()).is_none());
        let d = parse(
            "cron = \"*/5 * * * * *\"\ntime-zone = \"Europe/Berlin\"\nto = \"hub-drill\"\n\
             verify = \"sample=20\"\ncleanup = false\nrto-target = \"30m\"\nrpo-target = \"1d\"\n\
             report = \"reports/\"\nx509-certs = [\"c.pem\", \"cam-7=d.pem\"]\n\
             probe-devices = 5\nengine = \"bulk\"\nvia-dps = \"dps-drill\"\n",
        )
        .unwrap();
        assert_eq!(d.verify, Verify::Sample(20));
        assert!(!d.cleanup);
        assert_eq!(d.x509_certs, ["c.pem", "cam-7=d.pem"]);
        assert_eq!((d.probe_devices, d.engine), (5, Engine::Bulk));
        assert_eq!(d.via_dps.as_deref(), Some("dps-drill"));
        assert_eq!(
            (d.rto_target, d.rpo_target),
            (Some(1_800.0), Some(86_400.0))
        );
        let at = "2026-12-06T04:00:05Z".parse().unwrap();
        assert_eq!(
            d.report_path("hub-a", at).unwrap(),
            PathBuf::from("reports/drill-hub-a-20261206T040005Z.html")
        );
        assert_eq!(d.schedule().time_zone.0.name(), "Europe/Berlin");
    }

    #[test]
    fn bad_values_say_what_to_write() {
        for (text, word) in [
            ("cron = \"0 4 * * 0\"\n", "to"),
            ("cron = \"0 4 * *\"\nto = \"d\"\n", "5 fields"),
            (
                "cron = \"0 4 * * 0\"\nto = \"d\"\nverify = \"most\"\n",
                "sample=N",
            ),
            (
                "cron = \"0 4 * * 0\"\nto = \"d\"\nrto-target = \"30\"\n",
                "unit",
            ),
            (
                "cron = \"0 4 * * 0\"\nto = \"d\"\nclean-up = true\n",
                "clean-up",
            ),
            (
                "cron = \"0 4 * * 0\"\nto = \"d\"\nengine = \"fast\"\n",
                "auto, job or bulk",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(word), "want {word:?}: {e}");
        }
    }
}
