//! `deploy/`: the container image, the Kubernetes manifests and the systemd units parse, say
//! what the docs promise (non-root, `Forbid`, workload identity, probes, two replicas), and every
//! command line in them uses a subcommand and flags the binary's `--help` lists.

use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::Workdir;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn docs(rel: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The first document of `kind` in `rel`.
fn kind(rel: &str, kind: &str) -> Yaml {
    docs(rel)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("{rel} has no {kind}"))
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// Every flag in `args` (after the subcommand) must be listed by `hubvault SUB --help`.
fn assert_flags_exist(args: &[String], wd: &Workdir, what: &str) {
    let sub = &args[0];
    let help = wd
        .hubvault()
        .args([sub.as_str(), "--help"])
        .run_blocking()
        .expect_code(0)
        .stdout;
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{what}: `hubvault {sub}` has no {flag}"
        );
    }
}

#[test]
fn every_manifest_parses_and_names_what_it_is() {
    for rel in [
        "kubernetes/cronjob.yaml",
        "kubernetes/deployment.yaml",
        "kubernetes/serviceaccount.yaml",
    ] {
        let all = docs(rel);
        assert!(!all.is_empty(), "{rel}");
        for d in all {
            for key in ["apiVersion", "kind"] {
                assert!(d[key].as_str().is_some(), "{rel}: no {key}");
            }
            assert!(d["metadata"]["name"].as_str().is_some(), "{rel}: no name");
        }
    }
}

#[test]
fn cronjob_runs_one_policy_without_overlap_under_workload_identity() {
    let wd = Workdir::bare();
    let cron = kind("kubernetes/cronjob.yaml", "CronJob");
    let spec = &cron["spec"];
    assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"));
    let pod = &spec["jobTemplate"]["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["azure.workload.identity/use"].as_str(),
        Some("true")
    );
    assert_eq!(pod["spec"]["serviceAccountName"].as_str(), Some("hubvault"));
    let args = strings(&pod["spec"]["containers"][0]["args"]);
    assert_eq!(args[..2], ["run", "--policy"]);
    assert_flags_exist(&args, &wd, "cronjob.yaml");
    let sa = kind("kubernetes/serviceaccount.yaml", "ServiceAccount");
    assert!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"]
            .as_str()
            .is_some()
    );
}

#[test]
fn deployment_serves_two_replicas_with_probes_and_metrics() {
    let wd = Workdir::bare();
    let d = kind("kubernetes/deployment.yaml", "Deployment");
    assert_eq!(d["spec"]["replicas"].as_i64(), Some(2));
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert_eq!(c["ports"][0]["containerPort"].as_i64(), Some(9464));
    let args = strings(&c["args"]);
    assert_eq!(args[0], "serve");
    assert!(args.iter().any(|a| a == "0.0.0.0:9464"), "{args:?}");
    assert_flags_exist(&args, &wd, "deployment.yaml");
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
}

/// The JSON array of a Dockerfile instruction (`ENTRYPOINT ["…"]`).
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction}"));
    serde_json::from_str(&line[instruction.len()..]).unwrap()
}

#[test]
fn image_is_multi_stage_non_root_and_its_command_exists() {
    let wd = Workdir::bare();
    let text = read("Dockerfile");
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    let user = text.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") || user.contains("nonroot"), "{user}");
    assert!(text.contains("distroless"), "no shell at run time");
    assert_eq!(exec_form(&text, "ENTRYPOINT"), ["/usr/local/bin/hubvault"]);
    let cmd = exec_form(&text, "CMD");
    assert_flags_exist(&cmd, &wd, "Dockerfile CMD");
}

#[test]
fn systemd_units_start_commands_that_exist() {
    let wd = Workdir::bare();
    for unit in ["systemd/hubvault.service", "systemd/hubvault-run.service"] {
        let text = read(unit);
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let mut words = exec.split_whitespace();
        assert_eq!(words.next(), Some("/usr/local/bin/hubvault"), "{unit}");
        let args: Vec<String> = words.map(str::to_owned).collect();
        assert_flags_exist(&args, &wd, unit);
    }
    let timer = read("systemd/hubvault-run.timer");
    assert!(timer.contains("OnCalendar=") && timer.contains("Persistent=true"));
}
