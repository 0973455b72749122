//! Every input kept in `fuzz/regressions/<target>/` (seeds and crashes the fuzzers
//! found), through the same checks as the fuzz targets (`cf_llm::fuzzing`).

use cf_llm::fuzzing;

use crate::regression_inputs::inputs;

#[test]
fn request_key_regressions_hold() {
    for (path, data) in inputs("request_key") {
        println!("{}", path.display());
        fuzzing::check_request_key(&data);
    }
}

#[test]
fn anthropic_response_regressions_hold() {
    for (path, data) in inputs("anthropic_response") {
        println!("{}", path.display());
        fuzzing::check_anthropic_response(&data);
    }
}
