//! Component test of this worker, with weft's in-process test host: builds
//! the crate for wasm32-wasip2, runs it, and checks what it printed.

use weft_host::testing::{TestHost, build_component};

/// S1 must show: session 1 reads 1.0 after its increment, session 2 still 0.0.
#[test]
fn sessions_do_not_share_state() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).expect("guest builds");
    let host = TestHost::new().expect("test host starts");
    let out = host.run(&wasm, &[]).expect("program runs");
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    assert_eq!(
        out.stdout,
        "Initial value of var in session 1: 0.0\n\
         Initial value of var in session 2: 0.0\n\
         Incremented var in session 1\n\
         Value of var in session 1: 1.0\n\
         Value of var in session 2: 0.0\n"
    );
    // Local sessions are private engines: nothing reached the host's own task.
    assert!(host.variables().is_empty(), "{:?}", host.variables());
}
