//! icmpv4
