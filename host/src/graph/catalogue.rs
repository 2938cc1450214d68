//! The op catalogue: for every op, its inputs, the attributes it takes (any
//! other attribute is refused when the op is added), the dtypes it accepts
//! and its gradient rule (or why it has none).
//!
//! Inference ([`super::infer`]) and kernels (`exec::kernels`) dispatch on
//! the same [`OpType`] with exhaustive matches, so an op cannot be added to
//! the enum without both; this table is what the graph checks attributes
//! against, what gradients look up, and what `docs/OPS.md` is generated from
//! ([`markdown`], kept current by a test).

use super::gradients::{GradFn, rules};
use super::op::{AttrValue, Attrs, OpType};
use crate::error::{Error, Result};

/// The kind of value an attribute holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// An integer.
    Int,
    /// A float (integers are accepted).
    Float,
    /// A boolean.
    Bool,
    /// A list of integers.
    Ints,
    /// An element type.
    DType,
    /// A tensor.
    Tensor,
    /// A string.
    Str,
}

impl AttrKind {
    fn accepts(self, v: &AttrValue) -> bool {
        matches!(
            (self, v),
            (AttrKind::Int, AttrValue::Int(_))
                | (AttrKind::Float, AttrValue::Float(_) | AttrValue::Int(_))
                | (AttrKind::Bool, AttrValue::Bool(_))
                | (AttrKind::Ints, AttrValue::Ints(_))
                | (AttrKind::DType, AttrValue::DType(_))
                | (AttrKind::Tensor, AttrValue::Tensor(_))
                | (AttrKind::Str, AttrValue::Str(_))
        )
    }

    fn name(self) -> &'static str {
        match self {
            AttrKind::Int => "int",
            AttrKind::Float => "float",
            AttrKind::Bool => "bool",
            AttrKind::Ints => "list of ints",
            AttrKind::DType => "dtype",
            AttrKind::Tensor => "tensor",
            AttrKind::Str => "string",
        }
    }
}

/// One attribute an op takes.
#[derive(Clone, Copy, Debug)]
pub struct AttrDef {
    /// Its name.
    pub name: &'static str,
    /// Its kind.
    pub kind: AttrKind,
    /// What it means, and its default.
    pub doc: &'static str,
}

/// How gradients flow through an op.
#[derive(Clone, Copy, Debug)]
pub enum Gradient {
    /// The rule that adds the op's input gradients to the graph.
    Rule(GradFn),
    /// No gradient, on purpose; the reason is listed in `docs/OPS.md`.
    None(&'static str),
}

/// One op of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct OpDef {
    /// The op.
    pub op: OpType,
    /// What it computes.
    pub summary: &'static str,
    /// Its inputs, in order (`...` marks a list of any length).
    pub inputs: &'static str,
    /// The dtypes it accepts.
    pub dtypes: &'static str,
    /// The attributes it takes.
    pub attrs: &'static [AttrDef],
    /// Its gradient.
    pub gradient: Gradient,
}

const fn a(name: &'static str, kind: AttrKind, doc: &'static str) -> AttrDef {
    AttrDef { name, kind, doc }
}

use AttrKind::{Bool, DType, Float, Int, Ints, Str, Tensor};
use Gradient::{None as NoGrad, Rule};

const STATE: &str = "updates state";
const SECOND_ORDER: &str = "a gradient helper; second-order gradients are not supported yet";
const BOOLEAN: &str = "boolean output";
const LOCKING: AttrDef = a("use_locking", Bool, "accepted for TensorFlow compatibility; updates are always atomic");
const REDUCE: &[AttrDef] =
    &[a("axis", Ints, "axes to reduce (negative from the end); all if absent"), a("keep_dims", Bool, "default false")];
const RANDOM_SHAPE: AttrDef = a("shape", Ints, "output shape");
const RANDOM_DTYPE: AttrDef = a("dtype", DType, "f32 (default) or f64");
const SEED: AttrDef = a("seed", Int, "makes the sequence reproducible");

macro_rules! op {
    ($op:ident, $summary:expr, $inputs:expr, $dtypes:expr, $attrs:expr, $grad:expr) => {
        OpDef { op: OpType::$op, summary: $summary, inputs: $inputs, dtypes: $dtypes, attrs: $attrs, gradient: $grad }
    };
}

