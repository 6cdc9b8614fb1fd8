//! The netback: serves client VMs (their netfronts connect to us). See issue 5.
