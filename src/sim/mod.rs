//! the simulator (not yet implemented).
pub mod arm;
pub mod dps;
pub mod keyvault;
pub mod shared;
pub mod tls;
