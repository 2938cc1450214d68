//! Shared helpers for weft's integration tests: paths of guest fixtures and
//! examples (built on demand for wasm32-wasip2).

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace")
}

/// The `.wasm` of the fixture crate `tests/fixtures/NAME`, built if needed.
pub fn fixture(name: &str) -> PathBuf {
    guest(&workspace_root().join("tests/fixtures").join(name))
}

/// The `.wasm` of the example crate `examples/NAME`, built if needed.
pub fn example(name: &str) -> PathBuf {
    guest(&workspace_root().join("examples").join(name))
}

fn guest(dir: &Path) -> PathBuf {
    weft_host::testing::build_component(dir).unwrap_or_else(|e| panic!("building {}: {e}", dir.display()))
}
