//! Host integration tests and the simulated Xen.
