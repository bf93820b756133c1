#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hypha_crdt::fuzzing::merge_model(data));
