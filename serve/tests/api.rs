#[test] fn warm() {}
