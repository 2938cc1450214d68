//! Conversions between the generated WIT types and the host's own types,
//! and the one mapping from [`crate::Error`] to the WIT `error` variant.

use super::bindings::{device as wd, graph as wg, types as wt};
use crate::device::DeviceSpec;
use crate::error::{Code, Error, Result};
use crate::graph::{AttrValue, Output};
use crate::tensor::{DType, Tensor, TensorType};

impl From<wt::Dtype> for DType {
    fn from(d: wt::Dtype) -> Self {
        match d {
            wt::Dtype::F32 => DType::F32,
            wt::Dtype::F64 => DType::F64,
            wt::Dtype::I32 => DType::I32,
            wt::Dtype::I64 => DType::I64,
            wt::Dtype::Bool => DType::Bool,
            wt::Dtype::String => DType::String,
        }
    }
}

impl From<DType> for wt::Dtype {
    fn from(d: DType) -> Self {
        match d {
            DType::F32 => wt::Dtype::F32,
            DType::F64 => wt::Dtype::F64,
            DType::I32 => wt::Dtype::I32,
            DType::I64 => wt::Dtype::I64,
            DType::Bool => wt::Dtype::Bool,
            DType::String => wt::Dtype::String,
        }
    }
}

/// A guest tensor into a host tensor; malformed ones are `invalid-argument`.
pub fn tensor_from_wit(t: &wt::Tensor) -> Result<Tensor> {
    let shape = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| Error::invalid(format!("tensor dimension {d} is too large"))))
        .collect::<Result<Vec<_>>>()?;
    Tensor::from_le_bytes(t.dtype.into(), &shape, &t.data)
}

/// A host tensor into the WIT form, sharing its memory: lowering it into a
/// guest is the one copy.
pub fn tensor_to_wit(t: &Tensor) -> wt::Tensor {
    wt::Tensor {
        dtype: t.dtype().into(),
        shape: t.shape().iter().map(|&d| d as u64).collect(),
        data: t.to_shared_bytes(),
    }
}

/// The WIT `error` for a host error: same code, same message.
pub fn error_to_wit(e: Error) -> wt::Error {
    let m = e.message();
    match e.code() {
        Code::InvalidArgument => wt::Error::InvalidArgument(m),
        Code::NotFound => wt::Error::NotFound(m),
        Code::FailedPrecondition => wt::Error::FailedPrecondition(m),
        Code::Unavailable => wt::Error::Unavailable(m),
        Code::DeadlineExceeded => wt::Error::DeadlineExceeded(m),
        Code::Aborted => wt::Error::Aborted(m),
        Code::ResourceExhausted => wt::Error::ResourceExhausted(m),
        Code::PermissionDenied => wt::Error::PermissionDenied(m),
        Code::Unimplemented => wt::Error::Unimplemented(m),
        Code::Internal => wt::Error::Internal(m),
    }
}

/// A program's error, as its failure is reported: `code: message`.
pub fn describe_wit_error(e: &wt::Error) -> String {
    let (code, m) = match e {
        wt::Error::InvalidArgument(m) => (Code::InvalidArgument, m),
        wt::Error::NotFound(m) => (Code::NotFound, m),
        wt::Error::FailedPrecondition(m) => (Code::FailedPrecondition, m),
        wt::Error::Unavailable(m) => (Code::Unavailable, m),
        wt::Error::DeadlineExceeded(m) => (Code::DeadlineExceeded, m),
        wt::Error::Aborted(m) => (Code::Aborted, m),
        wt::Error::ResourceExhausted(m) => (Code::ResourceExhausted, m),
        wt::Error::PermissionDenied(m) => (Code::PermissionDenied, m),
        wt::Error::Unimplemented(m) => (Code::Unimplemented, m),
        wt::Error::Internal(m) => (Code::Internal, m),
    };
    format!("{code}: {m}")
}

/// Host results into WIT results.
pub fn wit<T>(r: Result<T>) -> Result<T, wt::Error> {
    r.map_err(error_to_wit)
}

impl From<wg::Output> for Output {
    fn from(o: wg::Output) -> Self {
        Output { node: o.node, index: o.index }
    }
}

impl From<Output> for wg::Output {
    fn from(o: Output) -> Self {
        wg::Output { node: o.node, index: o.index }
    }
}

/// A guest attribute value into the host's.
pub fn attr_from_wit(v: wg::AttrValue) -> Result<AttrValue> {
    Ok(match v {
        wg::AttrValue::Int(i) => AttrValue::Int(i),
        wg::AttrValue::Float(f) => AttrValue::Float(f),
        wg::AttrValue::Boolean(b) => AttrValue::Bool(b),
        wg::AttrValue::Text(s) => AttrValue::Str(s),
        wg::AttrValue::Ints(i) => AttrValue::Ints(i),
        wg::AttrValue::ElementType(d) => AttrValue::DType(d.into()),
        wg::AttrValue::Value(t) => AttrValue::Tensor(tensor_from_wit(&t)?),
    })
}

/// A static type into the WIT form (-1 for unknown dimensions).
pub fn output_type_to_wit(t: &TensorType) -> wg::OutputType {
    wg::OutputType { dtype: t.dtype.into(), shape: t.shape.iter().map(|d| d.map_or(-1, |d| d as i64)).collect() }
}

impl From<wd::DeviceSpec> for DeviceSpec {
    fn from(d: wd::DeviceSpec) -> Self {
        DeviceSpec {
            job: d.job,
            replica: d.replica,
            task: d.task,
            device_type: d.device_type.map(|t| t.to_ascii_uppercase()),
            device_index: d.device_index,
        }
    }
}

impl From<DeviceSpec> for wd::DeviceSpec {
    fn from(d: DeviceSpec) -> Self {
        wd::DeviceSpec {
            job: d.job,
            replica: d.replica,
            task: d.task,
            device_type: d.device_type,
            device_index: d.device_index,
        }
    }
}
