//! The device side: what a device does with the identity hubvault restored. Drills, failover
//! probes and the demo prove a restore by acting as a device would: authenticate with the
//! identity's own key, or an X.509 device's certificate the user gives (`certificate`), and send
//! a message (`telemetry`); DPS fleets first register with the
//! Device Provisioning Service, which assigns them a hub (`register`). The device-side calls are few and fixed
//! (docs/azure.md); they are ours, like the service-side REST calls.
//!
//! Owns: device-side requests. Does not own: registry writes (the `hub` client) or deciding
//! which devices to try (the callers).

pub mod certificate;
pub mod register;
pub mod telemetry;
