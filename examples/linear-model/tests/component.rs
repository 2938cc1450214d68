//! Component test: the fit converges to the true parameters.

use weft_host::testing::{TestHost, build_component};

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

/// 200 steps of gradient descent recover W = [2, -3], b = 1 to 3 decimals.
#[test]
fn gradient_descent_recovers_the_true_model() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).expect("guest builds");
    let host = TestHost::new().expect("test host starts");
    let out = host.run(&wasm, &["200", "0.1"]).expect("program runs");
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    assert_eq!(
        last_line(&out.stdout),
        "fitted W = [2.000, -3.000], b = 1.000 (true W = [2, -3], b = 1)",
        "{}",
        out.stdout
    );
    let losses: Vec<f32> =
        out.stdout.lines().filter_map(|l| l.split("loss ").nth(1)).map(|v| v.parse().unwrap()).collect();
    assert!(losses.len() >= 2 && losses[0] > 1.0, "{losses:?}");
    assert!(losses.windows(2).all(|w| w[1] <= w[0]), "loss must not rise: {losses:?}");
    assert!(*losses.last().unwrap() < 1e-6, "the fit must converge: {losses:?}");
}

/// With zero steps the program only reports the initial loss.
#[test]
fn zero_steps_only_reports_initial_loss() {
    let wasm = build_component(env!("CARGO_MANIFEST_DIR")).expect("guest builds");
    let out = TestHost::new().unwrap().run(&wasm, &["0"]).unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    assert_eq!(out.stdout.lines().filter(|l| l.contains("loss")).count(), 1, "{}", out.stdout);
}
