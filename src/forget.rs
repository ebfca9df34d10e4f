//! use case: forget (not yet implemented)
