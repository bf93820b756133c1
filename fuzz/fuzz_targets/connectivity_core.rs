#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hypha_protocols::fuzzing::connectivity_core(data));
