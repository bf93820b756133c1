#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hypha_store::fuzzing::store_io_errors(data));
