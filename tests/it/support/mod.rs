//! The one harness of the integration tests: every simulator, Azurite container, work folder,
//! `hubvault.toml` and run of the real binary in `tests/it` comes from here.
//!
//! | module | owns |
//! |---|---|
//! | `world` | the simulated world started in-process ([`World::builder`]: hubs with seeded fleets, ARM, TLS, DPS, Key Vault), its control API and [`World::secrets`] |
//! | `sim_process` | the `hubvault-sim` binary as a process ([`SimProcess`]), for tests of what it writes |
//! | `azurite` | [`azurite()`] (with the `HUBVAULT_REQUIRE_AZURITE=1` rule) and a fresh staging container ([`Staging`]) |
//! | `workdir` | a work folder ([`Workdir`]): its `hubvault.toml`, a private identity file, the binary run there |
//! | `bin` | running the real `hubvault` binary ([`Hubvault`]): clean environment, bounded in time, its [`Out`]; [`Spawned`] for tests that interrupt or kill it; [`assert_no_secrets`] |
//!
//! Tests judge hubs by what the simulator's control API reads back and staging by what Azurite
//! lists, never by hubvault's own output. Everything listens on and talks to 127.0.0.1 only;
//! every process a test starts is killed when its handle drops.
//!
//! Must not: decide what a test asserts (helpers return data; tests check it; `Out::expect_code`
//! checks the exit code the test names). A control call or a setup step that fails panics: the
//! world the test asked for could not be made.

#![allow(
    dead_code,
    reason = "shared by several test modules; not each uses every helper"
)]

mod azurite;
mod bin;
mod sim_process;
mod workdir;
mod world;

pub use azurite::{Staging, azurite};
pub use bin::{Hubvault, Out, Spawned, assert_no_secrets, blocking};
pub use sim_process::SimProcess;
pub use workdir::{Workdir, write_private};
pub use world::{ARM_TOKEN, World, WorldBuilder, fast_world, ndjson};
