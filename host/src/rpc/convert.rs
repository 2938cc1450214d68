//! Conversions between protobuf messages and host types, and the one
//! mapping between [`crate::Error`] and `tonic::Status`.

use bytes::Bytes;

use super::pb;
use crate::cluster::TaskId;
use crate::device::DeviceSpec;
use crate::error::{Code, Error, Result};
use crate::exec::{Delivery, DeviceStats, NodeStats, PartitionDef, Route};
use crate::graph::{AttrValue, Attrs, Node, OpType, Output};
use crate::tensor::{DType, Tensor, TensorType};

/// The status a host error becomes on the wire.
pub fn status_from_error(e: Error) -> tonic::Status {
    let code = match e.code() {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::NotFound => tonic::Code::NotFound,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::Aborted => tonic::Code::Aborted,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::Internal => tonic::Code::Internal,
    };
    tonic::Status::new(code, e.message())
}

/// The host error a status from another task becomes.
pub fn error_from_status(s: &tonic::Status) -> Error {
    let code = match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::InvalidArgument,
        tonic::Code::NotFound => Code::NotFound,
        tonic::Code::FailedPrecondition => Code::FailedPrecondition,
        tonic::Code::Unavailable => Code::Unavailable,
        tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
        tonic::Code::Aborted | tonic::Code::Cancelled => Code::Aborted,
        tonic::Code::ResourceExhausted => Code::ResourceExhausted,
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => Code::PermissionDenied,
        tonic::Code::Unimplemented => Code::Unimplemented,
        _ => Code::Internal,
    };
    Error::status(code, s.message().to_string())
}

pub fn dtype_to_pb(d: DType) -> i32 {
    (match d {
        DType::F32 => pb::DType::DtypeF32,
        DType::F64 => pb::DType::DtypeF64,
        DType::I32 => pb::DType::DtypeI32,
        DType::I64 => pb::DType::DtypeI64,
        DType::Bool => pb::DType::DtypeBool,
        DType::String => pb::DType::DtypeString,
    }) as i32
}

pub fn dtype_from_pb(d: i32) -> Result<DType> {
    Ok(match pb::DType::try_from(d) {
        Ok(pb::DType::DtypeF32) => DType::F32,
        Ok(pb::DType::DtypeF64) => DType::F64,
        Ok(pb::DType::DtypeI32) => DType::I32,
        Ok(pb::DType::DtypeI64) => DType::I64,
        Ok(pb::DType::DtypeBool) => DType::Bool,
        Ok(pb::DType::DtypeString) => DType::String,
        _ => return Err(Error::invalid(format!("unknown dtype {d} on the wire"))),
    })
}

pub fn tensor_to_pb(t: &Tensor) -> pb::Tensor {
    pb::Tensor {
        dtype: dtype_to_pb(t.dtype()),
        shape: t.shape().iter().map(|&d| d as u64).collect(),
        data: Bytes::from(t.to_le_bytes()),
    }
}

pub fn tensor_from_pb(t: &pb::Tensor) -> Result<Tensor> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    Tensor::from_le_bytes(dtype_from_pb(t.dtype)?, &shape, &t.data)
}

fn output_to_pb(o: Output) -> pb::OutputRef {
    pb::OutputRef { node: o.node, index: o.index }
}

fn output_from_pb(o: &pb::OutputRef) -> Output {
    Output { node: o.node, index: o.index }
}

fn attr_to_pb(v: &AttrValue) -> pb::AttrValue {
    use pb::attr_value::Value as V;
    let value = match v {
        AttrValue::Int(i) => V::Int(*i),
        AttrValue::Float(f) => V::Float(*f),
        AttrValue::Bool(b) => V::Bool(*b),
        AttrValue::Str(s) => V::Str(s.clone()),
        AttrValue::Ints(i) => V::Ints(pb::Ints { values: i.clone() }),
        AttrValue::DType(d) => V::Dtype(dtype_to_pb(*d)),
        AttrValue::Tensor(t) => V::Tensor(tensor_to_pb(t)),
    };
    pb::AttrValue { value: Some(value) }
}

fn attr_from_pb(v: &pb::AttrValue) -> Result<AttrValue> {
    use pb::attr_value::Value as V;
    Ok(match &v.value {
        Some(V::Int(i)) => AttrValue::Int(*i),
        Some(V::Float(f)) => AttrValue::Float(*f),
        Some(V::Bool(b)) => AttrValue::Bool(*b),
        Some(V::Str(s)) => AttrValue::Str(s.clone()),
        Some(V::Ints(i)) => AttrValue::Ints(i.values.clone()),
        Some(V::Dtype(d)) => AttrValue::DType(dtype_from_pb(*d)?),
        Some(V::Tensor(t)) => AttrValue::Tensor(tensor_from_pb(t)?),
        None => return Err(Error::invalid("attribute without a value on the wire")),
    })
}

fn type_to_pb(t: &TensorType) -> pb::TensorType {
    pb::TensorType { dtype: dtype_to_pb(t.dtype), shape: t.shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect() }
}

