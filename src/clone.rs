//! `clone --from A --to B`: preflight B → back up A → restore into B → verify.
//!
//! Owns: the order of those steps and where the intermediate snapshot lives (kept in the vault
//! with `--keep`, else an ephemeral encrypted snapshot in memory, dropped afterwards — never
//! plaintext on disk). Must not: implement backup, restore or preflight itself.
