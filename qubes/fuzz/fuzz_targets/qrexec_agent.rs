#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| qubes_fuzz::qrexec_agent(data));
