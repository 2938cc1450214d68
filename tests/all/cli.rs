//! The `weft` binary as a user runs it: `weft run MODULE.wasm [-- ARGS]`.

use std::time::Duration;

use weft_tests::{example, fixture};

use crate::process::{TempDir, run, weft};

const LIMIT: Duration = Duration::from_secs(120);

fn weft_run(module: &str, args: &[&str], cache: &TempDir) -> crate::process::Finished {
    let mut argv = vec!["run", module];
    if !args.is_empty() {
        argv.push("--");
        argv.extend_from_slice(args);
    }
    run(weft(&argv, &cache.0), LIMIT)
}

/// S1 through the CLI: exactly the seed's output, exit 0; the second run
/// loads the compiled module from the cache.
#[test]
fn run_local_sessions_prints_the_seed_story() {
    let cache = TempDir::new("s1");
    let wasm = example("local-sessions");
    let out = weft_run(wasm.to_str().unwrap(), &[], &cache);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("Value of var in session 1: 1.0\nValue of var in session 2: 0.0\n"), "{}", out.stdout);
    let cached: Vec<_> = std::fs::read_dir(&cache.0).unwrap().collect();
    assert_eq!(cached.len(), 1, "one .cwasm after the first run");
    let again = weft_run(wasm.to_str().unwrap(), &[], &cache);
    assert!(again.status.success() && again.stdout == out.stdout, "{}", again.stderr);
}

/// Each bad input exits non-zero with a message naming the problem.
#[test]
fn bad_modules_exit_2_naming_the_problem() {
    let cache = TempDir::new("bad");
    let text = cache.0.join("notes.txt");
    std::fs::write(&text, "not wasm at all").unwrap();
    let core = cache.0.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let other = fixture("other-world");
    for (path, needle) in [
        (text.to_str().unwrap(), "not a WebAssembly binary"),
        (core.to_str().unwrap(), "core WebAssembly module, not a component"),
        (other.to_str().unwrap(), "not a weft:runtime/task-worker component"),
        ("/nonexistent/worker.wasm", "reading /nonexistent/worker.wasm"),
    ] {
        let out = weft_run(path, &[], &cache);
        assert_eq!(out.status.code(), Some(2), "{path}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{path}: {}", out.stderr);
    }
}

/// Programs that fail or trap exit 1 with the program's error.
#[test]
fn failing_programs_exit_1_naming_the_problem() {
    let cache = TempDir::new("fail");
    let wasm = fixture("misbehave");
    for (mode, needle) in [
        ("trap", "trapped: wasm trap: wasm `unreachable` instruction executed"),
        ("panic", "the worker gave up on purpose"),
        ("unknown-op", "unknown op type 'Conv9D'"),
        ("dtype-mismatch", "dtypes differ"),
        ("shape-mismatch", "inner dimensions differ"),
        ("bad-feed", "feed for 'Placeholder' is f32[3]"),
        ("unknown-device", "no job 'ps'"),
        ("bad-device-string", "invalid device string '/job:ps/tsk:0'"),
    ] {
        let out = weft_run(wasm.to_str().unwrap(), &[mode], &cache);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", out.stderr);
        assert!(out.stderr.contains("weft: program misbehave.wasm"), "{mode}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{mode}: {}", out.stderr);
    }
}

/// `--timeout` stops a runaway program: exit 124, output so far kept.
#[test]
fn timeout_stops_a_runaway_program() {
    let cache = TempDir::new("loop");
    let wasm = fixture("misbehave");
    let out = run(weft(&["run", "--timeout", "2", wasm.to_str().unwrap(), "--", "loop"], &cache.0), LIMIT);
    assert_eq!(out.status.code(), Some(124), "{}", out.stderr);
    assert_eq!(out.stdout, "looping forever\n");
    assert!(out.stderr.contains("did not finish within"), "{}", out.stderr);
}

/// Guests depend on weft-sdk only, and weft-sdk pulls in no host runtime:
/// `cargo tree -p weft-sdk` has no wasmtime, tokio or tonic.
#[test]
fn guest_sdk_depends_on_no_host_runtime() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["tree", "-p", "weft-sdk", "--prefix", "none", "--edges", "normal,build"])
        .current_dir(weft_tests::workspace_root());
    let out = run(cmd, LIMIT);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("wit-bindgen"), "{}", out.stdout);
    for forbidden in ["wasmtime", "tokio", "tonic"] {
        assert!(!out.stdout.contains(forbidden), "weft-sdk depends on {forbidden}:\n{}", out.stdout);
    }
}
