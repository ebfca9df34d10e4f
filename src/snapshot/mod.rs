//! snapshot records, manifest and catalog (not yet implemented).
