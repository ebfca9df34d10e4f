//! the simulator (not yet implemented).
pub mod shared;
