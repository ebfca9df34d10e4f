//! seal/open byte streams (not yet implemented).
