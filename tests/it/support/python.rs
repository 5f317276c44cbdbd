//! The Python that runs the test peers.

use std::path::PathBuf;

/// The Python with the test peers (tests/requirements.txt): the one tests/run
/// names in HERALD_TEST_PYTHON, else tests/.venv's.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HERALD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    assert!(
        venv.exists(),
        "HERALD_TEST_PYTHON is unset and {} is missing: run tests/run, which installs \
         tests/requirements.txt into tests/.venv",
        venv.display()
    );
    venv
}
