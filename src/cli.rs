//! Command-line structs (clap derives only). Domain types live in the library; `main.rs` maps these
//! onto it. The command line is stable: scripts and tests depend on it (docs/architecture.md#configuration).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "hubvault",
    version,
    about = "Encrypted, versioned backup, clone and restore for Azure IoT Hub registries"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Config file (default: ./hubvault.toml if present).
    #[arg(long, global = true, env = "HUBVAULT_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// Store: a folder, file://…, or an Azure Blob container URL (default ./hubvault-store).
    #[arg(long, global = true, env = "HUBVAULT_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// Print one JSON document on stdout; human text goes to stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// More detail on stderr (repeat for more). Secrets are never printed at any level.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Signing key (PEM, 0600) that backups sign snapshots with; its signer is also trusted
    /// (default ~/.config/hubvault/signing-key.pem).
    #[arg(
        long,
        global = true,
        env = "HUBVAULT_SIGNING_KEY",
        hide_env_values = true
    )]
    pub signing_key: Option<PathBuf>,
    /// Signer (hvsig1…) whose snapshots are trusted (repeatable; env: comma-separated).
    #[arg(
        long = "trusted-signer",
        global = true,
        env = "HUBVAULT_TRUSTED_SIGNERS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub trusted_signers: Vec<String>,
}

/// Which snapshots a command that reads them accepts.
#[derive(Debug, Args, Clone, Default)]
pub struct ReadTrust {
    /// Also accept unsigned snapshots (vault format 1, written before snapshots were signed).
    /// Anyone who could write to the store could have made one: use it only for snapshots you
    /// know are yours.
    #[arg(long)]
    pub allow_unsigned: bool,
}

/// Where age keys come from.
#[derive(Debug, Args, Clone, Default)]
pub struct Keys {
    /// Public age recipient to encrypt to (repeatable; env: comma-separated).
    #[arg(
        long = "recipient",
        env = "HUBVAULT_RECIPIENTS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub recipients: Vec<String>,
    /// age identity file (0600): decrypts snapshots; its recipient is also encrypted to.
    #[arg(long, env = "HUBVAULT_IDENTITY", hide_env_values = true)]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage age keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage the store itself.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Seal a registry export into a new snapshot.
    Backup(BackupArgs),
    /// List snapshots.
    Snapshots(SnapshotsArgs),
    /// Show one snapshot's manifest.
    Show(ShowArgs),
    /// Check snapshots: presence, sizes, sha256; with --read-data also decrypt and parse.
    Verify(VerifyArgs),
    /// Devices and modules added, removed and changed between two snapshots, or a snapshot and a live hub.
    Diff(DiffArgs),
    /// Restore a snapshot into a live hub (plan, preflight, apply, verify).
    Restore(RestoreArgs),
    /// Decrypt a snapshot to import-ready devices.txt (+ configurations.txt). Holds keys!
    Dump(DumpArgs),
    /// Apply retention policies: remove forgotten snapshots and orphans.
    Forget(ForgetArgs),
    /// Clone one hub's registry into another: preflight, backup, restore, verify.
    Clone(CloneArgs),
    /// The whole story on a built-in simulator: no Azure, no config needed.
    Demo(DemoArgs),
    /// Check what would stop a backup, restore or clone against a hub (exit 1 on findings).
    Preflight(PreflightArgs),
    /// Explain policy files: hubs, schedule in words and the next five runs (DST shown), retention.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run policies on their schedules (backup, then forget per hub) until SIGTERM.
    Serve(ServeArgs),
    /// One pass of every due (or named) policy, then exit: 0 ok, 2 error, 3 some hubs failed.
    Run(RunArgs),
    /// Restore drill: a snapshot into a scratch hub, devices probed with their original keys,
    /// verification, RTO/RPO against targets, an HTML report (exit 1: failed or breached).
    Drill(DrillArgs),
    /// Manual failover of a hub behind private endpoints, with its DNS and consumers.
    #[command(subcommand)]
    Failover(FailoverCommand),
}

#[derive(Debug, Subcommand)]
pub enum FailoverCommand {
    /// Preconditions, what will break, and every ARM call a run will make (exit 1 on findings).
    Plan(FailoverArgs),
    /// Fail over (or resume a run a crash stopped); --json prints the run document.
    Run(FailoverRunArgs),
    /// Fail back to the original primary region (another failover), with the same checks.
    Back(FailoverRunArgs),
    /// Where the last run stands (the journal in the store).
    Status(FailoverStatusArgs),
    /// Give up the run in progress: journal it as abandoned (the next `run` plans afresh from
    /// what ARM shows), remove its probe devices, and say which steps were done and which not.
    /// Changes nothing in Azure beyond the probes.
    Abandon(FailoverAbandonArgs),
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// The hub, as named in `[hubs.NAME]` and `[failover.NAME]`.
    #[arg(long)]
    pub hub: String,
    /// The primary region's network cannot be relied on: create the secondary region's private
    /// endpoint and move the clients' Private DNS zone links to its zones.
    #[arg(long)]
    pub network_failure: bool,
}

