//! retention and schedule policy (not yet implemented).
