//! The one integration-test binary (each test binary links ~400 crates, so there is one).
//! Each module is one area; tests drive the real `hubvault` binary, the simulator over HTTP and,
//! where storage matters, real Azurite (`HUBVAULT_TEST_AZURITE`, set by `scripts/test`) — all of
//! it set up through the one harness in `support`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]

mod azure;
mod clone;
mod deploy;
mod dps;
mod dps_faults;
mod dps_scale;
mod drill;
mod drill_dps;
mod drill_x509;
mod failover;
mod failover_report;
mod fault_matrix;
mod hub_faults;
mod import_lock;
mod keys;
mod keyvault;
mod leak_scan;
mod live;
mod policy;
mod restore;
mod serve;
mod sim_interop;
mod support;
mod trust;
mod vault;
