//! `hubvault serve` and `hubvault run`: the scheduled exporter.
//!
//! ```text
//! policies ──► slots (pure: what is due at `now`) ──► scheduler (sleeps, bounded concurrency)
//!          ──► per hub, under the store's lease: slot record checked ──► backup ──► forget
//!              (every policy covering the hub) ──► status record ──► metrics, run log
//! ```
//!
//! Must not: know clap, or read the clock outside [`scheduler::Clock`].

pub mod slots;
