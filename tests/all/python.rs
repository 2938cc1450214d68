//! A Python guest (tests/python/python-tour), built with componentize-py
//! 0.25.1 from PyPI against wit/, run on the test host: the WIT contract
//! stays callable from Python.

use std::path::PathBuf;
use std::process::Command;

use weft_host::testing::TestHost;
use weft_tests::workspace_root;

/// Builds the fixture with componentize-py, run by `$WEFT_PYTHON` (default
/// `python3`; the README's test command installs it into `.venv` and points
/// `WEFT_PYTHON` there); fails, saying how to install it, if it is missing.
fn build_python_guest() -> PathBuf {
    let root = workspace_root();
    let out_dir = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from).join("weft-guests");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("python_tour.wasm");
    let python = std::env::var("WEFT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; script()";
    let status = Command::new(&python)
        .args(["-c", script, "-d"])
        .arg(root.join("wit"))
        .args(["-w", "task-worker", "componentize", "-p"])
        .arg(root.join("tests/python/python-tour"))
        .args(["app", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        status.success(),
        "building the Python guest failed ({status}); is componentize-py installed? \
         `{python} -m pip install componentize-py==0.25.1`"
    );
    out
}

#[test]
fn a_python_guest_builds_graphs_trains_and_gets_typed_errors() {
    let wasm = build_python_guest();
    let host = TestHost::new().unwrap().with_timeout(std::time::Duration::from_secs(240));
    let out = host.run(&wasm, &[]).unwrap();
    assert!(out.status.success(), "{:?}\n{}\n{}", out.status, out.stdout, out.stderr);
    assert_eq!(
        out.stdout,
        "var = 4.0\nd(var^2)/dvar = 8.0\nerror: Error_InvalidArgument: unknown op type 'NoSuchOp'\n"
    );
}
