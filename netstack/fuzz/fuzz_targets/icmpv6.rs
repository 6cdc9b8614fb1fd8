#![no_main]
use libfuzzer_sys::fuzz_target;
use std::net::Ipv6Addr;

fuzz_target!(|data: &[u8]| netstack_fuzz::icmpv6(data, Ipv6Addr::LOCALHOST, "fe80::1".parse().unwrap()));
