#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hypha_protocols::fuzzing::head_sync_core(data));
