//! CartPole-v1 in plain Rust, as openai/gym's `classic_control/cartpole.py`
//! defines it (`../shared/notes/training.md`): gravity 9.8, cart mass 1.0,
//! pole mass 0.1, half pole length 0.5, force ±10, tau 0.02, explicit Euler;
//! an episode ends when |x| > 2.4 or |θ| > 12° or after 500 steps; reset
//! draws each state value from U(−0.05, 0.05); reward 1 per step. Also a
//! small seeded PRNG (splitmix64), since the guest uses no external crates.

/// splitmix64: a tiny, fast, well-mixed generator for the environment and
/// for sampling actions.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A sample of U[0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A sample of U[lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }
}

const GRAVITY: f64 = 9.8;
const MASS_CART: f64 = 1.0;
const MASS_POLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASS_CART + MASS_POLE;
/// Half the pole's length.
const LENGTH: f64 = 0.5;
const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
const TAU: f64 = 0.02;
const X_THRESHOLD: f64 = 2.4;
/// 12 degrees, as gym computes it: `12 * 2 * pi / 360`.
const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
/// CartPole-v1's time limit.
pub const MAX_STEPS: u32 = 500;

/// How a step left the episode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The episode goes on.
    Running,
    /// The pole fell or the cart left the track: no future reward.
    Terminated,
    /// The 500-step limit: the state is not terminal, only the episode ends.
    Truncated,
}

/// One CartPole environment: state `[x, ẋ, θ, θ̇]` and its own PRNG.
#[derive(Clone, Debug)]
pub struct CartPole {
    state: [f64; 4],
    steps: u32,
    rng: Rng,
}

impl CartPole {
    /// An environment seeded with `seed`, already reset.
    pub fn new(seed: u64) -> Self {
        let mut env = CartPole { state: [0.0; 4], steps: 0, rng: Rng::new(seed) };
        env.reset();
        env
    }

    /// Starts a new episode; returns its first observation.
    pub fn reset(&mut self) -> [f32; 4] {
        for v in &mut self.state {
            *v = self.rng.range(-0.05, 0.05);
        }
        self.steps = 0;
        self.observation()
    }

    /// The current state as the network sees it.
    pub fn observation(&self) -> [f32; 4] {
        self.state.map(|v| v as f32)
    }

    /// Pushes the cart left (action 0) or right (action 1) for one tick;
    /// returns the new observation, the reward (always 1) and the outcome.
    pub fn step(&mut self, action: usize) -> ([f32; 4], f32, Outcome) {
        let [x, x_dot, theta, theta_dot] = self.state;
        let force = if action == 1 { FORCE_MAG } else { -FORCE_MAG };
        let (sin, cos) = theta.sin_cos();
        let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sin) / TOTAL_MASS;
        let theta_acc = (GRAVITY * sin - cos * temp) / (LENGTH * (4.0 / 3.0 - MASS_POLE * cos * cos / TOTAL_MASS));
        let x_acc = temp - POLE_MASS_LENGTH * theta_acc * cos / TOTAL_MASS;
        // Explicit Euler, in gym's order: positions from the old velocities.
        self.state = [x + TAU * x_dot, x_dot + TAU * x_acc, theta + TAU * theta_dot, theta_dot + TAU * theta_acc];
        self.steps += 1;
        let [x, _, theta, _] = self.state;
        let outcome = if x.abs() > X_THRESHOLD || theta.abs() > THETA_THRESHOLD {
            Outcome::Terminated
        } else if self.steps >= MAX_STEPS {
            Outcome::Truncated
        } else {
            Outcome::Running
        };
        (self.observation(), 1.0, outcome)
    }
}
