//! Bad programs on the in-process test host: each fails with an error that
//! names the problem, and the same host then runs a good program.

use std::time::Duration;

use weft_host::runtime::ExitStatus;
use weft_host::testing::TestHost;
use weft_tests::fixture;

/// After a failure the host still runs programs and still holds state.
fn assert_host_still_works(host: &TestHost) {
    let out = host.run(fixture("misbehave"), &["ok"]).unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout, "fine\n");
}

fn failed_with(mode: &str) -> String {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("misbehave"), &[mode]).unwrap();
    let message = match out.status {
        ExitStatus::Failed(m) => m,
        other => panic!("{mode}: expected a failure, got {other:?}"),
    };
    assert_host_still_works(&host);
    message
}

#[test]
fn unknown_op_is_named() {
    let m = failed_with("unknown-op");
    assert!(m.starts_with("invalid-argument: unknown op type 'Conv9D'"), "{m}");
}

#[test]
fn mismatched_dtypes_are_named() {
    let m = failed_with("dtype-mismatch");
    assert!(m.contains("Add 'Add': dtypes differ") && m.contains("f32[]") && m.contains("i32[]"), "{m}");
}

#[test]
fn mismatched_shapes_are_named() {
    let m = failed_with("shape-mismatch");
    assert!(
        m.contains("MatMul 'MatMul': inner dimensions differ") && m.contains("[2, 3]") && m.contains("[2, 2]"),
        "{m}"
    );
}

#[test]
fn wrong_shaped_feed_is_named() {
    let m = failed_with("bad-feed");
    assert!(m.contains("feed for 'Placeholder' is f32[3]") && m.contains("expects f32[?, 2]"), "{m}");
}

#[test]
fn unknown_device_is_named() {
    let m = failed_with("unknown-device");
    assert!(m.contains("op 'weights") && m.contains("no job 'ps'") && m.contains("jobs: localhost"), "{m}");
}

#[test]
fn malformed_device_string_is_named() {
    let m = failed_with("bad-device-string");
    assert!(m.contains("invalid device string '/job:ps/tsk:0'") && m.contains("'tsk:0'"), "{m}");
}

#[test]
fn uninitialized_read_is_failed_precondition() {
    let m = failed_with("uninitialized");
    assert!(m.starts_with("failed-precondition: variable 'never_initialized'"), "{m}");
}

#[test]
fn guest_error_is_reported_as_is() {
    assert_eq!(failed_with("error"), "aborted: the worker returned an error");
}

#[test]
fn trap_is_reported_and_host_carries_on() {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("misbehave"), &["trap"]).unwrap();
    match &out.status {
        ExitStatus::Trapped(m) => assert!(m.contains("unreachable"), "{m}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(out.stdout, "about to trap\n");
    assert_host_still_works(&host);
}

#[test]
fn panic_message_is_reported() {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("misbehave"), &["panic"]).unwrap();
    match &out.status {
        ExitStatus::Trapped(m) => assert!(m.contains("panicked") && m.contains("the worker gave up on purpose"), "{m}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_host_still_works(&host);
}

/// The memory limit is named from the refused `memory.grow` the host saw,
/// not from what the program printed.
#[test]
fn printing_an_out_of_memory_line_does_not_make_a_memory_limit() {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("misbehave"), &["fake-oom"]).unwrap();
    match &out.status {
        ExitStatus::Trapped(m) => assert!(m.contains("not out of memory at all"), "{m}"),
        other => panic!("expected a plain trap, got {other:?}"),
    }
}

#[test]
fn memory_bomb_is_stopped_at_the_limit() {
    let host = TestHost::new().unwrap();
    let out = host.run(fixture("misbehave"), &["memory-bomb"]).unwrap();
    match &out.status {
        ExitStatus::ResourceExhausted(m) => {
            assert!(m.contains("memory limit") && m.contains("out of memory"), "{m}\nstderr: {}", out.stderr)
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_host_still_works(&host);
}

#[test]
fn runaway_loop_is_stopped_by_the_timeout() {
    let host = TestHost::new().unwrap().with_timeout(Duration::from_millis(300));
    let err = host.run(fixture("misbehave"), &["loop"]).unwrap_err();
    assert_eq!(err.code(), weft_host::Code::DeadlineExceeded);
    assert!(err.to_string().contains("misbehave.wasm did not finish within"), "{err}");
    let host = host.with_timeout(Duration::from_secs(60));
    assert_host_still_works(&host);
}

#[test]
fn not_wasm_core_module_and_other_world_are_rejected() {
    let host = TestHost::new().unwrap();
    let rt = host.runtime();
    let err = rt.load("notes.txt", b"just some text").unwrap_err().to_string();
    assert!(err.contains("invalid module notes.txt") && err.contains("not a WebAssembly binary"), "{err}");
    let err = rt.load("core.wasm", b"\0asm\x01\0\0\0").unwrap_err().to_string();
    assert!(err.contains("core WebAssembly module, not a component"), "{err}");
    let err = rt.load_file(&fixture("other-world")).unwrap_err().to_string();
    assert!(err.contains("not a weft:runtime/task-worker component") && err.contains("other:greeter/clock"), "{err}");
    let mut truncated = std::fs::read(fixture("misbehave")).unwrap();
    truncated.truncate(truncated.len() / 2);
    let err = rt.load("truncated.wasm", &truncated).unwrap_err().to_string();
    assert!(err.contains("does not compile as a component"), "{err}");
    assert_host_still_works(&host);
}