#[derive(Debug, Args)]
pub struct FailoverRunArgs {
    #[command(flatten)]
    pub target: FailoverArgs,
    /// Write the HTML timeline report here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print the ARM calls (with bodies) the run would make; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Probe devices hubvault creates (and removes) to time the devices' outage (0: none).
    #[arg(long, default_value_t = 2)]
    pub probe_devices: usize,
}

#[derive(Debug, Args)]
pub struct FailoverStatusArgs {
    #[arg(long)]
    pub hub: String,
}

#[derive(Debug, Args)]
pub struct FailoverAbandonArgs {
    #[arg(long)]
    pub hub: String,
    /// How many probe devices the abandoned run used (as its `--probe-devices`); they are removed.
    #[arg(long, default_value_t = 2)]
    pub probe_devices: usize,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an age identity (0600 file, or a Key Vault secret) and a signing key for a new
    /// store, and print their public halves (what exists already is kept).
    Init(KeyInitArgs),
    /// Print the recipient of the identity (file or Key Vault secret) and the signer of the
    /// signing key, whichever are there.
    ShowRecipient(KeyShowArgs),
    /// Re-seal every snapshot (or one hub's) to a new recipient set, as a new signed generation
    /// of each; no plaintext on disk. Needs an identity that opens them and the signing key.
    Rotate(KeyRotateArgs),
}

#[derive(Debug, Args)]
pub struct KeyRotateArgs {
    /// The new recipient set (repeatable; default: the configured recipients). Include your
    /// escrow recipients: the set replaces the old one.
    #[arg(long = "to", value_name = "AGE1…", value_delimiter = ',')]
    pub to: Vec<String>,
    /// Only this hub's snapshots.
    #[arg(long)]
    pub hub: Option<String>,
    /// Say what would be re-sealed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub trust: ReadTrust,
    #[command(flatten)]
    pub keys: Keys,
}

#[derive(Debug, Args)]
pub struct KeyShowArgs {
    /// The identity: a file or a Key Vault secret URL (default: as for restore).
    #[arg(long, env = "HUBVAULT_IDENTITY", hide_env_values = true)]
    pub identity: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Mark the store as a hubvault store (a backup does this at first use; run it for a store
    /// written by an older hubvault, which `forget` otherwise refuses to clean when unmarked).
    Init,
}

#[derive(Debug, Args)]
pub struct KeyInitArgs {
    /// Where to write the identity: a file (refuses to overwrite) or a Key Vault secret URL.
    #[arg(
        long,
        env = "HUBVAULT_IDENTITY",
        hide_env_values = true,
        conflicts_with = "key_vault"
    )]
    pub identity: Option<PathBuf>,
    /// Create the identity inside this Key Vault (`https://NAME.vault.azure.net`), never on disk;
    /// with --secret.
    #[arg(long, requires = "secret", value_name = "URL")]
    pub key_vault: Option<String>,
    /// The secret's name in --key-vault.
    #[arg(long, requires = "key_vault", value_name = "NAME")]
    pub secret: Option<String>,
    /// Add a new version to an existing Key Vault secret (older versions stay readable, so
    /// snapshots sealed to them still open); without it an existing secret is kept.
    #[arg(long)]
    pub new_version: bool,
    /// Only the signing key: for a backup host, which must not hold the identity.
    #[arg(long, conflicts_with_all = ["key_vault", "secret"])]
    pub signing_only: bool,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// Back up a live hub through an export job (a connection string or a name from hubvault.toml).
    #[arg(
        long,
        value_name = "HUB",
        conflicts_with_all = ["from_export", "dps"],
        required_unless_present_any = ["from_export", "dps"]
    )]
    pub hub: Option<String>,
    /// Back up a DPS instance: every enrollment and group, with its attestation keys (a DPS
    /// connection string or a name from hubvault.toml's [dps.NAME]).
    #[arg(long, value_name = "DPS", conflicts_with = "from_export")]
    pub dps: Option<String>,
    /// Ingest a devices.txt made elsewhere (a file, or a folder holding devices.txt [+ configurations.txt]).
    #[arg(long, value_name = "PATH")]
    pub from_export: Option<PathBuf>,
    /// Hub name recorded for an ingested export.
    #[arg(long, value_name = "NAME", requires = "from_export")]
    pub hub_name: Option<String>,
    /// Do not include configurations.
    #[arg(long)]
    pub no_configurations: bool,
    #[command(flatten)]
    pub keys: Keys,
    #[command(flatten)]
    pub live: LiveArgs,
    /// Skip the preflight checks before the export.
    #[arg(long, conflicts_with = "from_export")]
    pub no_preflight: bool,
}

