#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hypha_protocols::fuzzing::node_coordinator(data));