fn type_from_pb(t: &pb::TensorType) -> Result<TensorType> {
    Ok(TensorType { dtype: dtype_from_pb(t.dtype)?, shape: t.shape.iter().map(|&d| usize::try_from(d).ok()).collect() })
}

pub fn partition_to_pb(def: &PartitionDef) -> pb::PartitionDef {
    pb::PartitionDef {
        nodes: def
            .nodes
            .iter()
            .map(|n| pb::NodeDef {
                id: n.id,
                name: n.name.clone(),
                op: n.op.name().to_string(),
                inputs: n.inputs.iter().copied().map(output_to_pb).collect(),
                control_inputs: n.control_inputs.clone(),
                attrs: n.attrs.0.iter().map(|(k, v)| (k.clone(), attr_to_pb(v))).collect(),
                device: n.device.to_string(),
                colocate_with: n.colocate_with,
                outputs: n.outputs.iter().map(type_to_pb).collect(),
            })
            .collect(),
        inputs: def.inputs.iter().copied().map(output_to_pb).collect(),
        outputs: def.outputs.iter().copied().map(output_to_pb).collect(),
        input_types: def.input_types.iter().map(type_to_pb).collect(),
    }
}

/// `route`'s part of a step's first message.
pub fn route_to_pb(route: &Route, first: &mut pb::RunPartitionRequest) {
    let index = |&i: &usize| i as u32;
    first.delivered_inputs = route.delivered_inputs.iter().map(index).collect();
    first.unreturned_outputs = route.unreturned.iter().map(index).collect();
    first.deliveries = route
        .deliveries
        .iter()
        .map(|d| pb::Delivery { output: d.output as u32, job: d.task.job.clone(), task: d.task.index, uses: d.uses })
        .collect();
}

/// The route a step's first message gives, not yet checked (see [`Route::checked`]).
pub fn route_from_pb(first: &pb::RunPartitionRequest) -> Route {
    let index = |&i: &u32| i as usize;
    Route {
        unreturned: first.unreturned_outputs.iter().map(index).collect(),
        delivered_inputs: first.delivered_inputs.iter().map(index).collect(),
        deliveries: first
            .deliveries
            .iter()
            .map(|d| Delivery { output: d.output as usize, task: TaskId::new(&d.job, d.task), uses: d.uses })
            .collect(),
    }
}

/// A partition from a master, not yet checked (see
/// [`PartitionDef::checked`]). Every node's inputs from inside the
/// partition must come before it.
pub fn partition_from_pb(def: &pb::PartitionDef) -> Result<PartitionDef> {
    let mut nodes: Vec<Node> = Vec::with_capacity(def.nodes.len());
    let members: std::collections::HashSet<u32> = def.nodes.iter().map(|n| n.id).collect();
    let mut seen = std::collections::HashSet::new();
    for n in &def.nodes {
        let early = n.inputs.iter().map(|o| o.node).chain(n.control_inputs.iter().copied());
        if let Some(dep) = early.filter(|d| members.contains(d)).find(|d| !seen.contains(d)) {
            return Err(Error::invalid(format!("partition node {} ('{}') comes before its input {dep}", n.id, n.name)));
        }
        seen.insert(n.id);
        let mut attrs = Attrs::default();
        for (k, v) in &n.attrs {
            attrs.set(k, attr_from_pb(v)?);
        }
        nodes.push(Node {
            id: n.id,
            name: n.name.clone(),
            op: OpType::from_name(&n.op)?,
            inputs: n.inputs.iter().map(output_from_pb).collect(),
            control_inputs: n.control_inputs.clone(),
            attrs,
            device: DeviceSpec::parse(&n.device)?,
            colocate_with: n.colocate_with,
            outputs: n.outputs.iter().map(type_from_pb).collect::<Result<_>>()?,
        });
    }
    Ok(PartitionDef {
        nodes,
        inputs: def.inputs.iter().map(output_from_pb).collect(),
        input_types: def.input_types.iter().map(type_from_pb).collect::<Result<_>>()?,
        outputs: def.outputs.iter().map(output_from_pb).collect(),
    })
}

pub fn stats_to_pb(stats: Vec<DeviceStats>) -> Vec<pb::DeviceStats> {
    stats
        .into_iter()
        .map(|d| pb::DeviceStats {
            device: d.device,
            nodes: d
                .nodes
                .into_iter()
                .map(|n| pb::NodeStats {
                    node_name: n.node_name,
                    start_micros: n.start_micros,
                    duration_micros: n.duration_micros,
                })
                .collect(),
        })
        .collect()
}

pub fn stats_from_pb(stats: Vec<pb::DeviceStats>) -> Vec<DeviceStats> {
    stats
        .into_iter()
        .map(|d| DeviceStats {
            device: d.device,
            nodes: d
                .nodes
                .into_iter()
                .map(|n| NodeStats {
                    node_name: n.node_name,
                    start_micros: n.start_micros,
                    duration_micros: n.duration_micros,
                })
                .collect(),
        })
        .collect()
}
