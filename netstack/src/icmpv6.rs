//! icmpv6
