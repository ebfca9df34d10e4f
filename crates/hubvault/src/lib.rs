//! hubvault — encrypted, versioned backup, clone and restore for Azure IoT Hub device registries.
//!
//! IoT Hub's only bulk path is the import/export *job*, which writes every device key in plaintext
//! into a blob container. hubvault wraps that path: it seals exports into an encrypted, versioned
//! vault and replays snapshots into a hub (or DPS) after preflight checks.
//!
//! # Data flow
//!
//! ```text
//! backup:   hub export job ──► staging container (plaintext; deleted at once)
//!           ──► parse + check each line ──► sort by (id, moduleId) ──► zstd ──► age ──► store
//!           ──► manifest written last (the commit point)
//! forget:   manifests ──► retention policy (pure, takes `now`) ──► delete forgotten snapshots + orphans
//! restore:  store ──► age ──► zstd ──► records ──► plan (diff against the live target)
//!           ──► preflight findings ──► apply (import job | bulk registry API) ──► verify
//! clone:    backup of A (kept, or ephemeral) + restore into B
//! ```
//!
//! # Map
//!
//! | module | owns | must not |
//! |---|---|---|
//! | [`snapshot`] | record model (verbatim export lines), the one-pass line check (`json_line`), parsing on its own thread (`prefetch`), manifest, catalog (naming, listing, manifest-last commit, unreadable manifests set aside), external sort (records in a reused arena, runs AES-GCM-encrypted, spilled on their own thread, merged through reused slots) | talk HTTP |
//! | [`pipeline`] | seal/open byte streams: zstd then age; one `finish()` that closes both; sha256 of what it wrote | know hubs, stores, vaults |
//! | [`store`] | narrow trait over local folder, Azure Blob, memory; create-only puts | know snapshots |
//! | [`vault`] | where age keys come from: identity file (0600), recipients for backup, identities for restore | — |
//! | [`staging`] | one run's job staging area: blob names, least-privilege SAS, cleanup, leftover sweep | know snapshots |
//! | [`hub`] | IoT Hub service REST client: SAS auth, jobs, registry, typed errors | know stores |
//! | [`target`] | what the user named (`hub-a`, a connection string) → a client target, Entra credentials | — |
//! | [`arm`] | management-plane reads: a hub's networking rules and the firewall verdict for a caller | know stores |
//! | [`preflight`] | findings before a long step: firewall, credentials, permissions, job slot, quota, conflicts, staging | fail with errors (findings are data) |
//! | [`policy`] | retention and schedule: pure functions of `now`; the policy file schema | do I/O |
//! | [`error`] | the `Diagnostic` trait (a stable code, the next step as data), [`Error`] wrapping every module's error, a cause chain said once | print |
//! | [`config`] | `hubvault.toml`: hubs, store, keys, staging; precedence flags > env > file > defaults | hold domain decisions |
//! | [`backup`], [`verify`], [`dump`], [`diff`], [`forget`] | the use cases | know clap |
//! | [`restore`] | snapshot → live hub: pure plan, target reads, bulk and job engines, edge links, verify | know clap |
//! | [`clone`] | preflight B → backup A (kept or ephemeral) → restore into B → verify | know clap |
//! | [`demo`] | the whole story against the in-process simulator, for `hubvault demo` | be used by other use cases |
//! | [`sim`] | the simulator (IoT Hub, DPS, ARM, Key Vault on loopback) | import anything else of hubvault |
//!
//! The binaries (`src/main.rs`, `src/bin/hubvault-sim.rs`) are thin: clap structs live in `cli`
//! (binary-private), exit codes are 0 ok, 1 a check found something, 2 error.

pub mod arm;
pub mod backup;
pub mod clone;
pub mod config;
pub mod diff;
pub mod dump;
pub mod error;
pub mod forget;
pub mod hub;
pub mod integrity;
pub mod keys;
pub mod pipeline;
pub mod policy;
pub mod preflight;
pub mod redact;
pub mod restore;
pub mod services;
pub mod snapshot;
pub mod staging;
pub mod store;

pub use error::{Diagnostic, Error};
