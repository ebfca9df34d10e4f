//! hubvault — encrypted, versioned backup, clone and restore for Azure IoT Hub device registries.
//!
//! IoT Hub's only bulk path is the import/export *job*, which writes every device key in plaintext
//! into a blob container. hubvault wraps that path: it seals exports into an encrypted, versioned
//! vault and replays snapshots into a hub (or DPS) after preflight checks.
//!
//! # Data flow
//!
//! ```text
//! backup:   preflight ──► export job ──► staging container (plaintext; journalled, deleted at once)
//!           ──► check each line ──► sort by (id, moduleId) ──► zstd ──► age ──► store
//!           ──► objects and the hub's count checked ──► manifest written last (the commit point)
//! forget:   manifests ──► retention (pure, takes `now`) ──► delete forgotten snapshots + orphans
//!           (hubvault's own objects only, in a marked store; orphans aged on the store's clock)
//! restore:  store ──► age ──► zstd ──► records ──► plan (diff against the live target)
//!           ──► preflight findings, mirror brake ──► apply (import job | bulk) ──► read back
//! clone:    backup of A (kept, or ephemeral) + restore into B
//! rotate:   trusted snapshot ──► open ──► seal to the new recipients as generation g+1
//!           ──► signature, manifest (commit) ──► older generations removed
//! ```
//!
//! # Map
//!
//! The simulator is its own package (`hubvault-sim`, used here only by tests) and the binary's
//! commands and demo live in the root package; `docs/architecture.md` describes the workspace.
//!
//! | module | owns | must not |
//! |---|---|---|
//! | [`snapshot`] | record model (verbatim export lines), the one-pass line check (`json_line`), parsing on its own thread (`prefetch`), external sort (records in a reused arena, runs AES-GCM-encrypted, spilled on their own thread), manifest and stream header, catalog (ids, object names, listing, `latest`, hub names, the store marker) | talk HTTP |
//! | [`pipeline`] | seal/open byte streams: zstd then age; one `finish()` that closes both; sha256 of what it wrote; `bridge` to a [`store`] writer | know hubs, snapshots or where keys come from |
//! | [`store`] | narrow create-only trait over local folder, Azure Blob, memory (with injectable faults); the store's clock; time-sortable ids | know snapshots |
//! | [`keys`] | where keys come from: the identity file (0600, owner, folder, regular file) or a Key Vault secret ([`keys::keyvault`]), recipients for backup, identities for restore, the signing key and trusted signers | read anything but the keys it is pointed at; show a secret value |
//! | [`credentials`] | Entra credentials of the configured kind, `token-env`, and a client builder that trusts a `ca-file` | hold or print a token |
//! | [`redact`] | the one function that makes secret-bearing text safe to show | — |
//! | [`config`] | `hubvault.toml`: parsing with file and line in errors; the file and default layers of precedence (flags and environment are the binary's clap layer); settings nothing acts on yet | hold domain decisions |
//! | [`services`] | what a user names (config name, host name, connection string) → a hub connection and every name the hub goes by; connection strings from Key Vault | talk to a hub |
//! | [`hub`] | IoT Hub service REST client: SAS and Entra auth, jobs, registry, bulk, queries, typed errors, retries | know stores |
//! | [`enroll`] | a DPS snapshot back into DPS, or a hub snapshot's devices as enrollments: plan (keys compared through `attestationmechanism`), `--map-hub`, bulk writes that always send the keys, `mirror` deletes last under the brake | delete before the writes, or past the brake |
//! | [`device`] | the device side: a device's own SAS token, or its X.509 certificate the user gives (`certificate`), and one message (`telemetry`); DPS device registration with its own or a group-derived key (`register`); for drills, probes and the demo | write the registry |
//! | [`dps`] | the DPS service API: enrollments and groups, their keys (`attestationmechanism`), bulk ≤10 with per-item errors, paged queries, on the hub client's transport | know stores |
//! | [`arm`] | management-plane requests: a hub's (or DPS instance's) networking rules and the firewall verdict for a caller; a DPS instance's linked hubs; any ARM call described (`ArmCall`) and sent | know stores |
//! | [`failover`] | the failover runbook: observed ARM facts, the pure plan, the journal in the store, idempotent steps, probes, the run's document (rendered by [`report`]) | touch devices other than its own probes; edit A records a zone group owns |
//! | [`staging`] | one run's staging area: blob names, least-privilege SAS per job, the run journal and the sweep of dead runs, the import lock, cleanup (uncommitted blobs too) | know snapshots |
//! | [`preflight`] | findings before a long step: firewall, credentials, permissions, job slot, quota, conflicts, staging; for DPS (`preflight::dps`) IP filter, linked hubs, rights, enrollment limits | fail with errors (findings are data) |
//! | [`diagnostic`] | the `Diagnostic` trait every error implements (a stable code, the next step as data); a cause chain said once | know any module |
//! | [`error`] | [`Error`], wrapping every module's error | be used by a module |
//! | [`shutdown`] | the signal that asks a use case to stop, and what it reports when it did (`Interrupted`) | stop anything itself |
//! | [`policy`] | the policy file schema and its loading; retention and schedule as pure functions of `now` | read the clock |
//! | [`backup`], [`integrity`], [`dump`], [`diff`], [`forget`] | the use cases: seal, verify snapshots, decrypt to files, compare, retention | know clap |
//! | [`repo`] | the repository handle: a store and its catalog read once; finding snapshots by id, `hub/id` or `latest` | hide a catalog error behind a fallback |
//! | [`restore`] | snapshot → live hub: pure plan, mirror brake, live reads, bulk and job engines, edge links, readback; [`restore::outcome`] holds what its parts report | know clap |
//! | [`clone`] | backup A (kept or ephemeral) → restore into B → verify | know clap |
//! | [`clone_dps`] | DPS A backed up (kept or ephemeral) → restored into DPS B | know clap |
//! | [`drill`] | a restore drill: scratch-target check, restore until usable, the probe, verification, RTO/RPO, counts read from the hub, the verdict and its report; `--cleanup` | delete what it did not create (after a restore stopped part-way into a hub that held no device, everything on it is the drill's) |
//! | [`probe`] | a sample of restored devices per kind sends one message with its original keys, X.509 devices with the certificates given (`device::telemetry`) | write the registry, let a key out |
//! | [`probe_dps`] | `drill --via-dps`: link check, the sample's own enrollments, registration through DPS, the assigned hub checked, one message there; deletes only its own enrollments | modify an enrollment it did not create, let a key out |
//! | [`timeline`] | named phases of a run, timed (a restore marks its own; a drill adds its probe; a failover's may overlap) | decide from the times |
//! | [`report`] | a run's self-contained HTML report: verdict, inline SVG timeline of phases, figures against targets, tables; every value escaped; renders both `drill` and `failover` | decide verdicts, hold a secret |
//! | [`service`] | `serve` and `run`: the pure scheduler core (`slots`), the loop on an injected clock (`scheduler`), per-hub leases on the store and status records, one hub's run (lease → slot check → backup → forget with every covering policy → record), a scheduled drill under the scratch hub's lease, metrics, notifications | know clap; run a hub without its lease |
//! | [`rotate`] | re-seal trusted snapshots to a new recipient set as new generations; old ones removed after the commit | re-seal what it does not trust |
//!
//! Exit codes of the binary: 0 ok, 1 a check found something, 2 error; `run` also 3 (some hubs
//! failed, others succeeded).

pub mod arm;
pub mod backup;
pub mod clone;
pub mod clone_dps;
pub mod config;
pub mod credentials;
pub mod device;
pub mod diagnostic;
pub mod diff;
pub mod dps;
pub mod drill;
pub mod dump;
pub mod enroll;
pub mod error;
pub mod failover;
pub mod forget;
pub mod hub;
pub mod integrity;
pub mod keys;
pub mod pipeline;
pub mod policy;
pub mod preflight;
pub mod probe;
pub mod probe_dps;
pub mod redact;
pub mod repo;
pub mod report;
pub mod restore;
pub mod rotate;
pub mod service;
pub mod services;
pub mod shutdown;
pub mod snapshot;
pub mod staging;
pub mod store;
pub mod timeline;

pub use error::{Diagnostic, Error};