/// Every op, in [`OpType::ALL`] order.
pub static CATALOGUE: &[OpDef] = &[
    op!(
        Const,
        "A constant tensor.",
        "",
        "any",
        &[a("value", Tensor, "the value (required)"), a("dtype", DType, "must match the value if given")],
        NoGrad("a constant")
    ),
    op!(
        Placeholder,
        "A value fed at run time.",
        "",
        "any",
        &[a("dtype", DType, "required"), a("shape", Ints, "required; -1 for an unknown dimension")],
        NoGrad("fed from outside")
    ),
    op!(
        VariableV2,
        "A variable: state shared by name on its task.",
        "",
        "any",
        &[a("dtype", DType, "required"), a("shape", Ints, "required"), a("trainable", Bool, "default false")],
        NoGrad("a source: take gradients with respect to the variable's output")
    ),
    op!(Assign, "Sets a variable; outputs the new value.", "ref, value", "any", &[LOCKING], NoGrad(STATE)),
    op!(AssignAdd, "Adds to a variable atomically.", "ref, delta", "numeric", &[LOCKING], NoGrad(STATE)),
    op!(AssignSub, "Subtracts from a variable atomically.", "ref, delta", "numeric", &[LOCKING], NoGrad(STATE)),
    op!(Identity, "Its input unchanged.", "x", "any", &[], Rule(rules::identity)),
    op!(NoOp, "Does nothing; used for control dependencies.", "", "-", &[], NoGrad("no outputs")),
    op!(IsVariableInitialized, "Whether a variable has a value.", "ref", "any", &[], NoGrad(BOOLEAN)),
    op!(
        ReportUninitializedVariables,
        "Names of the variables whose check is false.",
        "checks...",
        "bool",
        &[a("names", Tensor, "one string per input (required)")],
        NoGrad("string output")
    ),
    op!(Add, "x + y, broadcasting.", "x, y", "numeric", &[], Rule(rules::add)),
    op!(Sub, "x - y, broadcasting.", "x, y", "numeric", &[], Rule(rules::sub)),
    op!(Mul, "x * y, broadcasting.", "x, y", "numeric", &[], Rule(rules::mul)),
    op!(Div, "x / y, broadcasting; integer division by zero is an error.", "x, y", "numeric", &[], Rule(rules::div)),
    op!(Neg, "-x.", "x", "numeric", &[], Rule(rules::neg)),
    op!(Square, "x².", "x", "numeric", &[], Rule(rules::square)),
    op!(Sqrt, "√x.", "x", "float", &[], Rule(rules::sqrt)),
    op!(Exp, "eˣ.", "x", "float", &[], Rule(rules::exp)),
    op!(Log, "ln x.", "x", "float", &[], Rule(rules::log)),
    op!(Relu, "max(x, 0).", "x", "numeric", &[], Rule(rules::relu)),
    op!(Sigmoid, "1 / (1 + e⁻ˣ).", "x", "float", &[], Rule(rules::sigmoid)),
    op!(Tanh, "tanh x.", "x", "float", &[], Rule(rules::tanh)),
    op!(
        MatMul,
        "Matrix product a·b.",
        "a, b",
        "f32, f64",
        &[a("transpose_a", Bool, "default false"), a("transpose_b", Bool, "default false")],
        Rule(rules::matmul)
    ),
    op!(Sum, "Sum over axes.", "x", "numeric", REDUCE, Rule(rules::sum)),
    op!(Mean, "Mean over axes.", "x", "numeric", REDUCE, Rule(rules::mean)),
    op!(
        Reshape,
        "The same elements in a new shape.",
        "x",
        "any",
        &[a("shape", Ints, "required; one dimension may be -1")],
        Rule(rules::reshape)
    ),
    op!(
        Fill,
        "A tensor of a shape filled with a scalar.",
        "value",
        "any",
        &[a("shape", Ints, "required")],
        Rule(rules::fill)
    ),
    op!(
        RandomNormal,
        "Samples of N(mean, stddev²).",
        "",
        "f32, f64",
        &[RANDOM_SHAPE, RANDOM_DTYPE, SEED, a("mean", Float, "default 0"), a("stddev", Float, "default 1")],
        NoGrad("random")
    ),
    op!(
        RandomUniform,
        "Samples of U[minval, maxval).",
        "",
        "f32, f64",
        &[RANDOM_SHAPE, RANDOM_DTYPE, SEED, a("minval", Float, "default 0"), a("maxval", Float, "default 1")],
        NoGrad("random")
    ),
    op!(Softmax, "Softmax over the last axis.", "logits", "float", &[], Rule(rules::softmax)),
    op!(
        LogSoftmax,
        "Log-softmax over the last axis, computed stably.",
        "logits",
        "float",
        &[],
        Rule(rules::log_softmax)
    ),
    op!(
        SoftmaxCrossEntropyWithLogits,
        "Per-row cross-entropy −Σ labels·log_softmax(logits) over the last axis.",
        "logits, labels",
        "float",
        &[],
        Rule(rules::softmax_cross_entropy)
    ),
    op!(
        StopGradient,
        "Its input; gradients do not flow through it.",
        "x",
        "any",
        &[],
        NoGrad("stops gradients by definition")
    ),
    op!(AddN, "The sum of its inputs (same shapes).", "xs...", "numeric", &[], Rule(rules::add_n)),
    op!(Maximum, "max(x, y) element-wise, broadcasting.", "x, y", "numeric", &[], Rule(rules::maximum)),
    op!(Minimum, "min(x, y) element-wise, broadcasting.", "x, y", "numeric", &[], Rule(rules::minimum)),
    op!(Equal, "x == y, broadcasting.", "x, y", "any but string", &[], NoGrad(BOOLEAN)),
    op!(NotEqual, "x != y, broadcasting.", "x, y", "any but string", &[], NoGrad(BOOLEAN)),
    op!(Less, "x < y, broadcasting.", "x, y", "numeric", &[], NoGrad(BOOLEAN)),
    op!(LessEqual, "x <= y, broadcasting.", "x, y", "numeric", &[], NoGrad(BOOLEAN)),
    op!(Greater, "x > y, broadcasting.", "x, y", "numeric", &[], NoGrad(BOOLEAN)),
    op!(GreaterEqual, "x >= y, broadcasting.", "x, y", "numeric", &[], NoGrad(BOOLEAN)),
    op!(LogicalNot, "not x.", "x", "bool", &[], NoGrad(BOOLEAN)),
    op!(
        Select,
        "Where cond, t, else e; all three broadcast together.",
        "cond, t, e",
        "cond bool; t, e any (same)",
        &[],
        Rule(rules::select)
    ),
    op!(
        Cast,
        "x converted to dtype.",
        "x",
        "f32, f64, i32, i64, bool",
        &[a("dtype", DType, "required")],
        Rule(rules::cast)
    ),
    op!(
        OneHot,
        "One-hot rows: shape indices.shape + [depth].",
        "indices",
        "i32, i64",
        &[
            a("depth", Int, "required"),
            a("on_value", Float, "default 1"),
            a("off_value", Float, "default 0"),
            a("dtype", DType, "f32 (default) or f64"),
        ],
        NoGrad("integer input")
    ),
    op!(
        ArgMax,
        "Index of the largest value along an axis (i64).",
        "x",
        "numeric",
        &[a("axis", Int, "default 0")],
        NoGrad("integer output")
    ),
    op!(
        Gather,
        "Rows of params picked by indices (axis 0): shape indices.shape + params.shape[1:].",
        "params, indices",
        "params any; indices i32, i64",
        &[],
        Rule(rules::gather)
    ),
    op!(
        UnsortedSegmentSum,
        "Rows of data summed into num_segments rows by segment id.",
        "data, segment_ids",
        "data numeric; ids i32, i64",
        &[a("num_segments", Int, "required")],
        Rule(rules::unsorted_segment_sum)
    ),
    op!(
        Concat,
        "Its inputs joined along an axis.",
        "values...",
        "any (same)",
        &[a("axis", Int, "required")],
        Rule(rules::concat)
    ),
    op!(
        Slice,
        "A slice: begin and size per dimension (size -1 = to the end).",
        "x",
        "any",
        &[a("begin", Ints, "required"), a("size", Ints, "required")],
        Rule(rules::slice)
    ),
    op!(
        Pad,
        "x padded with zeros: paddings holds (before, after) per dimension.",
        "x",
        "numeric",
        &[a("paddings", Ints, "required; 2 × rank values")],
        Rule(rules::pad)
    ),
    op!(
        ExpandDims,
        "x with size-1 dimensions inserted.",
        "x",
        "any",
        &[a("axis", Ints, "required; positions in the output")],
        Rule(rules::expand_dims)
    ),
    op!(Squeeze, "x with size-1 dimensions removed.", "x", "any", &[a("axis", Ints, "required")], Rule(rules::squeeze)),
    op!(
        ZerosLike,
        "Zeros of x's shape and dtype.",
        "x",
        "numeric, bool",
        &[],
        NoGrad("depends only on its input's shape")
    ),
    op!(
        OnesLike,
        "Ones of x's shape and dtype.",
        "x",
        "numeric, bool",
        &[],
        NoGrad("depends only on its input's shape")
    ),
    op!(
        SumToShapeOf,
        "x summed over the axes along which like was broadcast (a gradient helper).",
        "x, like",
        "numeric",
        &[],
        NoGrad(SECOND_ORDER)
    ),
    op!(
        BroadcastToShapeOf,
        "x broadcast to like's shape, divided by the ratio of element counts if mean (a gradient helper).",
        "x, like",
        "numeric",
        &[a("mean", Bool, "default false")],
        NoGrad(SECOND_ORDER)
    ),
    op!(ReluGrad, "dy where x > 0, else 0.", "dy, x", "numeric", &[], NoGrad(SECOND_ORDER)),
    op!(SigmoidGrad, "dy · y · (1 − y).", "y, dy", "float", &[], NoGrad(SECOND_ORDER)),
    op!(TanhGrad, "dy · (1 − y²).", "y, dy", "float", &[], NoGrad(SECOND_ORDER)),
    op!(
        ApplyGradientDescent,
        "var −= alpha · delta, atomically on var's task; outputs the new value.",
        "var, alpha, delta",
        "float",
        &[LOCKING],
        NoGrad(STATE)
    ),
    op!(
        ApplyMomentum,
        "accum = accum · momentum + grad; var −= lr · accum (Nesterov: lr · (grad + momentum · accum)).",
        "var, accum, lr, grad, momentum",
        "float",
        &[LOCKING, a("use_nesterov", Bool, "default false")],
        NoGrad(STATE)
    ),
    op!(
        ApplyAdam,
        "Adam: m, v updated; var −= lr·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + ε).",
        "var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad",
        "float",
        &[LOCKING],
        NoGrad(STATE)
    ),
    op!(
        ApplyRMSProp,
        "ms = ρ·ms + (1−ρ)·grad²; mom = momentum·mom + lr·grad/√(ms + ε); var −= mom.",
        "var, ms, mom, lr, rho, momentum, epsilon, grad",
        "float",
        &[LOCKING],
        NoGrad(STATE)
    ),
    op!(
        SaveV2,
        "Saves the variables (all on one task) to `<checkpoint-dir>/<job>-<task>/<prefix>-<step>.safetensors`; \
         outputs the checkpoint's name.",
        "vars..., step",
        "vars f32, f64, i32, i64, bool; step i64 (-1: no step)",
        &[
            a("prefix", Str, "required; relative to the host's checkpoint directory"),
            a("max_to_keep", Int, "default 5"),
        ],
        NoGrad(STATE)
    ),
    op!(
        RestoreV2,
        "Restores the variables (all on one task) from a checkpoint, all or nothing; outputs its step (-1 if skipped).",
        "vars...",
        "any but string",
        &[
            a("checkpoint", Str, "a checkpoint name (`prefix-step`); else the newest save of `prefix`"),
            a("prefix", Str, "the newest save of this prefix, if `checkpoint` is absent; else the task's newest"),
            a("only_if_uninitialized", Bool, "skip (output -1) unless every variable is uninitialized; default false"),
        ],
        NoGrad(STATE)
    ),
    op!(
        CheckpointSteps,
        "The steps of the saves of `prefix` this task keeps, oldest first (saves without a step are not listed); \
         reads the task's `checkpoint` file and changes nothing.",
        "",
        "",
        &[a("prefix", Str, "required; relative to the host's checkpoint directory")],
        NoGrad(STATE)
    ),
    op!(
        WriteScalarSummary,
        "Appends a scalar to this task's TensorBoard event file under the host's log directory.",
        "step, value",
        "step i64; value f32, f64",
        &[a("tag", Str, "required")],
        NoGrad(STATE)
    ),
];

