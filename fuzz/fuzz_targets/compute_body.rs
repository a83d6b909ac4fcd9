//! The compute-request body decoder must never panic, and must accept exactly the
//! integers 0..=1_000_000 in a JSON object's `number` field.
#![no_main]

use floodgate::error::ApiError;
use floodgate::domain::MAX_NUMBER;
use floodgate::http::extract::parse_compute_body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_compute_body(data) {
        Ok(input) => {
            assert!(input.number <= MAX_NUMBER);
            // Whatever was accepted must be a JSON object whose `number` is that integer
            // (written as an integer, or as a fraction or exponent with that exact value).
            let v: serde_json::Value = serde_json::from_slice(data).expect("accepted bodies are JSON");
            assert_eq!(v["number"].as_f64(), Some(input.number as f64));
        }
        Err(ApiError::InvalidRequest(msg)) => assert!(!msg.is_empty()),
        Err(other) => panic!("unexpected error kind {other:?}"),
    }
});
