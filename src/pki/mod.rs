//! PKI (being written).
