//! Property tests over what a peer sends a task (issue 9): registrations
//! (arbitrary bytes, and valid partitions with bytes flipped, cut or
//! inserted) and step inputs as frames. Nothing a peer sends panics the
//! task: a registration is refused with a named error or is a partition
//! that checked out, and runs on inputs of its types to a value or an
//! error; frames are read into tensors or refused, never announcing more
//! than the stream may carry.

use std::collections::HashMap;

use proptest::prelude::*;
use prost::Message;

use super::convert::partition_to_pb;
use super::frames::FrameReader;
use super::pb;
use super::service::decode_registration;
use crate::exec::{Device, PartitionDef, run_partition};
use crate::graph::{AttrValue, Graph, NodeRequest, OpType, Output};
use crate::tensor::{DType, Tensor, TensorType};

/// `relu(x @ w + b)` with `x` an f32[2, 3] input: constants, a matmul,
/// broadcasting and an activation, as a master would send it.
fn valid_partition() -> Vec<u8> {
    let mut g = Graph::new();
    let x = g
        .add(
            NodeRequest::new(OpType::Placeholder)
                .attr("dtype", AttrValue::DType(DType::F32))
                .attr("shape", AttrValue::Ints(vec![2, 3])),
        )
        .unwrap();
    let constant = |g: &mut Graph, shape: &[usize]| {
        let t = Tensor::from_f32(shape, vec![0.5; shape.iter().product()]).unwrap();
        g.add(NodeRequest::new(OpType::Const).attr("value", AttrValue::Tensor(t))).unwrap()
    };
    let w = constant(&mut g, &[3, 4]);
    let b = constant(&mut g, &[4]);
    let xw = g.add(NodeRequest::new(OpType::MatMul).inputs([Output::of(x), Output::of(w)])).unwrap();
    let sum = g.add(NodeRequest::new(OpType::Add).inputs([Output::of(xw), Output::of(b)])).unwrap();
    let relu = g.add(NodeRequest::new(OpType::Relu).inputs([Output::of(sum)])).unwrap();
    let def = PartitionDef {
        nodes: [w, b, xw, sum, relu].iter().map(|&id| g.node(id).unwrap().clone()).collect(),
        inputs: vec![Output::of(x)],
        input_types: vec![TensorType::known(DType::F32, &[2, 3])],
        outputs: vec![Output::of(relu)],
    };
    partition_to_pb(&def).encode_to_vec()
}

/// Runs a checked partition on zeros of its input types.
fn run_on_zeros(def: &PartitionDef) {
    let inputs: HashMap<Output, Tensor> = def
        .inputs
        .iter()
        .zip(&def.input_types)
        .filter_map(|(o, ty)| {
            let shape: Option<Vec<usize>> = ty.shape.iter().map(|d| d.map(|d| d.min(4))).collect();
            shape.map(|s| (*o, Tensor::zeros(ty.dtype, &s)))
        })
        .collect();
    if inputs.len() != def.inputs.len() {
        return;
    }
    let device = std::sync::Arc::new(Device::new(crate::cluster::TaskId::new("fuzz", 0)));
    let node_device = vec![0; def.nodes.len()];
    let _ = run_partition(def, &[device], &node_device, &inputs, &mut HashMap::new(), None, None);
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Damage::Flip(at, x)),
        any::<usize>().prop_map(Damage::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(at, b)| Damage::Insert(at, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_register_a_partition_by_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok((def, _)) = decode_registration(1, bytes.into(), None, &mut Default::default()) {
            run_on_zeros(&def);
        }
    }

    #[test]
    fn damaged_partitions_are_refused_naming_the_partition_or_run(damages in prop::collection::vec(damage(), 1..4)) {
        let mut bytes = valid_partition();
        for d in damages {
            let n = bytes.len();
            match d {
                Damage::Flip(at, x) => bytes[at % n] ^= x,
                Damage::Cut(at) => bytes.truncate(at % n),
                Damage::Insert(at, b) => {
                    let at = at % n;
                    bytes.splice(at..at, b);
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        match decode_registration(7, bytes.into(), None, &mut Default::default()) {
            Ok((def, _)) => run_on_zeros(&def),
            Err(s) => prop_assert!(s.message().starts_with("partition 7: ") || s.message().contains("partition 7 "),
                "{}", s.message()),
        }
    }

    #[test]
    fn frames_are_read_or_refused_within_what_the_stream_may_carry(
        frames in prop::collection::vec(
            (prop::option::of((0i32..8, prop::collection::vec(0u64..6, 0..4), 0u64..64)), prop::collection::vec(any::<u8>(), 0..40)),
            0..8,
        ),
    ) {
        let mut reader = FrameReader::new(64);
        let mut announced = 0u64;
        let mut broken = false;
        for (meta, data) in frames {
            let meta = meta.map(|(dtype, shape, byte_length)| {
                announced += byte_length;
                pb::TensorMeta { dtype, shape, byte_length }
            });
            if reader.push(meta, &data).is_err() {
                broken = true;
                break;
            }
        }
        if !broken && let Ok(tensors) = reader.finish() {
            let bytes: usize = tensors.iter().map(Tensor::byte_length).sum();
            prop_assert!(bytes as u64 <= announced.min(64), "{bytes} bytes read, {announced} announced");
        }
    }
}
