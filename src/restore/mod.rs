//! Restore: replay a snapshot into a hub.
//!
//! Flow: store ──► age ──► zstd ──► records ──► plan (diff against the live target)
//! ──► preflight findings ──► apply (import job | bulk registry API) ──► verify.
//!
//! Must not: know clap. Owns the plan, the import-line preparation ([`lines`]) and the engines.

pub mod lines;