/// The catalogue entry of `op`.
pub fn def(op: OpType) -> &'static OpDef {
    // CATALOGUE is in OpType::ALL order (checked by a test).
    &CATALOGUE[op as usize]
}

/// Refuses attributes `op` does not declare, or of the wrong kind.
pub fn check_attrs(op: OpType, node: &str, attrs: &Attrs) -> Result<()> {
    let def = def(op);
    for (name, value) in &attrs.0 {
        match def.attrs.iter().find(|d| d.name == name) {
            Some(d) if d.kind.accepts(value) => {}
            Some(d) => {
                return Err(Error::invalid(format!(
                    "{} '{node}': attr '{name}' must be {}, got {value:?}",
                    op.name(),
                    d.kind.name()
                )));
            }
            None => {
                let known: Vec<&str> = def.attrs.iter().map(|d| d.name).collect();
                let takes = if known.is_empty() { "no attrs".to_string() } else { known.join(", ") };
                return Err(Error::invalid(format!(
                    "{} '{node}': unknown attr '{name}' ({} takes {takes})",
                    op.name(),
                    op.name()
                )));
            }
        }
    }
    Ok(())
}

/// `docs/OPS.md`: the catalogue as a reference page.
pub fn markdown() -> String {
    let mut out = String::from(
        "# weft's ops\n\nGenerated from the op catalogue (`host/src/graph/catalogue.rs`); a test keeps this file \
         current. Attributes an op does not list are refused when it is added.\n\n",
    );
    out.push_str("| op | inputs | dtypes | attributes | gradient |\n|---|---|---|---|---|\n");
    for d in CATALOGUE {
        let attrs: Vec<String> =
            d.attrs.iter().map(|a| format!("`{}` ({}): {}", a.name, a.kind.name(), a.doc)).collect();
        let grad = match d.gradient {
            Gradient::Rule(_) => "yes".to_string(),
            Gradient::None(why) => format!("none: {why}"),
        };
        out.push_str(&format!(
            "| `{}` — {} | {} | {} | {} | {} |\n",
            d.op.name(),
            d.summary,
            if d.inputs.is_empty() { "—" } else { d.inputs },
            d.dtypes,
            if attrs.is_empty() { "—".to_string() } else { attrs.join("<br>") },
            grad
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_lists_every_op_in_order() {
        assert_eq!(CATALOGUE.len(), OpType::ALL.len());
        for (d, op) in CATALOGUE.iter().zip(OpType::ALL) {
            assert_eq!(d.op, *op, "catalogue out of order at {}", op.name());
        }
    }

    #[test]
    fn unknown_and_mistyped_attrs_are_refused() {
        let mut attrs = Attrs::default();
        attrs.set("transpose_x", AttrValue::Bool(true));
        let err = check_attrs(OpType::MatMul, "MatMul_1", &attrs).unwrap_err().to_string();
        assert!(err.contains("unknown attr 'transpose_x'") && err.contains("transpose_a, transpose_b"), "{err}");
        let mut attrs = Attrs::default();
        attrs.set("transpose_a", AttrValue::Int(1));
        let err = check_attrs(OpType::MatMul, "m", &attrs).unwrap_err().to_string();
        assert!(err.contains("attr 'transpose_a' must be bool"), "{err}");
        let mut attrs = Attrs::default();
        attrs.set("axis", AttrValue::Ints(vec![0]));
        assert!(check_attrs(OpType::Add, "a", &attrs).unwrap_err().to_string().contains("Add takes no attrs"));
    }

    #[test]
    fn ops_md_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPS.md");
        let expected = markdown();
        let found = std::fs::read_to_string(path).unwrap_or_default();
        if found != expected {
            if std::env::var_os("WEFT_BLESS").is_some() {
                std::fs::write(path, &expected).unwrap();
            } else {
                panic!("docs/OPS.md is out of date: run `WEFT_BLESS=1 cargo test -p weft-host ops_md_is_current`");
            }
        }
    }
}
