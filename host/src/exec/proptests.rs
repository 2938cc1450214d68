//! Property tests over the add-op path (issue 9): graphs of random ops with
//! random inputs and attributes, as a hostile guest could build them. Adding
//! a node either works or fails with an error that names its op; every node
//! that was added runs (fetched or run as a target) to a value or an error,
//! and never panics a kernel.

use proptest::prelude::*;

use super::tests::{local_executor, step};
use super::{Executor, RunRequest};
use crate::graph::{AttrValue, Graph, NodeRequest, OpType, Output, catalogue};
use crate::tensor::{DType, Tensor};

const DTYPES: [DType; 6] = [DType::F32, DType::F64, DType::I32, DType::I64, DType::Bool, DType::String];

/// A small tensor, mostly f32, of any dtype; its bytes arbitrary (NaNs,
/// odd bools).
fn tensor() -> impl Strategy<Value = Tensor> {
    let dtype = prop_oneof![6 => Just(0usize), 1 => 0..DTYPES.len()];
    let shape = prop_oneof![Just(vec![]), Just(vec![2]), Just(vec![2, 2]), prop::collection::vec(0usize..4, 0..4)];
    (dtype, shape, any::<u64>()).prop_map(|(d, shape, seed)| {
        let dtype = DTYPES[d];
        let count: usize = shape.iter().product();
        match dtype.byte_width() {
            Some(w) => {
                let bytes: Vec<u8> = (0..count * w).map(|i| (seed.rotate_left(i as u32 % 64) >> 3) as u8).collect();
                Tensor::from_le_bytes(dtype, &shape, &bytes).unwrap_or_else(|_| Tensor::scalar_f32(0.0))
            }
            None => Tensor::strings(&(0..count).map(|i| format!("s{i}")).collect::<Vec<_>>()),
        }
    })
}

/// A value of every attribute kind, for an attribute to take the one of its
/// declared kind (or, sometimes, another).
#[derive(Debug, Clone)]
struct AttrValues {
    int: i64,
    float: f64,
    boolean: bool,
    ints: Vec<i64>,
    dtype: DType,
    tensor: Tensor,
    text: String,
}

fn attr_values() -> impl Strategy<Value = AttrValues> {
    (
        -3i64..6,
        prop_oneof![Just(0.0), Just(0.5), Just(-1.5), Just(f64::NAN), Just(1e30)],
        any::<bool>(),
        prop::collection::vec(-2i64..5, 0..4),
        0..DTYPES.len(),
        tensor(),
        "[a-z/_.]{0,8}",
    )
        .prop_map(|(int, float, boolean, ints, d, tensor, text)| AttrValues {
            int,
            float,
            boolean,
            ints,
            dtype: DTYPES[d],
            tensor,
            text,
        })
}

impl AttrValues {
    fn of(&self, kind: catalogue::AttrKind) -> AttrValue {
        use catalogue::AttrKind as K;
        match kind {
            K::Int => AttrValue::Int(self.int),
            K::Float => AttrValue::Float(self.float),
            K::Bool => AttrValue::Bool(self.boolean),
            K::Ints => AttrValue::Ints(self.ints.clone()),
            K::DType => AttrValue::DType(self.dtype),
            K::Tensor => AttrValue::Tensor(self.tensor.clone()),
            K::Str => AttrValue::Str(self.text.clone()),
        }
    }
}

/// One op request: which op, candidate inputs as (node pick, output
/// index), and per attribute the op declares whether to give it, and
/// whether to give it a value of another kind; plus, maybe, a misspelt one.
#[derive(Debug, Clone)]
struct OpPlan {
    op: usize,
    inputs: Vec<(usize, u32)>,
    attrs: Vec<(bool, bool)>,
    misspelt: bool,
    values: AttrValues,
}

fn op_plan() -> impl Strategy<Value = OpPlan> {
    let index = prop_oneof![9 => Just(0u32), 1 => Just(1u32)];
    (
        0..OpType::ALL.len(),
        prop::collection::vec((any::<usize>(), index), 4),
        prop::collection::vec((prop::bool::weighted(0.85), prop::bool::weighted(0.05)), 8),
        prop::bool::weighted(0.05),
        attr_values(),
    )
        .prop_map(|(op, inputs, attrs, misspelt, values)| OpPlan { op, inputs, attrs, misspelt, values })
}

/// The graph `seeds` (as constants) and `plans` make: each plan's op with
/// the fewest of its candidate inputs it takes. Every refusal must name
/// the op.
fn build(seeds: &[Tensor], plans: &[OpPlan]) -> (Graph, Vec<u32>) {
    let mut g = Graph::new();
    let mut added = Vec::new();
    for t in seeds {
        added.push(g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(t.clone()))).unwrap());
    }
    for plan in plans {
        let op = OpType::ALL[plan.op];
        let mut attrs: Vec<(&str, AttrValue)> = catalogue::def(op)
            .attrs
            .iter()
            .zip(&plan.attrs)
            .filter(|(_, (give, _))| *give)
            .map(|(d, (_, wrong))| (d.name, plan.values.of(if *wrong { catalogue::AttrKind::Str } else { d.kind })))
            .collect();
        if plan.misspelt {
            attrs.push(("not_an_attr", AttrValue::Int(1)));
        }
        for arity in 0..=plan.inputs.len() {
            let inputs =
                plan.inputs[..arity].iter().map(|&(pick, index)| Output { node: added[pick % added.len()], index });
            let req = attrs.iter().fold(NodeRequest::new(op).inputs(inputs), |r, (k, v)| r.attr(k, v.clone()));
            match g.add(req) {
                Ok(id) => {
                    added.push(id);
                    break;
                }
                Err(e) => {
                    let text = e.to_string();
                    assert!(text.contains(op.name()), "the error does not name the op {}: {text}", op.name());
                }
            }
        }
    }
    (g, added)
}

/// Runs node `id`: fetches its first output, or runs it as a target if it
/// has none.
fn fetch_or_run(e: &mut Executor, g: &Graph, id: u32) -> crate::error::Result<()> {
    let node = g.node(id)?;
    let req = if node.outputs.is_empty() {
        RunRequest { targets: vec![id], ..Default::default() }
    } else {
        RunRequest { fetches: vec![Output::of(id)], ..Default::default() }
    };
    step(e, g, &req).map(drop)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_graphs_are_refused_with_named_errors_or_run_without_a_panic(
        seeds in prop::collection::vec(tensor(), 1..4),
        plans in prop::collection::vec(op_plan(), 1..6),
    ) {
        let (g, added) = build(&seeds, &plans);
        let mut e = local_executor();
        for &id in &added[seeds.len()..] {
            // An error is fine; a panic fails the property.
            let _ = fetch_or_run(&mut e, &g, id);
        }
    }
}
