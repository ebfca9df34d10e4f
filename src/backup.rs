//! use case: backup (not yet implemented)
