//! the simulator
pub mod apply;
pub mod error;
pub mod firewall;
pub mod registry;
pub mod sas;
pub mod shared;
pub mod wire;
