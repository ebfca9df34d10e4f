//! use case: diff (not yet implemented)
