//! age key sources (not yet implemented).