/// Options of commands that run jobs against a live hub.
#[derive(Debug, Args, Clone, Default)]
pub struct LiveArgs {
    /// Staging container for the job: a container URL with SAS, an account-key connection
    /// string with Container=NAME, or `file:///folder` (simulator only). Default: [staging].
    #[arg(
        long,
        value_name = "URL",
        env = "HUBVAULT_STAGING",
        hide_env_values = true
    )]
    pub staging: Option<String>,
    /// This machine's public address as the hub sees it (behind NAT the socket address differs).
    #[arg(long, value_name = "ADDR")]
    pub caller_ip: Option<std::net::IpAddr>,
    /// Another import/export job holds the hub's slot: wait for it instead of stopping.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub local: LocalAddress,
}

/// Test-only: bind the hub client's socket to a local address (e.g. 127.0.0.2 to act as another
/// caller against the simulator's firewall). One declaration for every command that reaches hubs.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct LocalAddress {
    #[arg(
        long,
        value_name = "ADDR",
        hide = true,
        env = "HUBVAULT_LOCAL_ADDRESS",
        hide_env_values = true
    )]
    pub local_address: Option<std::net::IpAddr>,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// The hub to check (a connection string or a name from hubvault.toml).
    #[arg(long, value_name = "HUB", required_unless_present = "to_dps")]
    pub to: Option<String>,
    /// A DPS instance to check instead (a `[dps.NAME]` or a DPS service connection string):
    /// the read and write rights, the enrollment limits.
    #[arg(long = "to-dps", value_name = "DPS", conflicts_with = "to")]
    pub to_dps: Option<String>,
    /// With --to-dps: a hub the enrollments will name (repeatable; a config name or host name,
    /// as restore's --iot-hub or the NEW of --map-hub); each must be linked to the instance.
    #[arg(long = "iot-hub", value_name = "HUB", requires = "to_dps")]
    pub iot_hub: Vec<String>,
    #[command(flatten)]
    pub live: LiveArgs,
}

#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only this hub's (or, as --dps, this DPS instance's) snapshots.
    #[arg(long, visible_alias = "dps")]
    pub hub: Option<String>,
    /// Show the recipients each snapshot is sealed to (always in --json).
    #[arg(long)]
    pub recipients: bool,
    /// The recipient set snapshots are expected to be sealed to (default: the configured
    /// recipients); a snapshot sealed to another set is warned about.
    #[arg(
        long = "recipient",
        env = "HUBVAULT_RECIPIENTS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub expected: Vec<String>,
}

