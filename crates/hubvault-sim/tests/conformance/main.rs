//! The simulator's conformance tests: it speaks the wire contract of IoT Hub, DPS, ARM and Key
//! Vault (docs/azure.md), checked over HTTP with requests signed here, never by hubvault, so a
//! mistake shared by hubvault and its simulator cannot hide. Storage tests need Azurite
//! (`HUBVAULT_TEST_AZURITE`, set by `scripts/test`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects,
    reason = "tests"
)]

mod dps_register;
mod hub;
mod keyvault;
mod services;
mod tls;
