//! use case: verify (not yet implemented)