/// Which hub `latest` refers to.
#[derive(Debug, Args, Clone, Default)]
pub struct HubFilter {
    /// Hub (or, as --dps, DPS instance) whose snapshots `latest` refers to.
    #[arg(long, alias = "hub-name", visible_alias = "dps")]
    pub hub: Option<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Snapshot id or `latest`.
    pub snapshot: String,
    #[command(flatten)]
    pub hub: HubFilter,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Snapshot id or `latest` (default: all with --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub snapshot: Option<String>,
    /// Verify every snapshot.
    #[arg(long)]
    pub all: bool,
    /// Also decrypt, decompress and parse every record (needs the identity).
    #[arg(long)]
    pub read_data: bool,
    #[command(flatten)]
    pub hub: HubFilter,
    #[command(flatten)]
    pub keys: Keys,
    #[command(flatten)]
    pub trust: ReadTrust,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Older snapshot (id or `latest`).
    pub from: String,
    /// Newer snapshot (id or `latest`); without it, `--hub HUB` names a live hub to compare with.
    #[arg(required_unless_present = "hub")]
    pub to: Option<String>,
    #[command(flatten)]
    pub hub: HubFilter,
    #[command(flatten)]
    pub keys: Keys,
    #[command(flatten)]
    pub trust: ReadTrust,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id or `latest`.
    pub snapshot: String,
    /// Folder to write devices.txt (+ configurations.txt) into, files 0600.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub hub: HubFilter,
    #[command(flatten)]
    pub keys: Keys,
    #[command(flatten)]
    pub trust: ReadTrust,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Policy file (default: every policies/*.toml).
    #[arg(long)]
    pub policy: Vec<PathBuf>,
    /// Show the decisions, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Decide as if it were this time (RFC 3339), e.g. 2026-12-01T02:00:00Z; with --dry-run
    /// only (orphans' ages are always judged on the store's clock).
    #[arg(long, requires = "dry_run")]
    pub at: Option<String>,
    // --allow-unsigned: unsigned (format 1) snapshots count as history, kept and removed by
    // retention like signed ones; without it they are listed and left alone.
    #[command(flatten)]
    pub trust: ReadTrust,
    /// Also remove snapshots that are not trusted (a bad signature, an untrusted signer, or
    /// unsigned without --allow-unsigned): by default they are only listed.
    #[arg(long)]
    pub forget_untrusted: bool,
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// Source hub (a name from hubvault.toml or a connection string).
    #[arg(long, value_name = "HUB")]
    pub from: String,
    /// Target hub (a name from hubvault.toml or a connection string).
    #[arg(long, value_name = "HUB")]
    pub to: String,
    /// Keep the backup of the source as a snapshot in the store (default: an ephemeral
    /// encrypted snapshot in a temporary store, deleted afterwards).
    #[arg(long)]
    pub keep: bool,
    /// Cloning DPS: point the target's enrollments at another hub (`hub-a=hub-b`, names from the
    /// config or host names; repeatable); each must be linked to the target instance.
    #[arg(long, value_name = "OLD=NEW")]
    pub map_hub: Vec<String>,
    #[command(flatten)]
    pub apply: ApplyArgs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub keys: Keys,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's vault (kept afterwards).
    #[arg(long, value_name = "DIR", default_value = "hubvault-demo")]
    pub dir: PathBuf,
    /// Devices to seed on the simulated hub-a.
    #[arg(long, default_value_t = 3000)]
    pub devices: usize,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id or `latest`.
    pub snapshot: String,
    /// Target hub: a name from the config file or a connection string.
    #[arg(
        long,
        value_name = "HUB",
        env = "HUBVAULT_RESTORE_TO",
        hide_env_values = true,
        required_unless_present = "to_dps",
        conflicts_with = "to_dps"
    )]
    pub to: Option<String>,
    /// Target DPS instance, for a DPS snapshot (`backup --dps`): its enrollments and groups
    /// back, keys included (--mode create or upsert).
    #[arg(long, value_name = "DPS")]
    pub to_dps: Option<String>,
    /// With --to-dps: point enrollments at another hub (`hub-a=hub-b`, names from the config
    /// or host names; repeatable).
    #[arg(long, value_name = "OLD=NEW", requires = "to_dps")]
    pub map_hub: Vec<String>,
    /// With --to-dps and a hub snapshot: the hub (linked to the DPS) its devices, enrolled with
    /// their own keys, will register into.
    #[arg(long, value_name = "HUB", requires = "to_dps")]
    pub iot_hub: Option<String>,
    #[command(flatten)]
    pub apply: ApplyArgs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub hub: HubFilter,
    #[command(flatten)]
    pub keys: Keys,
    #[command(flatten)]
    pub trust: ReadTrust,
}

/// How restore and clone write to the target (one declaration for both).
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// create: only create (existing ids are conflicts); upsert: create and update; mirror: also
    /// delete what the snapshot (or the clone's source) lacks.
    #[arg(long, value_enum, default_value = "upsert")]
    pub mode: RestoreMode,
    /// Only device ids matching this glob (e.g. 'plant-7-*').
    #[arg(long, value_name = "GLOB")]
    pub only: Option<String>,
    /// job: import job through staging; bulk: registry API, ≤100 per call; auto: the faster by an
    /// estimate from the hub's tier and units (read through ARM) and the documented throttles.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: RestoreEngine,
    /// Show the plan, change nothing (a clone still backs up the source).
    #[arg(long)]
    pub dry_run: bool,
    /// mirror: how many identities it may delete, a count (500) or a share of the target
    /// (25%). Default: 10% of the target, and none when the snapshot holds none.
    #[arg(long, value_name = "N|P%")]
    pub max_delete: Option<hubvault::restore::MaxDelete>,
    /// Skip the checks before applying.
    #[arg(long)]
    pub no_preflight: bool,
    /// What to prove after the target is usable: full (every key: one export job of the target
    /// with staging, else a read per identity), sample[=N] (every id and everything but keys
    /// through queries, missing and extra ids always named, plus the keys of N identities
    /// chosen at random by kind; N defaults to 100), or none. Default: sample.
    #[arg(long, value_name = "full|sample[=N]|none")]
    pub verify: Option<hubvault::restore::Verify>,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Snapshot id or `latest`.
    pub snapshot: String,
    /// The scratch hub to restore into (a name from hubvault.toml or a connection string).
    #[arg(long, value_name = "HUB")]
    pub to: String,
    /// Probe devices through this DPS instance (a `[dps.NAME]` with `id-scope`, linked to the
    /// drill hub): the sampled devices are enrolled there (their own keys, pointing at the drill
    /// hub), register with their original keys and send a message to the hub DPS assigns.
    /// Enrollments the drill did not create are never modified; `--cleanup` deletes its own.
    #[arg(long, value_name = "DPS")]
    pub via_dps: Option<String>,
    /// Write the drill's report here as one self-contained HTML file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Afterwards, delete what the drill created on the target (and say what it could not).
    #[arg(long)]
    pub cleanup: bool,
    /// Drill into a hub that holds identities; the drill mirrors the snapshot there, deleting
    /// what the snapshot lacks, past the mirror brake (for this target only).
    #[arg(long)]
    pub allow_nonempty_target: bool,
    /// RTO target (e.g. 30m, 2h): breached → exit 1.
    #[arg(long, value_name = "DURATION", value_parser = hubvault::drill::parse_target)]
    pub rto_target: Option<f64>,
    /// RPO target (e.g. 24h): the snapshot's age at the start; breached → exit 1.
    #[arg(long, value_name = "DURATION", value_parser = hubvault::drill::parse_target)]
    pub rpo_target: Option<f64>,
    /// What to prove after the probe: full, sample[=N] or none. Default: full (a drill exists
    /// to prove).
    #[arg(long, value_name = "full|sample[=N]|none")]
    pub verify: Option<hubvault::restore::Verify>,
    /// Devices of each kind (SAS, edge, children) the probe tries.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub probe_devices: usize,
    /// Probe an X.509 device with its own certificate (the snapshot holds only thumbprints):
    /// FILE is PEM with the certificate and its private key (or the key in FILE's name with
    /// .key beside it); the device is the one whose thumbprint it is, or DEVICE. Repeat for
    /// more devices. Needs the hub over https; not with --via-dps.
    #[arg(long = "x509-cert", value_name = "[DEVICE=]FILE")]
    pub x509_cert: Vec<String>,
    /// job: import job through staging; bulk: registry API; auto: the faster by an estimate from
    /// the hub's tier and units (read through ARM) and the documented throttles.
    #[arg(long, value_enum, default_value = "auto")]
    pub engine: RestoreEngine,
    /// Skip the checks before applying.
    #[arg(long)]
    pub no_preflight: bool,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub hub: HubFilter,
    #[command(flatten)]
    pub keys: Keys,
    #[command(flatten)]
    pub trust: ReadTrust,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RestoreMode {
    Create,
    Upsert,
    Mirror,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RestoreEngine {
    Job,
    Bulk,
    Auto,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Each policy's hubs, schedule in words with its next five runs, retention and settings.
    Check(PolicyCheckArgs),
}

#[derive(Debug, Args)]
pub struct PolicyCheckArgs {
    /// A policy file or a folder of them (default: policies/).
    #[arg(value_name = "FILE_OR_DIR", default_value = "policies")]
    pub path: PathBuf,
}

/// What `serve` and `run` share: which policies, how runs go.
#[derive(Debug, Args, Clone)]
pub struct ScheduleArgs {
    /// Policy file or folder (repeatable; default: policies/). A named file runs alone, but
    /// `forget` after each backup applies every policy of its folder that covers the hub.
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub policy: Vec<PathBuf>,
    /// Run log format on stderr (or --log-file): text, or json (one line per run event).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Append the run log to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Lease duration in seconds (a killed run's hub is free again after it; Azure: 15-60).
    #[arg(long, value_name = "SECS", env = "HUBVAULT_LEASE_SECS", hide = true)]
    pub lease_secs: Option<u64>,
    #[command(flatten)]
    pub keys: Keys,
    #[command(flatten)]
    pub trust: ReadTrust,
    #[command(flatten)]
    pub local: LocalAddress,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address (e.g. 0.0.0.0:9464).
    #[arg(long, value_name = "ADDR", env = "HUBVAULT_METRICS")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Hub runs at once, across all policies.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        env = "HUBVAULT_CONCURRENCY"
    )]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub schedule: ScheduleArgs,
}
